"""Per-op time profile of one BERT fine-tuning step (SST-2-style classification: encoder,
pooler, classifier, cross-entropy, AdamW with clipping: what `finetune_once` runs) in each
dtype policy on this machine, from a TensorFlow profiler trace.

  python -m tools.profile_step                       # MiniLM-L6's shape, batch 8 x 128
  python -m tools.profile_step --batch_size=32 --policies=float32,mixed_bfloat16 --xla=off,on

For every (policy, XLA) arm it prints the step's wall time (timed without the profiler), the
top op types, the top parts of the model (forward / backward x attention, feed-forward,
LayerNorm, ..., optimizer update) and the top single ops (summed over layers), each as
seconds per step and share of all kernel time; and the dtypes the step's graph computes its
softmaxes, loss, LayerNorm (Rsqrt) and matmuls in, so a policy that leaves them in float32 can
be checked. `_Mkl*` op types are oneDNN kernels; under XLA a compiled cluster is one op.
On a CPU without AMX-BF16 or AVX512-BF16 the bf16 profile shows emulated bf16 (said at the
top). `auto here` is tfmodels.precision's measured choice (issue 44).
"""
import os
import tempfile
import time
from typing import Dict

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import tensorflow as tf
from absl import flags

from finetune.losses import task_loss
from finetune.models import build_task_model
from finetune.tasks import get_task
from tfmodels import configs, profiling
from tfmodels.bert import BertEncoder
from tfmodels.cli import run_binary
from tfmodels.optimization import create_optimizer
from tfmodels.precision import POLICIES, cpu_description, probe_hardware, resolve_precision
from tfmodels.training import TrainStep

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags, defined when it runs (tfmodels.cli.run_binary), not on import."""
    flags.DEFINE_string(
        "model_config", "minilm_l6",
        "minilm_l6 (all-MiniLM-L6-v2's shape: 6 x 384, 12 heads) or a named config.")
    flags.DEFINE_integer("batch_size", 8, "Rows per step (the MiniLM SST-2 recipe uses 32).")
    flags.DEFINE_integer("seq_length", 128, "Tokens per row.")
    flags.DEFINE_integer("steps", 2, "Profiled (and, separately, timed) steps per arm.")
    flags.DEFINE_list("policies", ["float32", "mixed_bfloat16"], "Keras dtype policies.")
    flags.DEFINE_list("xla", ["off"], "XLA settings (off, on) of the forward/backward pass.")
    flags.DEFINE_integer("top", 12, "Rows per table.")


MINILM_L6 = dict(num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536)


def model_config():
    if FLAGS.model_config == "minilm_l6":
        return configs.get_config("bert_base", **MINILM_L6)
    return configs.get_config(FLAGS.model_config)


def make_batch(vocab_size: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (FLAGS.batch_size, FLAGS.seq_length)
    return {"input_ids": rng.integers(1, vocab_size, shape).astype("int32"),
            "segment_ids": np.zeros(shape, "int32"), "input_mask": np.ones(shape, "int32"),
            "label": rng.integers(0, 2, (FLAGS.batch_size,)).astype("int32")}


def profile_arm(policy: str, jit_compile: bool, batch: Dict[str, np.ndarray]):
    """(seconds per step, OpTimes per step, graph dtype census) of one arm."""
    task = get_task("sst2")
    # Backbone and head in the arm's policy, seeded: every arm starts from the same weights.
    model = build_task_model(task, BertEncoder(model_config(), seed=0, dtype=policy), "bert",
                             dtype=policy, seed=0)
    model(batch)
    optimizer = create_optimizer(5e-5, total_steps=1000, warmup_steps=100,
                                 loss_scale=policy == "mixed_float16")
    step = TrainStep(model, optimizer, task_loss(task, "bert"), jit_compile=jit_compile,
                     clip_norm=1.0)
    data = iter(tf.distribute.get_strategy().experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).repeat()))
    for _ in range(2):  # tracing (and XLA compilation)
        float(step(next(data))["loss"])
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        float(step(next(data))["loss"])
    seconds = (time.perf_counter() - start) / FLAGS.steps
    with tempfile.TemporaryDirectory() as logdir:
        with profiling.trace_to(logdir):
            for _ in range(FLAGS.steps):
                float(step(next(data))["loss"])
        times = profiling.op_times(profiling.load_xspace(logdir), FLAGS.steps)
    census = profiling.graph_dtypes(step._grads.get_concrete_function(
        {k: tf.constant(v) for k, v in batch.items()}))
    return seconds, times, census


def print_table(title: str, rows) -> None:
    print(f"\n{title}\n\n| | s/step | share of kernel time |\n|---|---|---|")
    for key, seconds, share in rows:
        print(f"| {key} | {seconds:.3f} | {share:.1%} |")


def main(argv):
    del argv
    bad = [p for p in FLAGS.policies if p not in POLICIES]
    if bad:
        raise ValueError(f"--policies: unknown {', '.join(bad)} (expected {', '.join(POLICIES)})")
    words = {"off": False, "on": True}
    if any(x not in words for x in FLAGS.xla):
        raise ValueError(f"--xla takes off and/or on, got {','.join(FLAGS.xla)}")
    hardware = probe_hardware()
    print(f"CPU: {cpu_description()}")
    print(f"auto here: {resolve_precision('auto', 'auto').describe()}")
    if not ({"amx_bf16", "avx512_bf16"} & hardware.cpu_flags or hardware.gpus or hardware.tpu):
        print("NOTE: neither AMX-BF16 nor AVX512-BF16 on this CPU: the bf16 profile is emulated "
              "bf16, not what a CPU with bf16 instructions does.")
    cfg = model_config()
    print(f"model: {FLAGS.model_config} ({cfg.num_layers} layers x {cfg.hidden_size}, "
          f"{cfg.num_heads} heads), batch {FLAGS.batch_size} x {FLAGS.seq_length}, "
          f"{FLAGS.steps} profiled step(s) per arm")
    batch = make_batch(cfg.vocab_size)
    for policy in FLAGS.policies:
        for xla in FLAGS.xla:
            seconds, times, census = profile_arm(policy, words[xla], batch)
            print(f"\n## {policy}, XLA {xla}: {seconds:.3f} s/step wall "
                  f"(kernel time summed over threads {times.total:.3f} s/step)")
            print(f"\ngraph dtypes: {profiling.format_dtypes(census)}")
            print_table("top op types", times.top("by_type", FLAGS.top))
            print_table("top parts of the step", times.top("by_part", FLAGS.top))
            print_table("top ops (summed over layers)", times.top("by_op", FLAGS.top))


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
