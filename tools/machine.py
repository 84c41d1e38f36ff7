"""What a benchmark ran on: CPU model, cores and the matrix/vector ISA flags that decide its
speed (AVX-512, AVX512-BF16, AMX), printed at the top of every benchmark table."""
from __future__ import annotations

import os
from typing import List

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_model_and_flags() -> tuple:
    """(model name, [ISA flags present]) from /proc/cpuinfo ("unknown CPU", [] elsewhere)."""
    model, present = "unknown CPU", []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    present = [name for name in ISA_FLAGS if name in flags]
                    break
    except OSError:
        pass
    return model, present


def cpu_description() -> str:
    model, present = cpu_model_and_flags()
    missing: List[str] = [name for name in ISA_FLAGS if name not in present]
    return (f"{model}, {os.cpu_count()} cores; flags: {' '.join(present) or 'none'}"
            + (f" (no {' '.join(missing)})" if missing else ""))
