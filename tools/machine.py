"""What a benchmark ran on: CPU model, cores and the matrix/vector ISA flags that decide its
speed (AVX-512, AVX512-BF16, AMX), printed at the top of every benchmark table. The parser
lives in tfmodels.precision, whose `auto` policy choice reads the same flags."""
from tfmodels.precision import ISA_FLAGS, cpu_description, cpu_model_and_flags

__all__ = ["ISA_FLAGS", "cpu_description", "cpu_model_and_flags"]
