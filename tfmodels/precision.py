"""Which numeric policy and XLA setting a training run uses: the hardware probe and the
`auto` rules behind `--mixed_precision=auto` and `--jit_compile=auto`.

    choice = resolve_precision("auto", "auto", strategy=strategy)
    print(choice.describe())   # precision: float32, jit_compile off (auto: ... has no AMX-BF16)
    keras.mixed_precision.set_global_policy(choice.policy); TrainStep(..., choice.jit_compile)

The `auto` rules (`choose_precision`; explicit values always pass through unchanged):

  TPU                      mixed_bfloat16, XLA on (TPUs compile everything anyway)
  GPU, compute cap. >= 8.0 mixed_bfloat16, XLA on (Ampere+: bf16 tensor cores, no loss scale)
  GPU, 7.x or unknown      mixed_float16, XLA on (tensor cores; the TF mixed-precision default)
  GPU, < 7.0               float32, XLA on (no tensor cores: fp16 only adds casts)
  CPU with AMX-BF16        mixed_bfloat16, XLA off: oneDNN runs bf16 matmuls on AMX, XLA's CPU
                           backend does not (issue 20, TF 2.21: 2048^3 bf16 matmul 564 GFLOP/s
                           via oneDNN, 129 under XLA; MiniLM step 1.89 s vs 2.92 s float32).
                           With XLA forced on, float32 (2.48 s) beats bf16 + XLA (2.76 s).
  any other CPU            float32, XLA off (no bf16 matrix unit; AVX512-BF16 alone has not
                           been measured to pay off here)

The CPU parser (`cpu_model_and_flags`, `cpu_description`) is also what every benchmark prints
at the top of its table (tools/machine.py re-exports it).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Tuple, Union

AUTO = "auto"
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
# What `mixed_precision` settings accept: '' is float32 (the historical default).
MIXED_PRECISION_CHOICES = ("",) + POLICIES + (AUTO,)
# ISA flags that decide training speed on a CPU, in the order benchmarks print them.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
UNKNOWN_CPU = "unknown CPU"


# ---- the CPU ------------------------------------------------------------------------------------

def parse_cpuinfo(text: str) -> Tuple[str, FrozenSet[str]]:
    """(model name, all flags) of the first processor in /proc/cpuinfo text."""
    model, flags = UNKNOWN_CPU, frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == UNKNOWN_CPU:
            model = value.strip()
        elif key == "flags":
            flags = frozenset(value.split())
            break
    return model, flags


def read_cpuinfo(path: str = "/proc/cpuinfo") -> Tuple[str, FrozenSet[str]]:
    """`parse_cpuinfo` of this machine ("unknown CPU" and no flags where there is no file)."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return UNKNOWN_CPU, frozenset()


def cpu_model_and_flags(path: str = "/proc/cpuinfo") -> Tuple[str, List[str]]:
    """(model name, [ISA_FLAGS present]) of this machine."""
    model, flags = read_cpuinfo(path)
    return model, [name for name in ISA_FLAGS if name in flags]


def cpu_description(path: str = "/proc/cpuinfo") -> str:
    """"<model>, <n> cores; flags: avx2 avx512f (no avx512_bf16 amx_tile amx_bf16)"."""
    model, present = cpu_model_and_flags(path)
    missing = [name for name in ISA_FLAGS if name not in present]
    return (f"{model}, {os.cpu_count()} cores; flags: {' '.join(present) or 'none'}"
            + (f" (no {' '.join(missing)})" if missing else ""))


# ---- the hardware -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: Optional[Tuple[int, int]] = None  # None: the driver did not say


@dataclasses.dataclass(frozen=True)
class Hardware:
    """What the auto rules look at. Tests build it directly; `probe_hardware` reads it."""
    cpu_model: str = UNKNOWN_CPU
    cpu_flags: FrozenSet[str] = frozenset()
    gpus: Tuple[Gpu, ...] = ()
    tpu: bool = False

    @property
    def has_amx_bf16(self) -> bool:
        return "amx_bf16" in self.cpu_flags

    def summary(self) -> str:
        if self.tpu:
            return "TPU"
        if self.gpus:
            return ", ".join(_gpu_text(gpu) for gpu in self.gpus)
        present = [name for name in ISA_FLAGS if name in self.cpu_flags]
        return f"{self.cpu_model} ({' '.join(present) or 'no AVX2/AVX-512/AMX'})"


def _gpu_text(gpu: Gpu) -> str:
    if gpu.compute_capability is None:
        return f"GPU {gpu.name} (compute capability unknown)"
    return f"GPU {gpu.name} (compute capability {gpu.compute_capability[0]}." \
           f"{gpu.compute_capability[1]})"


def probe_hardware(strategy: Any = None, cpuinfo_path: str = "/proc/cpuinfo") -> Hardware:
    """This machine: the CPU from /proc/cpuinfo, GPUs and TPUs from tf.config.

    A TPU is only listed once its system is initialised (what TPUStrategy does), so a
    TPUStrategy passed as `strategy` counts as a TPU too.
    """
    import tensorflow as tf  # here, not at import: tools print cpu_description without TF

    model, flags = read_cpuinfo(cpuinfo_path)
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(device)
        except (ValueError, RuntimeError):
            details = {}
        capability = details.get("compute_capability")
        gpus.append(Gpu(details.get("device_name", device.name),
                        tuple(capability) if capability else None))
    tpu = bool(tf.config.list_physical_devices("TPU")) or isinstance(
        strategy, tf.distribute.TPUStrategy)
    return Hardware(model, flags, tuple(gpus), tpu)


# ---- the choice ---------------------------------------------------------------------------------

class PrecisionChoice(NamedTuple):
    policy: str        # a Keras dtype policy name: float32 | mixed_bfloat16 | mixed_float16
    jit_compile: bool


def check_settings(mixed_precision: str, jit_compile: Union[bool, str]) -> List[str]:
    """Problems with the two settings, for configs' validation (empty: fine)."""
    problems = []
    if mixed_precision not in MIXED_PRECISION_CHOICES:
        problems.append(f"unknown mixed_precision {mixed_precision!r} (expected one of "
                        f"{', '.join(repr(c) for c in MIXED_PRECISION_CHOICES)})")
    if not (isinstance(jit_compile, bool) or jit_compile == AUTO):
        problems.append(f"jit_compile must be True, False or 'auto', got {jit_compile!r}")
    return problems


def _decide(mixed_precision: str, jit_compile: Union[bool, str],
            hardware: Hardware) -> Tuple[str, bool, str]:
    """(policy, jit_compile, why auto chose them; '' when nothing was auto)."""
    problems = check_settings(mixed_precision, jit_compile)
    if problems:
        raise ValueError("; ".join(problems))
    auto_policy, auto_jit = mixed_precision == AUTO, jit_compile == AUTO
    if not (auto_policy or auto_jit):
        return mixed_precision or "float32", bool(jit_compile), ""
    if hardware.tpu:
        policy, jit, why = "mixed_bfloat16", True, "TPU"
    elif hardware.gpus:
        capabilities = [gpu.compute_capability for gpu in hardware.gpus]
        slowest = None if None in capabilities else min(capabilities)
        if slowest is not None and slowest >= (8, 0):
            policy, why = "mixed_bfloat16", "has bfloat16 tensor cores"
        elif slowest is None or slowest >= (7, 0):
            policy, why = "mixed_float16", "has float16 tensor cores"
        else:
            policy, why = "float32", "has no tensor cores"
        jit, why = True, f"{hardware.summary()} {why}"
    elif hardware.has_amx_bf16:
        # XLA's CPU backend does not use AMX: bf16 only pays off through oneDNN, without XLA.
        jit = False if auto_jit else bool(jit_compile)
        if jit:
            policy, why = "float32", (f"{hardware.cpu_model} has AMX-BF16, but XLA on CPU "
                                      f"does not use it (bf16 + XLA is slower than float32 + XLA)")
        else:
            policy, why = "mixed_bfloat16", (f"{hardware.cpu_model} has AMX-BF16, used by "
                                             f"oneDNN without XLA")
    else:
        policy, jit, why = "float32", False, f"{hardware.cpu_model} has no AMX-BF16"
    if not auto_policy:
        policy, why = mixed_precision or "float32", why + "; mixed_precision as requested"
    if not auto_jit:
        jit, why = bool(jit_compile), why + "; jit_compile as requested"
    return policy, jit, f"auto: {why}"


def choose_precision(mixed_precision: str = AUTO, jit_compile: Union[bool, str] = AUTO,
                     hardware: Optional[Hardware] = None) -> PrecisionChoice:
    """The Keras policy and XLA setting for these settings on `hardware` (probed if None).
    Explicit settings pass through unchanged ('' means float32)."""
    policy, jit, _ = _decide(mixed_precision, jit_compile, hardware or probe_hardware())
    return PrecisionChoice(policy, jit)


@dataclasses.dataclass(frozen=True)
class ResolvedPrecision:
    """A run's choice with what was asked for and why: printed at start, saved with results."""
    policy: str
    jit_compile: bool
    requested_mixed_precision: str
    requested_jit_compile: Union[bool, str]
    reason: str        # '' when both settings were explicit
    hardware: str      # Hardware.summary()

    def describe(self) -> str:
        return (f"precision: {self.policy}, jit_compile {'on' if self.jit_compile else 'off'} "
                f"({self.reason or 'as requested'})")

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_precision(mixed_precision: str, jit_compile: Union[bool, str],
                      hardware: Optional[Hardware] = None,
                      strategy: Any = None) -> ResolvedPrecision:
    """`choose_precision` with its reason, for a run to print and record."""
    hardware = hardware or probe_hardware(strategy)
    policy, jit, reason = _decide(mixed_precision, jit_compile, hardware)
    return ResolvedPrecision(policy, jit, mixed_precision, jit_compile, reason,
                             hardware.summary())
