r"""Training-step throughput of our BERT and GPT-1 against keras-hub at identical size, in
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

`--policies` also takes `auto`: the arm `--mixed_precision=auto --jit_compile=auto` picks
here (tfmodels.precision's measured calibration, printed with its rates), timed like the
others, so float32 against auto is one interleaved comparison:

  python -m tools.benchmark_training --policies=float32,auto --xla=off --impls=ours \
      --models=bert,minilm --steps=2 --rounds=3

`--models=minilm` times the real all-MiniLM-L6-v2 fine-tuning step on SST-2 (the first
--minilm_examples rows at length --minilm_seq_length, batch 32, length-bucketed batches as
`finetune.run_finetune` builds them): every arm runs the same batches each round.

bfloat16 pays off on CPUs only through bf16 instructions (AMX-BF16, or AVX512-BF16 as on AMD
Zen 4/5 and Intel Cooper Lake; oneDNN uses them, XLA's CPU backend does not; issues 20, 44):
on a CPU without either the bf16 arms are printed with a note saying so.
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
# ../shared/data beside the project root (the workplace's real data).
SHARED_DATA = os.environ.get("SHARED_DATA_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared",
    "data"))
def define_flags():
    """The binary's flags, defined when it runs (tfmodels.cli.run_binary), not on import."""
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
    flags.DEFINE_list("models", ["bert", "gpt"],
                      "Which to benchmark: bert, gpt (pretraining steps), minilm (the real MiniLM "
                      "fine-tuning step on SST-2, ours only).")
    flags.DEFINE_list("impls", ["ours", "keras-hub"], "Implementations of bert / gpt to time.")
    flags.DEFINE_integer("minilm_examples", 8000, "minilm: SST-2 training rows read.")
    flags.DEFINE_integer("minilm_seq_length", 64, "minilm: the fine-tuning seq_length.")
    flags.DEFINE_integer("minilm_batches", 8, "minilm: bucketed batches timed per round.")
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


def timing_arms(policies: Sequence[str], xla_settings: Sequence[bool],
                auto_choice=None) -> List[Tuple[str, str, bool]]:
    """(label, Keras policy, jit_compile) of every arm: each explicit policy with each XLA
    setting, and `auto` once, as `auto_choice` (a ResolvedPrecision) resolved it."""
    arms = [(policy, policy, jit) for policy in policies if policy != "auto"
            for jit in xla_settings]
    if "auto" in policies:
        arms.append(("auto", auto_choice.policy, auto_choice.jit_compile))
    return arms


def parse_arms() -> Tuple[List[str], List[bool]]:
    unknown = [p for p in FLAGS.policies if p not in POLICY_DTYPES and p != "auto"]
    if unknown:
        raise ValueError(f"--policies: unknown {', '.join(unknown)} (expected "
                         f"{', '.join(POLICY_DTYPES)})")
    bad = [x for x in FLAGS.xla if x.lower() not in XLA_WORDS]
    if bad:
        raise ValueError(f"--xla: unknown {', '.join(bad)} (expected off, on)")
    unknown = [m for m in FLAGS.models if m not in ("bert", "gpt", "minilm")]
    if unknown:
        raise ValueError(f"--models: unknown {', '.join(unknown)} (expected bert, gpt, minilm)")
    unknown = [m for m in FLAGS.impls if m not in ("ours", "keras-hub")]
    if unknown:
        raise ValueError(f"--impls: unknown {', '.join(unknown)} (expected ours, keras-hub)")
    return list(dict.fromkeys(FLAGS.policies)), list(dict.fromkeys(
        XLA_WORDS[x.lower()] for x in FLAGS.xla))


def build_pair(family: str, cfg, policy: str,
               impls: Sequence[str] = ("ours", "keras-hub")) -> List[Tuple[str, keras.Model]]:
    """Ours and keras-hub's model of `family`, built under `policy` (Keras layers take the
    global policy when they are created; restored after)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        if family == "bert":
            models = [("ours", BertPretrainer), ("keras-hub", KerasHubBertPretrainer)]
        else:
            models = [("ours", GptLanguageModel), ("keras-hub", KerasHubGptLanguageModel)]
        return [(impl, cls(cfg)) for impl, cls in models if impl in impls]
    finally:
        keras.mixed_precision.set_global_policy(previous)


def hardware_notes(policies: Sequence[str]):
    """(lines saying what the machine is and what its bf16 figures can mean, auto's choice)."""
    hardware = probe_hardware()
    lines = [f"CPU: {cpu_description()}"]
    if hardware.gpus or hardware.tpu:
        lines.append(f"accelerators: {hardware.summary()}")
    choice = resolve_precision("auto", "auto")  # the measured calibration (or its cache)
    lines.append(f"--mixed_precision=auto --jit_compile=auto here: {choice.describe()}")
    fast_bf16 = {"amx_bf16", "avx512_bf16"} & hardware.cpu_flags
    if "mixed_bfloat16" in policies and not (fast_bf16 or hardware.gpus or hardware.tpu):
        lines.append("NOTE: this CPU has neither AMX-BF16 nor AVX512-BF16, so its bfloat16 "
                     "figures are emulated bf16: they say nothing about a CPU with either.")
    return lines, choice


def minilm_steppers(arms, batches_per_round: int) -> Dict[Tuple[str, str, bool], Callable]:
    """The real MiniLM fine-tuning step on SST-2's length-bucketed batches, one model per arm
    built as finetune.run_finetune builds it; `{(impl, label, jit): run(steps) -> s/step}`
    where every run goes over the same `batches_per_round` batches."""
    from finetune.config import FinetuneConfig
    from finetune.data import load_task_data, train_dataset
    from finetune.losses import task_loss
    from finetune.models import build_task_model
    from finetune.tasks import get_task
    from finetune.trainer import load_pretrained
    from tfmodels.checkpoints.hf_bert import minilm_folder

    config = FinetuneConfig(
        task="sst2", init_checkpoint=minilm_folder(), output_dir="unused",
        data_dir=os.path.join(SHARED_DATA, "glue", "SST-2"),
        max_train_examples=FLAGS.minilm_examples, seq_length=FLAGS.minilm_seq_length,
        predict_test=False)
    task = get_task("sst2")
    pretrained = load_pretrained(config, log=lambda message: None)
    data = load_task_data(config, task, pretrained.tokenizer, log=lambda message: None)
    dataset = train_dataset(data.train.features, config.train_batch_size, 0)
    batches = [batch for batch in dataset.take(batches_per_round)]
    widths = [int(batch["input_ids"].shape[1]) for batch in batches]
    print(f"minilm: SST-2 {len(data.train.examples)} training rows, batch "
          f"{config.train_batch_size}, length-bucketed widths {widths}")
    runs = {}
    for label, policy, jit in arms:
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = build_task_model(task, pretrained.build(0), "bert", dropout=0.1)
            optimizer = create_optimizer(5e-5, total_steps=1000, warmup_steps=100,
                                         decay="linear", weight_decay=0.01, epsilon=1e-6)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        step = TrainStep(model, optimizer, task_loss(task, "bert"), jit_compile=jit,
                         clip_norm=1.0, input_signature=dataset.element_spec)
        for batch in batches:  # trace once, warm oneDNN's primitives for every width
            float(step(batch)["loss"])

        def run(steps: int, step=step) -> float:
            start = time.perf_counter()
            for _ in range(steps):
                for batch in batches:
                    float(step(batch)["loss"])
            return (time.perf_counter() - start) / (steps * len(batches))

        runs[("ours", label, jit)] = run
    return runs


def main(argv):
    del argv
    policies, xla_settings = parse_arms()
    notes, auto_choice = hardware_notes(policies)
    for line in notes:
        print(line)
    arms = timing_arms(policies, xla_settings, auto_choice)
    peaks = {(POLICY_DTYPES[policy], jit): matmul_flops(POLICY_DTYPES[policy], jit,
                                                        FLAGS.peak_size)
             for _, policy, jit in arms}
    rows = []
    for family in FLAGS.models:
        if family == "minilm":
            steppers = minilm_steppers(arms, FLAGS.minilm_batches)
            times = time_interleaved(steppers, FLAGS.steps, FLAGS.rounds)
            del steppers
            for (impl, label, jit), seconds in times.items():
                policy = dict((a[0], a[1]) for a in arms)[label]
                baseline = times.get((impl, "float32", False))
                rows.append(("minilm fine-tune (SST-2)", impl, label, policy,
                             "on" if jit else "off", seconds, None, None,
                             f"{seconds / baseline:.3f}" if baseline else "-", None, None))
            continue
        name = FLAGS.bert_config if family == "bert" else FLAGS.gpt_config
        cfg = configs.get_config(name)
        if family == "bert":
            loss_fn, logit_positions = bert_pretraining_loss, FLAGS.predictions
        else:
            loss_fn, logit_positions = gpt_pretraining_loss, FLAGS.seq_length
        batch = make_batch(cfg.vocab_size, FLAGS.batch_size, FLAGS.seq_length, FLAGS.predictions)
        flops = training_flops(cfg, FLAGS.batch_size, FLAGS.seq_length, logit_positions)
        steppers = {}
        for label, policy, jit in arms:
            for impl, model in build_pair(family, cfg, policy, FLAGS.impls):
                for _, run in make_steppers(model, loss_fn, batch, [jit]).items():
                    steppers[(impl, label, jit)] = run
        times = time_interleaved(steppers, FLAGS.steps, FLAGS.rounds)
        del steppers
        tokens = FLAGS.batch_size * FLAGS.seq_length
        for (impl, label, jit), seconds in times.items():
            policy = dict((a[0], a[1]) for a in arms)[label]
            baseline = times.get((impl, "float32", False))
            hub = times.get(("keras-hub", label, jit))
            rows.append((f"{family} ({name})", impl, label, policy, "on" if jit else "off",
                         seconds, tokens / seconds, hub / seconds if hub else None,
                         f"{seconds / baseline:.3f}" if baseline else "-",
                         flops / seconds / 1e9,
                         flops / seconds / peaks[(POLICY_DTYPES[policy], jit)]))
    print(f"\nbatch {FLAGS.batch_size} x {FLAGS.seq_length} tokens (minilm: SST-2 batches of "
          f"32), best of {FLAGS.rounds} round(s) of {FLAGS.steps} step(s) (minilm: "
          f"x {FLAGS.minilm_batches} batches), arms interleaved in this one process\n")
    print(f"| matmul {FLAGS.peak_size}^3 | " + " | ".join(
        "XLA" if jit else "plain tf.function (oneDNN)" for jit in xla_settings) + " |")
    print("|---|" + "---|" * len(xla_settings))
    for dtype in dict.fromkeys(POLICY_DTYPES[policy] for _, policy, _ in arms):
        print(f"| {dtype} | " + " | ".join(
            f"{peaks[(dtype, jit)] / 1e9:.1f} GFLOP/s" if (dtype, jit) in peaks else "-"
            for jit in xla_settings) + " |")
    print("\n| model | impl | arm | policy | XLA | s/step | tokens/s | vs keras-hub | "
          "s/step / own float32 no-XLA | GFLOP/s | of the matmul rate |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model, impl, label, policy, xla, seconds, tps, ratio, rel, gflops, frac in rows:
        print(f"| {model} | {impl} | {label} | {policy} | {xla} | {seconds:.3f} | "
              + (f"{tps:,.0f}" if tps else "-") + " | "
              + (f"{ratio:.2f}x" if ratio else "-") + f" | {rel} | "
              + (f"{gflops:.1f}" if gflops else "-") + " | "
              + (f"{frac:.0%}" if frac else "-") + " |")
    if any(policy != "float32" for _, policy, _ in arms) and "keras-hub" in FLAGS.impls:
        # Checked with tfmodels.profiling.graph_dtypes: one float32 MatMul in keras-hub's GPT.
        print("\nkeras-hub's tied output projection (Keras' ReversibleEmbedding, autocast off) "
              "multiplies the mixed-precision activations by the float32 embedding matrix, so "
              "its vocabulary projection runs in float32 in the mixed arms (GPT: every "
              "position; BERT: the masked ones); ours runs it in the compute dtype.")
    if any(line.startswith("NOTE") for line in notes):
        print("\nEmulated bf16: this CPU has no bf16 instructions (see the NOTE above).")


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
