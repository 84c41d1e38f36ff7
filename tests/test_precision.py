"""The `auto` precision rules (tfmodels.precision) with the hardware probe faked, the tri-state
`--jit_compile` flag, and the fine-tuning / pretraining runs that resolve, print and record
the choice."""
import dataclasses
import json
import os

import pytest
import tensorflow as tf
from absl import flags

from tfmodels import precision
from tfmodels.config_flags import (AutoBool, DEFINE_auto_bool, dataclass_from_flags,
                                   define_flags_from_dataclass)
from tfmodels.precision import Gpu, Hardware, MatmulRates, choose_precision, resolve_precision

MEASURE = precision.measure_matmul_rates  # the real one, before the fixture replaces it

# /proc/cpuinfo excerpts of the machines the project runs on (flags shortened to the
# relevant ones plus neighbours, as the kernel prints them).
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
bugs\t\t: spectre_v1

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx2
"""
ICE_LAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_vbmi2
"""
EPYC_MILAN = """processor\t: 0
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu sse4_2 avx avx2 fma sha_ni vaes vpclmulqdq
"""
EPYC_GENOA = """processor\t: 0
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni
"""


def cpu(text):
    return Hardware(*precision.parse_cpuinfo(text))


AMX, AVX512, EPYC = cpu(SAPPHIRE_RAPIDS), cpu(ICE_LAKE), cpu(EPYC_MILAN)
ZEN4 = cpu(EPYC_GENOA)


def rates(float32, bfloat16, float32_xla=None, bfloat16_xla=None):
    """Fake calibration figures (GFLOP per CPU-s) of one CPU; XLA arms only when given."""
    gflops = {"float32": float32, "bfloat16": bfloat16}
    if float32_xla is not None:
        gflops.update({"float32+xla": float32_xla, "bfloat16+xla": bfloat16_xla})
    return MatmulRates(gflops)


def measured(hardware, *figures):
    return dataclasses.replace(hardware, rates=rates(*figures))


# Shaped like the machines measured: AMX (issue 20: bf16 564 GFLOP/s via oneDNN, 129 under
# XLA), Zen 4 with AVX512-BF16 (issue 44: 211 / 403 / 203 / 176), a CPU without a bf16 unit
# (issue 20's Xeon: 159 / 20 / 141 / 87).
AMX_FAST = measured(AMX, 250.0, 564.0, 230.0, 129.0)
ZEN4_FAST = measured(ZEN4, 211.5, 403.2, 203.0, 176.0)
NO_BF16 = measured(AVX512, 159.0, 20.0, 141.0, 87.0)


@pytest.fixture(autouse=True)
def no_real_calibration(monkeypatch, tmp_path):
    """No test measures this machine or writes the user's cache: the cache goes to tmp and
    a real measurement fails the test."""
    monkeypatch.setenv("BERT_GPT_TF_HOME", str(tmp_path / "home"))

    def refuse(*args, **kwargs):
        raise AssertionError("a test measured this machine's matmuls")
    monkeypatch.setattr(precision, "measure_matmul_rates", refuse)
V100, A100, P100 = Gpu("Tesla V100", (7, 0)), Gpu("NVIDIA A100", (8, 0)), Gpu("P100", (6, 0))


def on_gpus(*gpus):
    return Hardware(EPYC.cpu_model, EPYC.cpu_flags, gpus)


def test_cpuinfo_is_parsed_from_the_first_processor():
    model, flags_ = precision.parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"amx_bf16", "avx512_bf16", "avx512f"} <= flags_ and "bugs" not in flags_
    assert AMX.has_amx_bf16 and not AVX512.has_amx_bf16 and not EPYC.has_amx_bf16
    assert precision.parse_cpuinfo("") == ("unknown CPU", frozenset())


def test_cpu_description_names_present_and_missing_isa_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(ICE_LAKE)
    assert precision.cpu_model_and_flags(str(path)) == (
        "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", ["avx2", "avx512f"])
    text = precision.cpu_description(str(path))
    assert text.startswith("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz, ")
    assert "flags: avx2 avx512f (no avx512_bf16 amx_tile amx_bf16)" in text
    assert precision.cpu_model_and_flags(str(tmp_path / "absent")) == ("unknown CPU", [])
    from tools import machine  # one implementation: the tools module re-exports it
    assert machine.cpu_description is precision.cpu_description


@pytest.mark.parametrize("hardware, expected", [
    (AMX, ("mixed_bfloat16", False)),        # oneDNN's AMX path, which XLA does not use
    (AVX512, ("float32", False)),
    (EPYC, ("float32", False)),
    (Hardware(), ("float32", False)),          # no /proc/cpuinfo
    (on_gpus(V100), ("mixed_float16", True)),
    (on_gpus(A100), ("mixed_bfloat16", True)),
    (on_gpus(A100, V100), ("mixed_float16", True)),  # the oldest GPU decides
    (on_gpus(Gpu("unknown")), ("mixed_float16", True)),
    (on_gpus(P100), ("float32", True)),
    (Hardware(AMX.cpu_model, AMX.cpu_flags, tpu=True), ("mixed_bfloat16", True)),
])
def test_auto_picks_the_fastest_policy_for_the_hardware(hardware, expected):
    assert choose_precision("auto", "auto", hardware) == expected


def test_auto_policy_respects_an_explicit_jit_setting():
    # XLA on CPU does not use AMX (issue 20: bf16 + XLA 2.76 s/step, float32 + XLA 2.48 s).
    assert choose_precision("auto", True, AMX) == ("float32", True)
    assert choose_precision("auto", False, AMX) == ("mixed_bfloat16", False)
    assert choose_precision("auto", False, on_gpus(A100)) == ("mixed_bfloat16", False)
    assert choose_precision("mixed_bfloat16", "auto", AMX) == ("mixed_bfloat16", False)
    assert choose_precision("mixed_float16", "auto", on_gpus(V100)) == ("mixed_float16", True)
    assert choose_precision("", "auto", EPYC) == ("float32", False)


@pytest.mark.parametrize("hardware", [AMX, AVX512, EPYC, on_gpus(A100), Hardware(tpu=True)])
@pytest.mark.parametrize("policy", ["", "float32", "mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("jit", [True, False])
def test_explicit_settings_pass_through_unchanged(hardware, policy, jit):
    assert choose_precision(policy, jit, hardware) == (policy or "float32", jit)
    assert resolve_precision(policy, jit, hardware).describe().endswith("(as requested)")


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown mixed_precision 'bf16'"):
        choose_precision("bf16", False, AMX)
    with pytest.raises(ValueError, match="jit_compile must be True, False or 'auto', got 'yes'"):
        choose_precision("auto", "yes", AMX)


def test_resolved_choice_says_why_and_serialises():
    choice = resolve_precision("auto", "auto", EPYC)
    assert choice.describe() == ("precision: float32, jit_compile off (auto: AMD EPYC 7763 "
                                 "64-Core Processor has no AMX-BF16)")
    assert json.loads(json.dumps(choice.as_dict())) == {
        "policy": "float32", "jit_compile": False, "requested_mixed_precision": "auto",
        "requested_jit_compile": "auto", "reason": choice.reason,
        "hardware": "AMD EPYC 7763 64-Core Processor (avx2)", "calibration": None}
    amx = resolve_precision("auto", "auto", AMX).describe()
    assert amx.startswith("precision: mixed_bfloat16, jit_compile off (auto: Intel(R) Xeon(R) "
                          "Platinum 8480+ has AMX-BF16")
    gpu = resolve_precision("auto", False, on_gpus(A100)).describe()
    assert "GPU NVIDIA A100 (compute capability 8.0)" in gpu and "jit_compile as requested" in gpu


def test_probe_reads_gpus_from_tf_config(monkeypatch, tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(EPYC_MILAN)
    devices = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU"),
               tf.config.PhysicalDevice("/physical_device:GPU:1", "GPU")]
    details = {devices[0].name: {"device_name": "NVIDIA A100", "compute_capability": (8, 0)},
               devices[1].name: {}}
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: devices if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda device: details[device.name])
    hardware = precision.probe_hardware(cpuinfo_path=str(path))
    assert hardware == Hardware("AMD EPYC 7763 64-Core Processor", EPYC.cpu_flags,
                                (Gpu("NVIDIA A100", (8, 0)),
                                 Gpu("/physical_device:GPU:1", None)))
    assert choose_precision("auto", "auto", hardware) == ("mixed_float16", True)


def test_probe_of_this_machine_matches_its_cpuinfo():
    hardware = precision.probe_hardware()
    model, present = precision.cpu_model_and_flags()
    assert hardware.cpu_model == model and set(present) <= hardware.cpu_flags
    if not tf.config.list_physical_devices("GPU"):
        assert hardware.gpus == () and not hardware.tpu


# ---- the tri-state flag -------------------------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    ([], False), (["--jit_compile"], True), (["--nojit_compile"], False),
    (["--jit_compile=auto"], "auto"), (["--jit_compile=AUTO"], "auto"),
    (["--jit_compile=false"], False), (["--jit_compile=1"], True),
    (["--jit_compile=auto", "--nojit_compile"], False),
])
def test_jit_compile_flag_takes_bools_and_auto(argv, expected):
    values = flags.FlagValues()
    DEFINE_auto_bool("jit_compile", False, "XLA", flag_values=values)
    values(["prog"] + argv)
    assert values.jit_compile is expected or values.jit_compile == expected
    # Serialised flags (flagfiles, absl's --helpfull) parse back to the same value.
    again = flags.FlagValues()
    DEFINE_auto_bool("jit_compile", False, "XLA", flag_values=again)
    again(["prog", values["jit_compile"].serialize()])
    assert again.jit_compile == expected


def test_jit_compile_flag_refuses_other_words():
    values = flags.FlagValues()
    DEFINE_auto_bool("jit_compile", False, "XLA", flag_values=values)
    with pytest.raises(flags.IllegalFlagValueError, match="jit_compile=maybe: expected true, false or auto"):
        values(["prog", "--jit_compile=maybe"])


@pytest.mark.parametrize("module, config_name", [("finetune.trainer", "FinetuneConfig"),
                                                 ("pretraining.trainer", "PretrainConfig")])
def test_binaries_flags_accept_auto(module, config_name):
    import importlib
    config_cls = getattr(importlib.import_module(module), config_name)
    values = flags.FlagValues()
    define_flags_from_dataclass(config_cls, flag_values=values)
    assert values["jit_compile"].boolean  # --jit_compile / --nojit_compile keep working
    required = (["--task=rte", "--data_dir=d", "--output_dir=o"] if config_name ==
                "FinetuneConfig" else ["--input_files=r", "--model_dir=m"])
    values(["prog", *required, "--mixed_precision=auto", "--jit_compile=auto"])
    config = dataclass_from_flags(config_cls, values)
    assert (config.mixed_precision, config.jit_compile) == ("auto", "auto")
    assert config_cls.__dataclass_fields__["jit_compile"].default is False  # not the default
    # Issue 44: measuring decides the precision by default; --mixed_precision=float32 opts out.
    assert config_cls.__dataclass_fields__["mixed_precision"].default == "auto"
    values.unparse_flags()
    values(["prog", *required])
    assert dataclass_from_flags(config_cls, values).mixed_precision == "auto"
    values.unparse_flags()
    values(["prog", *required, "--mixed_precision=float32"])
    assert dataclass_from_flags(config_cls, values).mixed_precision == "float32"
    values.unparse_flags()
    values(["prog", *required, "--mixed_precision=auto", "--jit_compile=auto"])
    with pytest.raises(ValueError, match="unknown mixed_precision 'fp8'"):
        dataclass_from_flags(config_cls, values, mixed_precision="fp8")
    with pytest.raises(ValueError, match="jit_compile must be True, False or 'auto'"):
        dataclass_from_flags(config_cls, values, jit_compile="sometimes")
    assert AutoBool.__args__[0] is bool


# ---- the runs resolve once, print and record ----------------------------------------------------

def test_finetune_resolves_auto_once_prints_and_records(shared_data, tmp_path, monkeypatch):
    from finetune.trainer import FinetuneConfig, RunResult, run_finetune
    monkeypatch.setattr(precision, "probe_hardware", lambda strategy=None: AMX_FAST)
    seen = []

    def run(ctx, lr, seed):  # what each run of the sweep is handed
        seen.append((ctx.config.mixed_precision, ctx.config.jit_compile))
        return RunResult(lr, seed, {"accuracy": 0.5}, train_steps=1)

    lines = []
    config = FinetuneConfig(
        task="sst2", model="bert", model_config="bert_test", seq_length=16,
        vocab_file=str(shared_data / "bert_vocab" / "bert-base-uncased-vocab.txt"),
        data_dir=str(shared_data / "glue" / "SST-2" / "train.tsv"), output_dir=str(tmp_path),
        max_train_examples=40, learning_rates=(1e-3,), seeds=(0, 1),
        mixed_precision="auto", jit_compile="auto")
    results = run_finetune(config, run_fn=run, log=lines.append)
    assert seen == [("mixed_bfloat16", False)] * 2
    assert lines[0].startswith("precision: mixed_bfloat16, jit_compile off (auto: Intel(R) "
                               "Xeon(R) Platinum 8480+: bfloat16 measured "
                               "2.26x float32 (matmul 1024x768x768 GFLOP per CPU-s: float32 250, "
                               "bfloat16 564 (2.26x)")
    with open(tmp_path / "results.json", encoding="utf-8") as f:
        written = json.load(f)
    assert written["precision"]["policy"] == "mixed_bfloat16"
    assert written["precision"]["requested_mixed_precision"] == "auto"
    assert written["precision"]["calibration"]["gflops_per_cpu_second"]["bfloat16+xla"] == 129.0
    assert written["config"]["jit_compile"] is False
    assert results["precision"] == written["precision"]


def test_pretraining_resolves_auto_prints_and_records(shared_data, tmp_path, monkeypatch):
    from pretraining.create_data import DataConfig, create_pretraining_data
    from pretraining.trainer import PretrainConfig, run_pretraining
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(f"sentence {d} {s} of the text ." for s in range(4))
                                  for d in range(12)) + "\n")
    create_pretraining_data([str(corpus)], str(tmp_path / "records"), DataConfig(
        vocab_file=str(shared_data / "bert_vocab" / "bert-base-uncased-vocab.txt"),
        max_seq_length=16, max_predictions_per_seq=2, dupe_factor=2), log=lambda m: None)
    monkeypatch.setattr(precision, "probe_hardware", lambda strategy=None: NO_BF16)
    lines = []
    model_dir = tmp_path / "model"
    run_pretraining(PretrainConfig(
        model="bert", model_config="bert_test", vocab_size=30522, seq_length=16,
        max_predictions_per_seq=2, global_batch_size=2, train_steps=1, warmup_steps=0,
        input_files=(str(tmp_path / "records" / "*.tfrecord"),), model_dir=str(model_dir),
        mixed_precision="auto", jit_compile="auto"), log=lines.append)
    assert lines[0].startswith("precision: float32, jit_compile off (auto: Intel(R) Xeon(R) "
                               "Platinum 8375C CPU @ 2.90GHz: nothing measured >= 1.3x float32 "
                               "(matmul 1024x768x768 GFLOP per CPU-s: float32 159, "
                               "bfloat16 20 (0.13x)")
    saved = json.loads((model_dir / "pretrain_config.json").read_text())
    assert (saved["mixed_precision"], saved["jit_compile"]) == ("float32", False)
    PretrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    chosen = json.loads((model_dir / "precision.json").read_text())
    assert chosen["requested_mixed_precision"] == "auto" and chosen["policy"] == "float32"
    assert chosen["calibration"]["gflops_per_cpu_second"]["bfloat16"] == 20.0
    assert os.path.exists(model_dir / "pretrained.keras")


# ---- the calibration (issue 44) -----------------------------------------------------------------

@pytest.mark.parametrize("hardware, settings, expected", [
    (AMX_FAST, ("auto", "auto"), ("mixed_bfloat16", False)),     # oneDNN's AMX, not XLA
    (ZEN4_FAST, ("auto", "auto"), ("mixed_bfloat16", False)),    # AVX512-BF16, no AMX
    (NO_BF16, ("auto", "auto"), ("float32", False)),             # emulated bf16: 0.13x
    (measured(ZEN4, 200.0, 250.0), ("auto", False), ("float32", False)),   # 1.25x < 1.3x
    (measured(ZEN4, 200.0, 260.0), ("auto", False), ("mixed_bfloat16", False)),  # 1.3x
    (measured(AMX, 200.0, 150.0), ("auto", "auto"), ("float32", False)),  # the flags lose
    (measured(EPYC, 100.0, 20.0, 140.0, 30.0), ("auto", "auto"), ("float32", True)),  # XLA 1.4x
    (measured(EPYC, 100.0, 20.0, 120.0, 30.0), ("auto", "auto"), ("float32", False)),
    # XLA forced on: bf16 + XLA against float32 + XLA (AMX: 129 vs 230).
    (AMX_FAST, ("auto", True), ("float32", True)),
    (measured(ZEN4, 200.0, 400.0, 100.0, 300.0), ("auto", True), ("mixed_bfloat16", True)),
    # bf16 asked for: XLA only if it makes bf16 >= 1.3x faster.
    (ZEN4_FAST, ("mixed_bfloat16", "auto"), ("mixed_bfloat16", False)),
    (measured(ZEN4, 200.0, 100.0, 200.0, 300.0), ("mixed_bfloat16", "auto"),
     ("mixed_bfloat16", True)),
    (ZEN4_FAST, ("mixed_float16", "auto"), ("mixed_float16", False)),  # not timed: flag rule
    # Accelerators keep their known choices whatever the CPU measured.
    (dataclasses.replace(ZEN4_FAST, gpus=(A100,)), ("auto", "auto"), ("mixed_bfloat16", True)),
    (dataclasses.replace(NO_BF16, gpus=(V100,)), ("auto", "auto"), ("mixed_float16", True)),
    (dataclasses.replace(NO_BF16, tpu=True), ("auto", "auto"), ("mixed_bfloat16", True)),
])
def test_auto_on_a_cpu_follows_the_measured_rates(hardware, settings, expected):
    assert choose_precision(*settings, hardware) == expected


def test_measured_choice_prints_and_records_the_rates():
    choice = resolve_precision("auto", "auto", ZEN4_FAST)
    assert choice.describe() == (
        "precision: mixed_bfloat16, jit_compile off (auto: AMD EPYC 9R14 96-Core Processor: "
        "bfloat16 measured 1.91x float32 (matmul 1024x768x768 GFLOP per CPU-s: float32 212, "
        "bfloat16 403 (1.91x), float32+xla 203 (0.96x), bfloat16+xla 176 (0.83x); given))")
    assert choice.calibration["gflops_per_cpu_second"] == ZEN4_FAST.rates.gflops
    assert json.loads(json.dumps(choice.as_dict()))["calibration"]["shape"] == [1024, 768, 768]
    # Explicit settings record no calibration; accelerators neither.
    assert resolve_precision("float32", False, ZEN4_FAST).calibration is None
    assert resolve_precision("auto", "auto", dataclasses.replace(
        ZEN4_FAST, gpus=(A100,))).calibration is None


def fake_measure(figures):
    calls = []

    def measure(arms):
        calls.append(tuple(arms))
        rates = {precision.arm_name(arm): figures[precision.arm_name(arm)] for arm in arms}
        return {**rates, "wall:float32": 100.0}
    return measure, calls


FIGURES = {"float32": 200.0, "bfloat16": 400.0, "float32+xla": 190.0, "bfloat16+xla": 170.0}


def test_calibration_is_cached_per_cpu_and_tf_version(tmp_path):
    cache = str(tmp_path / "cache.json")
    measure, calls = fake_measure(FIGURES)
    first = precision.calibrate_cpu(ZEN4, xla=False, cache_path=cache, measure=measure,
                                    tf_version="2.21.0")
    assert first.source == "measured" and first.gflops == {"float32": 200.0, "bfloat16": 400.0}
    assert first.wall_gflops == {"float32": 100.0}  # "wall:" figures are kept apart
    assert calls == [precision.PLAIN_ARMS]
    again = precision.calibrate_cpu(ZEN4, xla=False, cache_path=cache, measure=measure,
                                    tf_version="2.21.0")
    assert again.source == "cache" and again.gflops == first.gflops and len(calls) == 1
    # The XLA arms were not cached yet: measured (all four), then served from the cache.
    with_xla = precision.calibrate_cpu(ZEN4, cache_path=cache, measure=measure,
                                       tf_version="2.21.0")
    assert with_xla.source == "measured" and len(with_xla.gflops) == 4
    assert precision.calibrate_cpu(ZEN4, xla=False, cache_path=cache, measure=measure,
                                   tf_version="2.21.0").source == "cache"
    # Another TF version, another CPU model, other flags: measured again.
    for hardware, version in ((ZEN4, "2.22.0"), (AMX, "2.21.0"),
                              (dataclasses.replace(ZEN4, cpu_flags=ZEN4.cpu_flags - {
                                  "avx512_bf16"}), "2.21.0")):
        assert precision.calibrate_cpu(hardware, xla=False, cache_path=cache, measure=measure,
                                       tf_version=version).source == "measured"
    entries = json.loads(open(cache, encoding="utf-8").read())["entries"]
    assert len(entries) == 4 and all("tf 2.2" in key for key in entries)
    assert not [name for name in os.listdir(tmp_path) if name != "cache.json"]  # no temp left


def test_an_isa_cap_or_onednn_off_is_another_calibration(tmp_path, monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX512_CORE runs this CPU's kernels as an AVX-512 CPU without bf16
    would (bf16 matmuls ~0.35x float32's on a Zen 4): rates measured without the cap must not
    answer for a process with it, nor the other way round, and benchmarks print the cap."""
    cache = str(tmp_path / "cache.json")
    for name in precision.KERNEL_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    measure, calls = fake_measure(FIGURES)
    for environment in ({}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
                        {"TF_ENABLE_ONEDNN_OPTS": "0"}):
        for name in precision.KERNEL_ENVIRONMENT:
            monkeypatch.delenv(name, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        assert precision.calibrate_cpu(ZEN4, xla=False, cache_path=cache, measure=measure,
                                       tf_version="2.21.0").source == "measured"
        assert precision.calibrate_cpu(ZEN4, xla=False, cache_path=cache, measure=measure,
                                       tf_version="2.21.0").source == "cache"
    assert len(calls) == 3
    assert precision.cpu_description().endswith("; TF_ENABLE_ONEDNN_OPTS=0")


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 1, "entries": 3}',
                                     '{"version": 1, "entries": {"K": {"gflops": "x"}}}', ""])
def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path, content):
    cache = tmp_path / "cache.json"
    cache.write_text(content)
    measure, calls = fake_measure(FIGURES)
    key = precision.calibration_key(ZEN4.cpu_model, ZEN4.cpu_flags, "2.21.0")
    content = content.replace('"K"', json.dumps(key))
    cache.write_text(content)
    rates = precision.calibrate_cpu(ZEN4, xla=False, cache_path=str(cache), measure=measure,
                                    tf_version="2.21.0")
    assert rates.source == "measured" and len(calls) == 1
    assert json.loads(cache.read_text())["entries"][key]["gflops"]["bfloat16"] == 400.0


def test_resolve_calibrates_a_probed_cpu_only_when_a_setting_is_auto(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "probe_hardware", lambda strategy=None: ZEN4)
    used = []

    def calibrate(hardware, xla):
        used.append((hardware.cpu_model, xla))
        return ZEN4_FAST.rates
    assert resolve_precision("float32", False, calibrate=calibrate).calibration is None
    assert resolve_precision("mixed_bfloat16", True, calibrate=calibrate).policy == \
        "mixed_bfloat16"
    assert used == []
    choice = resolve_precision("auto", False, calibrate=calibrate)
    assert (choice.policy, choice.jit_compile) == ("mixed_bfloat16", False)
    assert resolve_precision("auto", "auto", calibrate=calibrate).jit_compile is False
    assert used == [("AMD EPYC 9R14 96-Core Processor", False),
                    ("AMD EPYC 9R14 96-Core Processor", True)]
    # The default calibration goes through the cache under $BERT_GPT_TF_HOME (measure faked).
    measure, calls = fake_measure(FIGURES)
    monkeypatch.setattr(precision, "measure_matmul_rates", measure)
    assert resolve_precision("auto", False).policy == "mixed_bfloat16"
    assert resolve_precision("auto", False).calibration["source"] == "cache"
    assert len(calls) == 1
    assert os.path.exists(tmp_path / "home" / "precision_calibration.json")

    def broken(hardware, xla):
        raise RuntimeError("no oneDNN")
    # A failed measurement falls back to the flag rule (Zen 4 has no AMX: float32).
    fallback = resolve_precision("auto", "auto", calibrate=broken)
    assert (fallback.policy, fallback.calibration) == ("float32", None)


def test_accelerators_are_not_calibrated(monkeypatch):
    monkeypatch.setattr(precision, "probe_hardware",
                        lambda strategy=None: dataclasses.replace(ZEN4, gpus=(A100,)))

    def calibrate(hardware, xla):
        raise AssertionError("calibrated a GPU machine")
    assert resolve_precision("auto", "auto", calibrate=calibrate).policy == "mixed_bfloat16"


def test_measure_matmul_rates_times_every_arm_and_leaves_the_policy_alone():
    import keras
    policy = keras.mixed_precision.global_policy().name
    figures = MEASURE(precision.PLAIN_ARMS, shape=(16, 8, 4), min_rounds=1, max_rounds=2)
    assert set(figures) == {"float32", "bfloat16", "wall:float32", "wall:bfloat16"}
    assert all(v > 0 for v in figures.values())
    assert keras.mixed_precision.global_policy().name == policy


# ---- bf16 serving (issue 44) --------------------------------------------------------------------

def test_bf16_export_computes_in_bf16_returns_float32_and_leaves_the_model_alone(tmp_path):
    import keras
    import numpy as np
    from finetune import export
    from finetune.models import build_task_model
    from finetune.tasks import get_task
    from tfmodels import configs, profiling
    from tfmodels.bert import BertEncoder
    keras.utils.set_random_seed(0)
    spec = get_task("sst2")
    model = build_task_model(spec, BertEncoder(configs.get_config("bert_test")), "bert")
    rng = np.random.default_rng(0)
    inputs = {"input_ids": rng.integers(1, 100, (3, 16)).astype("int32"),
              "segment_ids": np.zeros((3, 16), "int32"), "input_mask": np.ones((3, 16), "int32")}
    reference = model(inputs)["logits"].numpy()
    with export.publish.serving_precision(model, "bfloat16"):
        fn = tf.function(lambda batch: model(batch)["logits"])
        census = profiling.graph_dtypes(fn.get_concrete_function(
            {k: tf.constant(v) for k, v in inputs.items()}))
    assert set(census["MatMul"]) == {"bfloat16"} and set(census["Softmax"]) == {"float32"}
    assert set(census["Rsqrt"]) == {"float32"}  # LayerNorm statistics stay float32
    assert all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers())
    np.testing.assert_array_equal(model(inputs)["logits"].numpy(), reference)
    with pytest.raises(ValueError, match="serving precision must be one of"):
        with export.publish.serving_precision(model, "float16"):
            pass
    path = export.export_saved_model(model, spec, None, str(tmp_path), "sst2_bf16", 16,
                                     ids_only=True, warmup=False, precision="bfloat16")
    assert export.read_export_info(path)["precision"] == "bfloat16"
    served = tf.saved_model.load(path).signatures["serving_ids"](
        **{k: tf.constant(v) for k, v in inputs.items()})
    assert served["probabilities"].dtype == tf.float32
    difference = np.abs(served["probabilities"].numpy() - tf.nn.softmax(reference).numpy())
    assert 0 < difference.max() < 0.05  # bf16 rounding: not equal, not far
    assert (served["class_ids"].numpy() == reference.argmax(-1)).all()
