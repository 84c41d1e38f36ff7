"""The `auto` precision rules (tfmodels.precision) with the hardware probe faked, the tri-state
`--jit_compile` flag, and the fine-tuning / pretraining runs that resolve, print and record
the choice."""
import json
import os

import pytest
import tensorflow as tf
from absl import flags

from tfmodels import precision
from tfmodels.config_flags import (AutoBool, DEFINE_auto_bool, dataclass_from_flags,
                                   define_flags_from_dataclass)
from tfmodels.precision import Gpu, Hardware, choose_precision, resolve_precision

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


def cpu(text):
    return Hardware(*precision.parse_cpuinfo(text))


AMX, AVX512, EPYC = cpu(SAPPHIRE_RAPIDS), cpu(ICE_LAKE), cpu(EPYC_MILAN)
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
        "hardware": "AMD EPYC 7763 64-Core Processor (avx2)"}
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
    assert config_cls.__dataclass_fields__["mixed_precision"].default == ""
    with pytest.raises(ValueError, match="unknown mixed_precision 'fp8'"):
        dataclass_from_flags(config_cls, values, mixed_precision="fp8")
    with pytest.raises(ValueError, match="jit_compile must be True, False or 'auto'"):
        dataclass_from_flags(config_cls, values, jit_compile="sometimes")
    assert AutoBool.__args__[0] is bool


# ---- the runs resolve once, print and record ----------------------------------------------------

def test_finetune_resolves_auto_once_prints_and_records(shared_data, tmp_path, monkeypatch):
    from finetune.trainer import FinetuneConfig, RunResult, run_finetune
    monkeypatch.setattr(precision, "probe_hardware", lambda strategy=None: AMX)
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
                               "Xeon(R) Platinum 8480+ has AMX-BF16")
    with open(tmp_path / "results.json", encoding="utf-8") as f:
        written = json.load(f)
    assert written["precision"]["policy"] == "mixed_bfloat16"
    assert written["precision"]["requested_mixed_precision"] == "auto"
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
    monkeypatch.setattr(precision, "probe_hardware", lambda strategy=None: EPYC)
    lines = []
    model_dir = tmp_path / "model"
    run_pretraining(PretrainConfig(
        model="bert", model_config="bert_test", vocab_size=30522, seq_length=16,
        max_predictions_per_seq=2, global_batch_size=2, train_steps=1, warmup_steps=0,
        input_files=(str(tmp_path / "records" / "*.tfrecord"),), model_dir=str(model_dir),
        mixed_precision="auto", jit_compile="auto"), log=lines.append)
    assert lines[0] == ("precision: float32, jit_compile off (auto: AMD EPYC 7763 64-Core "
                        "Processor has no AMX-BF16)")
    saved = json.loads((model_dir / "pretrain_config.json").read_text())
    assert (saved["mixed_precision"], saved["jit_compile"]) == ("float32", False)
    PretrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    chosen = json.loads((model_dir / "precision.json").read_text())
    assert chosen["requested_mixed_precision"] == "auto" and chosen["policy"] == "float32"
    assert os.path.exists(model_dir / "pretrained.keras")
