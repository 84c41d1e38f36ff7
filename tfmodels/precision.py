"""Which numeric policy and XLA setting a training run uses: the hardware probe and the
`auto` rules behind `--mixed_precision=auto` and `--jit_compile=auto`.

    choice = resolve_precision("auto", "auto", strategy=strategy)
    print(choice.describe())   # precision: float32, jit_compile off (auto: ... has no AMX-BF16)
    model = build(..., dtype=choice.policy); TrainStep(..., jit_compile=choice.jit_compile)

The `auto` rules (`choose_precision`; explicit values always pass through unchanged):

  TPU                      mixed_bfloat16, XLA on (TPUs compile everything anyway)
  GPU, compute cap. >= 8.0 mixed_bfloat16, XLA on (Ampere+: bf16 tensor cores, no loss scale)
  GPU, 7.x or unknown      mixed_float16, XLA on (tensor cores; the TF mixed-precision default)
  GPU, < 7.0               float32, XLA on (no tensor cores: fp16 only adds casts)
  CPU                      MEASURED (issue 44): `calibrate_cpu` times a transformer-sized
                           matmul (CALIBRATION_SHAPE, 1024 x 768 x 768) in float32 and
                           bfloat16, through oneDNN and, with --jit_compile=auto, under XLA;
                           interleaved, best call of each, in GFLOP per CPU-second (robust to
                           other load). The run leaves float32 without XLA only for an arm
                           whose rate is >= BF16_MARGIN (1.3x) float32's, the fastest such
                           one. So AMX and AVX512-BF16 CPUs (Sapphire Rapids, Cooper Lake, AMD
                           Zen 4/5) get mixed_bfloat16 through oneDNN; a CPU without bf16
                           instructions keeps float32 (emulated bf16 is several times slower).
                           The rates are cached per CPU model + flags + TF version + cores in
                           `calibration_cache_path()`, printed and recorded.
  CPU, not measured        (rates unavailable, e.g. a Hardware built by hand) the flag rule of
                           issue 20: mixed_bfloat16 without XLA on AMX-BF16, else float32.

The CPU parser (`cpu_model_and_flags`, `cpu_description`) is also what every benchmark prints
at the top of its table (tools/machine.py re-exports it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import (Any, Callable, Dict, FrozenSet, List, NamedTuple, Optional, Tuple,
                    Union)

AUTO = "auto"
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
# What `mixed_precision` settings accept: '' is float32 (the historical default).
MIXED_PRECISION_CHOICES = ("",) + POLICIES + (AUTO,)
# The binaries' --mixed_precision (pretraining and fine-tuning default to auto: issue 44).
MIXED_PRECISION_HELP = (
    "auto: decided by measuring (TPUs bf16, GPUs fp16/bf16; CPUs: mixed_bfloat16 only where "
    "a measured bf16 matmul is >= 1.3x float32's, cached per CPU and TF version: "
    "tfmodels.precision); float32 (or '') keeps float32; mixed_bfloat16 / mixed_float16 force "
    "a policy.")
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


# Environment variables that change which CPU kernels TensorFlow runs, so a measurement under
# one setting says nothing of another: ONEDNN_MAX_CPU_ISA caps oneDNN's instruction set (e.g.
# AVX512_CORE runs this CPU as an AVX-512 CPU without bf16 instructions would);
# TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off.
KERNEL_ENVIRONMENT = ("ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS")


def kernel_environment() -> Dict[str, str]:
    """The KERNEL_ENVIRONMENT variables set in this process."""
    return {name: os.environ[name] for name in KERNEL_ENVIRONMENT if os.environ.get(name)}


def cpu_description(path: str = "/proc/cpuinfo") -> str:
    """"<model>, <n> cores; flags: avx2 avx512f (no avx512_bf16 amx_tile amx_bf16)", plus any
    KERNEL_ENVIRONMENT setting (a benchmark under an ISA cap must say so)."""
    model, present = cpu_model_and_flags(path)
    missing = [name for name in ISA_FLAGS if name not in present]
    environment = " ".join(f"{k}={v}" for k, v in kernel_environment().items())
    return (f"{model}, {os.cpu_count()} cores; flags: {' '.join(present) or 'none'}"
            + (f" (no {' '.join(missing)})" if missing else "")
            + (f"; {environment}" if environment else ""))


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
    # The CPU's measured matmul rates (`calibrate_cpu`); None: not measured (flag rule).
    rates: Optional["MatmulRates"] = None

    @property
    def has_amx_bf16(self) -> bool:
        return "amx_bf16" in self.cpu_flags

    @property
    def cpu_only(self) -> bool:
        return not (self.tpu or self.gpus)

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


# ---- the CPU calibration (issue 44) -------------------------------------------------------------

# A transformer layer's matmul on a short fine-tuning batch (rows = batch x tokens, hidden x
# hidden): bert_base's attention projections, the size the speed-ups must hold at.
CALIBRATION_SHAPE = (1024, 768, 768)
# bf16 (or XLA) must be at least this much faster than float32 without XLA to be chosen: the
# margin covers what a matmul does not see (casts, bf16 elementwise ops, XLA compile time).
BF16_MARGIN = 1.3
# One arm = (dtype, jit_compile).
Arm = Tuple[str, bool]
PLAIN_ARMS: Tuple[Arm, ...] = (("float32", False), ("bfloat16", False))
XLA_ARMS: Tuple[Arm, ...] = (("float32", True), ("bfloat16", True))
CACHE_FILE = "precision_calibration.json"
CACHE_VERSION = 2  # 2: rates per CPU-second (1: wall clock)


def arm_name(arm: Arm) -> str:
    return f"{arm[0]}{'+xla' if arm[1] else ''}"


@dataclasses.dataclass(frozen=True)
class MatmulRates:
    """GFLOP per CPU-second of CALIBRATION_SHAPE's matmul per arm ("float32", "bfloat16",
    "float32+xla", "bfloat16+xla"), how long measuring took and where the figures came from."""
    gflops: Dict[str, float]      # per CPU-second: what the choice is made on
    shape: Tuple[int, int, int] = CALIBRATION_SHAPE
    seconds: float = 0.0          # the measurement's cost (0 when given or cached)
    source: str = "given"         # measured | cache | given (tests)
    key: str = ""                 # the cache key: CPU model, flags, TF version, cores
    wall_gflops: Optional[Dict[str, float]] = None  # wall-clock GFLOP/s, for the record

    def rate(self, arm: Arm) -> Optional[float]:
        return self.gflops.get(arm_name(arm))

    def has(self, arms) -> bool:
        return all(self.rate(arm) for arm in arms)

    def summary(self) -> str:
        base = self.rate(("float32", False))
        parts = []
        order = [arm_name(arm) for arm in PLAIN_ARMS + XLA_ARMS]
        for name, value in sorted(self.gflops.items(), key=lambda kv: (
                order.index(kv[0]) if kv[0] in order else len(order), kv[0])):
            ratio = f" ({value / base:.2f}x)" if base and name != "float32" else ""
            parts.append(f"{name} {value:.0f}{ratio}")
        where = {"measured": f"measured in {self.seconds:.2f} s", "cache": "cached"}.get(
            self.source, self.source)
        m, k, n = self.shape
        return f"matmul {m}x{k}x{n} GFLOP per CPU-s: {', '.join(parts)}; {where}"

    def as_dict(self) -> Dict[str, Any]:
        return {"gflops_per_cpu_second": dict(self.gflops), "shape": list(self.shape),
                "seconds": self.seconds, "source": self.source, "key": self.key,
                "wall_gflops": dict(self.wall_gflops or {})}


def measure_matmul_rates(arms=PLAIN_ARMS, shape=CALIBRATION_SHAPE, min_rounds: int = 3,
                         max_rounds: int = 6, budget_seconds: float = 0.25) -> Dict[str, float]:
    """GFLOP per CPU-second of a `shape` matmul in each arm ({arm name: rate}), plus the wall
    clock GFLOP/s as "wall:<arm name>" (printed, not decided on). Calls are interleaved
    (A B A B ...) and each arm's fastest call counts. The rate is per CPU-second (this
    process's CPU time, all threads) because other processes on the machine inflate wall
    time by whatever they happen to run, but not the CPU time a call itself needs: on 2
    cores at load 11, the bf16 / float32 ratio measured 0.75, 1.50 and 0.99 by wall clock
    and 1.65, 1.59, 1.69 by CPU time (issue 44). Rounds continue past `min_rounds` until
    `budget_seconds` of timed calls or `max_rounds`. Touches no global state: its own
    tensors and tf.functions, on the default device."""
    import tensorflow as tf

    m, k, n = shape
    rng = tf.random.Generator.from_seed(0)
    a32, b32 = rng.normal((m, k)), rng.normal((k, n))
    calls = {}
    for dtype, jit in arms:
        a, b = tf.cast(a32, dtype), tf.cast(b32, dtype)
        fn = tf.function(tf.linalg.matmul, jit_compile=jit)
        fn(a, b).numpy()  # trace (and compile) outside the timing
        calls[(dtype, jit)] = (fn, a, b)
    best_cpu = {arm: float("inf") for arm in calls}
    best_wall = dict(best_cpu)
    start = time.perf_counter()
    for round_ in range(max_rounds):
        if round_ >= min_rounds and time.perf_counter() - start > budget_seconds:
            break
        for arm, (fn, a, b) in calls.items():
            began, began_cpu = time.perf_counter(), time.process_time()
            fn(a, b).numpy()
            best_cpu[arm] = min(best_cpu[arm], time.process_time() - began_cpu)
            best_wall[arm] = min(best_wall[arm], time.perf_counter() - began)
    flop = 2.0 * m * k * n / 1e9
    rates = {arm_name(arm): flop / max(seconds, 1e-9) for arm, seconds in best_cpu.items()}
    rates.update({f"wall:{arm_name(arm)}": flop / max(seconds, 1e-9)
                  for arm, seconds in best_wall.items()})
    return rates


def calibration_cache_path() -> str:
    """$BERT_GPT_TF_HOME/precision_calibration.json, else ~/.cache/bert_gpt_tf/..."""
    home = os.environ.get("BERT_GPT_TF_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "bert_gpt_tf")
    return os.path.join(home, CACHE_FILE)


def calibration_key(cpu_model: str, cpu_flags, tf_version: Optional[str] = None,
                    cores: Optional[int] = None) -> str:
    """What the rates depend on: the CPU (model and every flag, hashed), TF's version (its
    oneDNN and XLA), the core count and the KERNEL_ENVIRONMENT settings."""
    if tf_version is None:
        import tensorflow as tf
        tf_version = tf.__version__
    flags_hash = hashlib.sha1(" ".join(sorted(cpu_flags)).encode()).hexdigest()[:12]
    environment = "".join(f" | {k}={v}" for k, v in kernel_environment().items())
    return (f"{cpu_model} | flags {flags_hash} | tf {tf_version} | "
            f"{cores if cores is not None else os.cpu_count()} cores{environment}")


def _read_cache(path: str) -> Dict[str, Any]:
    """The cache's entries; {} when absent or unreadable (a corrupt file is then rewritten)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(
            data.get("entries"), dict):
        return {}
    return data["entries"]


def _cached_rates(entry: Any, key: str) -> Optional[MatmulRates]:
    try:
        gflops = {str(k): float(v) for k, v in entry["gflops"].items()}
        shape = tuple(int(x) for x in entry["shape"])
        wall = {str(k): float(v) for k, v in (entry.get("wall_gflops") or {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if shape != CALIBRATION_SHAPE or not all(v > 0 for v in gflops.values()):
        return None
    return MatmulRates(gflops, shape, 0.0, "cache", key, wall)


def _write_cache(path: str, key: str, rates: MatmulRates) -> None:
    from tfmodels.files import atomic_write_text
    entries = _read_cache(path)
    entries[key] = {"gflops": rates.gflops, "wall_gflops": rates.wall_gflops or {},
                    "shape": list(rates.shape),
                    "seconds": rates.seconds, "measured_at": time.strftime(
                        "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        atomic_write_text(path, json.dumps({"version": CACHE_VERSION, "entries": entries},
                                           indent=2, sort_keys=True) + "\n")
    except OSError:
        pass  # a read-only home: measure again next time


def calibrate_cpu(hardware: Hardware, xla: bool = True, cache_path: Optional[str] = None,
                  measure: Optional[Callable[..., Dict[str, float]]] = None,
                  tf_version: Optional[str] = None) -> MatmulRates:
    """This CPU's matmul rates for the float32 / bfloat16 arms (and their XLA arms when
    `xla`): from the cache when it holds them for this key, else measured and cached."""
    key = calibration_key(hardware.cpu_model, hardware.cpu_flags, tf_version)
    path = cache_path or calibration_cache_path()
    arms = PLAIN_ARMS + (XLA_ARMS if xla else ())
    cached = _cached_rates(_read_cache(path).get(key), key)
    if cached is not None and cached.has(arms):
        return cached
    start = time.perf_counter()
    measured = (measure or measure_matmul_rates)(arms)
    gflops = {k: v for k, v in measured.items() if not k.startswith("wall:")}
    wall = {k[len("wall:"):]: v for k, v in measured.items() if k.startswith("wall:")}
    rates = MatmulRates(gflops, CALIBRATION_SHAPE, time.perf_counter() - start, "measured", key,
                        wall)
    _write_cache(path, key, rates)
    return rates


def _pick_by_rates(rates: MatmulRates, policy_arms, jit_arms) -> Tuple[Optional[Arm], str]:
    """The arm to run: the baseline (float32 or the requested dtype, without XLA unless XLA
    was requested) unless another allowed arm is >= BF16_MARGIN times its rate; then the
    fastest such arm. None when the rates lack the baseline."""
    baseline = (policy_arms[0], jit_arms[0])
    base_rate = rates.rate(baseline)
    if not base_rate:
        return None, ""
    best, best_rate = baseline, base_rate
    for dtype in policy_arms:
        for jit in jit_arms:
            rate = rates.rate((dtype, jit))
            if rate and rate >= BF16_MARGIN * base_rate and rate > best_rate:
                best, best_rate = (dtype, jit), rate
    if best == baseline:
        why = f"nothing measured >= {BF16_MARGIN}x {arm_name(baseline)}"
    else:
        why = f"{arm_name(best)} measured {best_rate / base_rate:.2f}x {arm_name(baseline)}"
    return best, why


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
    elif hardware.rates is not None and _measured_choice(mixed_precision, jit_compile,
                                                         hardware) is not None:
        policy, jit, why = _measured_choice(mixed_precision, jit_compile, hardware)
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


_POLICY_DTYPE = {"": "float32", "float32": "float32", "mixed_bfloat16": "bfloat16"}


def _measured_choice(mixed_precision: str, jit_compile: Union[bool, str],
                     hardware: Hardware) -> Optional[Tuple[str, bool, str]]:
    """The CPU rule by measurement: (policy, jit, why), or None when the rates cannot decide
    (a requested policy they did not time, e.g. mixed_float16)."""
    if mixed_precision == AUTO:
        dtypes = ("float32", "bfloat16")
    elif mixed_precision in _POLICY_DTYPE:
        dtypes = (_POLICY_DTYPE[mixed_precision],)
    else:
        return None
    jits = (False, True) if jit_compile == AUTO else (bool(jit_compile),)
    arm, why = _pick_by_rates(hardware.rates, dtypes, jits)
    if arm is None:
        return None
    policy = "mixed_bfloat16" if arm[0] == "bfloat16" else "float32"
    return policy, arm[1], f"{hardware.cpu_model}: {why} ({hardware.rates.summary()})"


def with_calibration(hardware: Hardware, mixed_precision: str, jit_compile: Union[bool, str],
                     calibrate: Optional[Callable[..., MatmulRates]] = None) -> Hardware:
    """`hardware` with its CPU's measured rates when an auto setting on a CPU-only machine
    needs them and it has none (cached per CPU and TF version; the XLA arms only for
    --jit_compile=auto). Measuring failures fall back to the flag rule."""
    if (mixed_precision != AUTO and jit_compile != AUTO) or not hardware.cpu_only \
            or hardware.rates is not None:
        return hardware
    try:
        rates = (calibrate or calibrate_cpu)(hardware, xla=jit_compile == AUTO)
    except Exception:  # pylint: disable=broad-except  # never fail a run over a timing
        return hardware
    return dataclasses.replace(hardware, rates=rates)


def choose_precision(mixed_precision: str = AUTO, jit_compile: Union[bool, str] = AUTO,
                     hardware: Optional[Hardware] = None) -> PrecisionChoice:
    """The Keras policy and XLA setting for these settings on `hardware` (probed if None).
    Explicit settings pass through unchanged ('' means float32)."""
    if hardware is None:
        hardware = with_calibration(probe_hardware(), mixed_precision, jit_compile)
    policy, jit, _ = _decide(mixed_precision, jit_compile, hardware)
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
    # The CPU calibration behind an auto choice (MatmulRates.as_dict()); None: not measured.
    calibration: Optional[Dict[str, Any]] = None

    def describe(self) -> str:
        return (f"precision: {self.policy}, jit_compile {'on' if self.jit_compile else 'off'} "
                f"({self.reason or 'as requested'})")

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_precision(mixed_precision: str, jit_compile: Union[bool, str],
                      hardware: Optional[Hardware] = None,
                      strategy: Any = None,
                      calibrate: Optional[Callable[..., MatmulRates]] = None
                      ) -> ResolvedPrecision:
    """`choose_precision` with its reason and the measured rates, for a run to print and
    record. A probed CPU-only machine is calibrated (or read from the cache) when a setting
    is auto; a `hardware` passed in is used as given (tests fake every kind with it)."""
    if hardware is None:
        hardware = with_calibration(probe_hardware(strategy), mixed_precision, jit_compile,
                                    calibrate)
    policy, jit, reason = _decide(mixed_precision, jit_compile, hardware)
    measured = hardware.rates is not None and (mixed_precision == AUTO or jit_compile == AUTO)
    return ResolvedPrecision(policy, jit, mixed_precision, jit_compile, reason,
                             hardware.summary(),
                             hardware.rates.as_dict() if measured and hardware.cpu_only
                             else None)
