"""Training-step throughput of our BERT and GPT-1 against keras-hub at identical size, in
float32 and mixed_bfloat16, each with and without XLA, side by side in one process.

  python -m tools.benchmark_training --batch_size=8 --seq_length=128 --steps=3 --rounds=3
  python -m tools.benchmark_training --policies=float32 --xla=on     # the old single arm

For each architecture it times a full training step (forward, backward, AdamW update) of
  ours:       BertPretrainer (MLM on 20 positions + NSP) / GptLanguageModel (causal LM)
  keras-hub:  BertBackbone + MaskedLMHead (tied) + NSP dense / GPT2Backbone + tied LM logits
with the same width, depth, sequence length, batch, loss and training loop, for every
(policy, XLA) arm, all arms of one architecture interleaved round by round. It prints the CPU
(model, AVX-512 / AMX flags), what `--mixed_precision=auto` would pick here, the measured
2048^3 matmul rate in each dtype with and without XLA (the rooflines), then tokens/s, the
ratio ours / keras-hub in the same arm, the speed-up over the same implementation's float32
step without XLA, and achieved FLOP/s against the matmul rate of the arm's dtype and XLA
setting. Ratios, not absolute times, are what compare across noisy machines.

bfloat16 pays off on CPUs only through a bf16 matrix unit (AMX-BF16, used by oneDNN and not
by XLA's CPU backend; issue 20): on a CPU without one the bf16 arms are printed with a note
saying so, and say nothing about an AMX machine.
"""
import os
import time
from typing import Callable, Dict, List, Sequence, Tuple

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from absl import flags

from tfmodels import configs
from tfmodels.bert import BertPretrainer
from tfmodels.cli import run_binary
from tfmodels.gpt import GptLanguageModel
from tfmodels.losses import bert_pretraining_loss, gpt_pretraining_loss
from tfmodels.optimization import create_optimizer
from tfmodels.precision import cpu_description, probe_hardware, resolve_precision
from tfmodels.training import TrainStep

FLAGS = flags.FLAGS
flags.DEFINE_string("bert_config", "bert_base", "Named BERT config.")
flags.DEFINE_string("gpt_config", "gpt1", "Named GPT config.")
flags.DEFINE_integer("batch_size", 8, "Sequences per step.")
flags.DEFINE_integer("seq_length", 128, "Tokens per sequence.")
flags.DEFINE_integer("predictions", 20, "BERT masked positions per sequence.")
flags.DEFINE_integer("steps", 3, "Timed steps per round (after 2 warm-up steps).")
flags.DEFINE_integer("rounds", 3, "Alternating timing rounds; the best round counts.")
flags.DEFINE_list("policies", ["float32", "mixed_bfloat16"],
                  "Keras dtype policies to time (float32, mixed_bfloat16, mixed_float16).")
flags.DEFINE_list("xla", ["off", "on"], "XLA settings of the forward/backward pass to time.")
flags.DEFINE_list("models", ["bert", "gpt"], "Which architectures to benchmark.")
flags.DEFINE_integer("peak_size", 2048, "Side of the square matmul timed as the roofline.")


class KerasHubMaskedLMHead(keras_hub.layers.MaskedLMHead):
    """keras-hub's MaskedLMHead with its output bias cast to the logits' dtype. keras-hub 0.32's
    head (autocast=False) adds its float32 bias to bfloat16 logits when it runs inside a model
    under a mixed policy and fails (its own BertMaskedLM too, on the TensorFlow backend);
    otherwise the same computation."""

    def call(self, inputs, mask_positions):
        x = keras.ops.take_along_axis(inputs, keras.ops.expand_dims(mask_positions, -1), axis=1)
        x = self._intermediate_layer_norm(self._intermediate_dense(x))
        outputs = keras.ops.cast(self.token_embedding(x, reverse=True), self.compute_dtype)
        outputs = outputs + keras.ops.cast(self._bias, self.compute_dtype)
        return self.activation(outputs) if self.activation is not None else outputs


class KerasHubBertPretrainer(keras.Model):
    """keras-hub's BertBackbone with the same MLM + NSP heads as ours."""

    def __init__(self, cfg: configs.BertConfig):
        super().__init__()
        self.backbone = keras_hub.models.BertBackbone(
            vocabulary_size=cfg.vocab_size, num_layers=cfg.num_layers,
            num_heads=cfg.num_heads, hidden_dim=cfg.hidden_size,
            intermediate_dim=cfg.intermediate_size, dropout=cfg.hidden_dropout,
            max_sequence_length=cfg.max_positions)
        self.mlm_head = KerasHubMaskedLMHead(
            vocabulary_size=cfg.vocab_size,
            token_embedding=self.backbone.token_embedding, activation="gelu")
        self.nsp_head = keras.layers.Dense(2)

    def call(self, batch, training=None):
        outputs = self.backbone({"token_ids": batch["input_ids"],
                                 "segment_ids": batch["segment_ids"],
                                 "padding_mask": batch["input_mask"]}, training=training)
        return {"mlm_logits": self.mlm_head(outputs["sequence_output"],
                                            mask_positions=batch["masked_lm_positions"]),
                "nsp_logits": self.nsp_head(outputs["pooled_output"])}


class KerasHubGptLanguageModel(keras.Model):
    """keras-hub's GPT2Backbone (pre-LN, GPT-1's size) with logits tied to its embedding."""

    def __init__(self, cfg: configs.GptConfig):
        super().__init__()
        self.backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=cfg.vocab_size, num_layers=cfg.num_layers,
            num_heads=cfg.num_heads, hidden_dim=cfg.hidden_size,
            intermediate_dim=cfg.intermediate_size, dropout=cfg.hidden_dropout,
            max_sequence_length=cfg.max_positions)

    def call(self, batch, training=None):
        hidden = self.backbone({"token_ids": batch["input_ids"],
                                "padding_mask": tf.ones_like(batch["input_ids"])},
                               training=training)
        return {"logits": self.backbone.token_embedding(hidden, reverse=True)}


def training_flops(cfg: configs.TransformerConfig, batch: int, seq: int,
                   logit_positions: int) -> float:
    """Matmul FLOPs of one training step (3x the forward pass: forward + 2x backward).

    Forward per token: 2 x (attention + FFN weights) plus 4 x seq x hidden per layer for
    the QK^T and PV products; plus 2 x hidden x vocab for each position given logits.
    """
    h, layers = cfg.hidden_size, cfg.num_layers
    per_layer_weights = 4 * h * h + 2 * h * cfg.intermediate_size
    forward = batch * seq * layers * (2 * per_layer_weights + 4 * seq * h)
    forward += batch * logit_positions * 2 * h * cfg.vocab_size
    return 3.0 * forward


def matmul_flops(dtype: str, jit_compile: bool, size: int = 2048,
                 min_seconds: float = 1.0) -> float:
    """Measured FLOP/s of a size^3 matmul in `dtype` (the roofline a step is compared with),
    through oneDNN (plain tf.function) or XLA: the fastest of the calls made in `min_seconds`
    (at least 3), the least disturbed by other load, as the steps' best round is."""
    a = tf.cast(tf.random.normal((size, size)), dtype)
    matmul = tf.function(lambda x: tf.matmul(x, x), jit_compile=jit_compile)
    matmul(a).numpy()
    best, calls, start = float("inf"), 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < min_seconds:
        began = time.perf_counter()
        matmul(a).numpy()
        best, calls = min(best, time.perf_counter() - began), calls + 1
    return 2.0 * size ** 3 / best


def make_steppers(model: keras.Model, loss_fn: Callable, batch: Dict[str, np.ndarray],
                  xla_settings: Sequence[bool]) -> Dict[bool, Callable[[int], float]]:
    """For one model, `{jit_compile: run(steps) -> seconds per step}`, traced and warmed up.
    The XLA settings share the model and its optimizer (AdamW builds its slots once), so
    the arms cost one model's memory."""
    optimizer = create_optimizer(1e-4, total_steps=1000, warmup_steps=10)
    model(batch)
    data = iter(tf.distribute.get_strategy().experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).repeat()))
    runs = {}
    for jit_compile in xla_settings:
        step = TrainStep(model, optimizer, loss_fn, jit_compile=jit_compile, clip_norm=1.0)
        for _ in range(2):  # tracing and XLA compilation
            float(step(next(data))["loss"])

        def run(steps: int, step=step) -> float:
            start = time.perf_counter()
            for _ in range(steps):
                float(step(next(data))["loss"])
            return (time.perf_counter() - start) / steps

        runs[jit_compile] = run
    return runs


def time_interleaved(steppers: Dict[str, Callable[[int], float]], steps: int,
                     rounds: int) -> Dict[str, float]:
    """Best seconds/step of each implementation over `rounds` alternating rounds: on a shared,
    noisy machine, alternating exposes both to the same background load and the minimum
    is the least disturbed measurement."""
    best = {name: float("inf") for name in steppers}
    for _ in range(rounds):
        for name, run in steppers.items():
            best[name] = min(best[name], run(steps))
    return best


def make_batch(vocab_size: int, batch: int, seq: int, predictions: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(1, vocab_size, (batch, seq)).astype("int32"),
        "segment_ids": (np.arange(seq)[None] >= seq // 2).repeat(batch, 0).astype("int32"),
        "input_mask": np.ones((batch, seq), "int32"),
        "masked_lm_positions": np.sort(rng.choice(np.arange(1, seq), (batch, predictions)),
                                       axis=1).astype("int32"),
        "masked_lm_ids": rng.integers(1, vocab_size, (batch, predictions)).astype("int32"),
        "masked_lm_weights": np.ones((batch, predictions), "float32"),
        "next_sentence_labels": rng.integers(0, 2, (batch,)).astype("int32"),
    }


POLICY_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
XLA_WORDS = {"off": False, "false": False, "on": True, "true": True}


def parse_arms() -> Tuple[List[str], List[bool]]:
    unknown = [p for p in FLAGS.policies if p not in POLICY_DTYPES]
    if unknown:
        raise ValueError(f"--policies: unknown {', '.join(unknown)} (expected "
                         f"{', '.join(POLICY_DTYPES)})")
    bad = [x for x in FLAGS.xla if x.lower() not in XLA_WORDS]
    if bad:
        raise ValueError(f"--xla: unknown {', '.join(bad)} (expected off, on)")
    unknown = [m for m in FLAGS.models if m not in ("bert", "gpt")]
    if unknown:
        raise ValueError(f"--models: unknown {', '.join(unknown)} (expected bert, gpt)")
    return list(dict.fromkeys(FLAGS.policies)), list(dict.fromkeys(
        XLA_WORDS[x.lower()] for x in FLAGS.xla))


def build_pair(kind: str, cfg, policy: str) -> List[Tuple[str, keras.Model]]:
    """Ours and keras-hub's model of `kind`, built under `policy` (Keras layers take the
    global policy when they are created)."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        if kind == "bert":
            return [("ours", BertPretrainer(cfg)), ("keras-hub", KerasHubBertPretrainer(cfg))]
        return [("ours", GptLanguageModel(cfg)), ("keras-hub", KerasHubGptLanguageModel(cfg))]
    finally:
        keras.mixed_precision.set_global_policy("float32")


def hardware_notes(policies: Sequence[str]) -> List[str]:
    """What the machine is and what its bf16 figures can mean."""
    hardware = probe_hardware()
    lines = [f"CPU: {cpu_description()}"]
    if hardware.gpus or hardware.tpu:
        lines.append(f"accelerators: {hardware.summary()}")
    lines.append(f"--mixed_precision=auto --jit_compile=auto here: "
                 f"{resolve_precision('auto', 'auto', hardware).describe()}")
    if "mixed_bfloat16" in policies and not (hardware.has_amx_bf16 or hardware.gpus
                                             or hardware.tpu):
        lines.append("NOTE: this CPU has no AMX-BF16 (no amx_bf16 in /proc/cpuinfo), so its "
                     "bfloat16 figures are bf16 without a bf16 matrix unit: they say nothing "
                     "about an AMX machine, and issue 20's bars (bf16 step >= 1.8x float32 at "
                     "bert_base) need AMX hardware to be measured.")
    return lines


def main(argv):
    del argv
    policies, xla_settings = parse_arms()
    notes = hardware_notes(policies)
    for line in notes:
        print(line)
    peaks = {(POLICY_DTYPES[p], jit): matmul_flops(POLICY_DTYPES[p], jit, FLAGS.peak_size)
             for p in policies for jit in xla_settings}
    rows = []
    for kind in FLAGS.models:
        name = FLAGS.bert_config if kind == "bert" else FLAGS.gpt_config
        cfg = configs.get_config(name)
        if kind == "bert":
            loss_fn, logit_positions = bert_pretraining_loss, FLAGS.predictions
        else:
            loss_fn, logit_positions = gpt_pretraining_loss, FLAGS.seq_length
        batch = make_batch(cfg.vocab_size, FLAGS.batch_size, FLAGS.seq_length, FLAGS.predictions)
        flops = training_flops(cfg, FLAGS.batch_size, FLAGS.seq_length, logit_positions)
        steppers = {}
        for policy in policies:
            for impl, model in build_pair(kind, cfg, policy):
                for jit, run in make_steppers(model, loss_fn, batch, xla_settings).items():
                    steppers[(impl, policy, jit)] = run
        times = time_interleaved(steppers, FLAGS.steps, FLAGS.rounds)
        del steppers
        tokens = FLAGS.batch_size * FLAGS.seq_length
        for (impl, policy, jit), seconds in times.items():
            baseline = times.get((impl, "float32", False))
            rows.append((f"{kind} ({name})", impl, policy, "on" if jit else "off", seconds,
                         tokens / seconds, times[("keras-hub", policy, jit)] / seconds,
                         f"{baseline / seconds:.2f}x" if baseline else "-",
                         flops / seconds / 1e9, flops / seconds / peaks[(POLICY_DTYPES[policy],
                                                                          jit)]))
    print(f"\nbatch {FLAGS.batch_size} x {FLAGS.seq_length} tokens, best of {FLAGS.rounds} "
          f"round(s) of {FLAGS.steps} step(s)\n")
    print("| matmul " + f"{FLAGS.peak_size}^3 | " + " | ".join(
        "XLA" if jit else "plain tf.function (oneDNN)" for jit in xla_settings) + " |")
    print("|---|" + "---|" * len(xla_settings))
    for dtype in dict.fromkeys(POLICY_DTYPES[p] for p in policies):
        print(f"| {dtype} | " + " | ".join(f"{peaks[(dtype, jit)] / 1e9:.1f} GFLOP/s"
                                           for jit in xla_settings) + " |")
    print("\n| model | impl | policy | XLA | s/step | tokens/s | vs keras-hub | vs own float32 "
          "no-XLA | GFLOP/s | of the matmul rate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model, impl, policy, xla, seconds, tps, ratio, speedup, gflops, frac in rows:
        print(f"| {model} | {impl} | {policy} | {xla} | {seconds:.3f} | {tps:,.0f} | "
              f"{ratio:.2f}x | {speedup} | {gflops:.1f} | {frac:.0%} |")
    if any(policy != "float32" for policy in policies):
        # Checked with tfmodels.profiling.graph_dtypes: one float32 MatMul in keras-hub's GPT.
        print("\nkeras-hub's tied output projection (Keras' ReversibleEmbedding, autocast off) "
              "multiplies the mixed-precision activations by the float32 embedding matrix, so "
              "its vocabulary projection runs in float32 in the mixed arms (GPT: every "
              "position; BERT: the masked ones); ours runs it in the compute dtype.")
    if any(line.startswith("NOTE") for line in notes):
        print("\nNot AMX figures: this CPU has no bf16 matrix unit (see the NOTE above).")


if __name__ == "__main__":
    run_binary(main)
