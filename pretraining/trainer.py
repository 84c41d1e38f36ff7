"""The pretraining loop for BERT (MLM + NSP) and GPT-1 (causal LM), on any tf.distribute strategy.

`run_pretraining(config)` is what the absl binary `pretraining/run_pretraining.py` calls and
what tests call directly. One loop serves both models; the differences are three small
functions picked by `config.model`: the model, the loss and the input pipeline. `lstm` (GPT-1's
LSTM baseline, tfmodels.lstm) takes GPT-1's records and causal LM loss.

The BERT paper's pretraining ablations (Table 5, Appendix C.2): `use_nsp=False` is "No NSP"
(MLM only); `objective=ltr` (with `use_nsp=False`) is "LTR & No NSP", a causal BERT trained
as a left-to-right LM on the same records with their static masks undone; `mask_token_rate` /
`random_token_rate` set the masking mix of dynamic masking (static masks are fixed when the
records are made, by the same two fields of pretraining.create_data.DataConfig).

Resume: a checkpoint holds the model, the optimizer (slots and iteration count), the dropout
seed-generator states and the step; the input position is the step (the seeded pipelines skip
the batches already consumed, since distributed iterators cannot be checkpointed). A run
killed at any point and restarted with the same flags continues where its last checkpoint left
off and, with `deterministic=True` and static masks, produces the same losses as an
uninterrupted run.
`init_checkpoint` instead loads only model weights (BERT's 128 -> 512 second phase).

Multi-worker: every worker runs the same program (TF_CONFIG says who is who); all of them must
take part in saving, but only the chief writes to `model_dir`, the others to a scratch folder
that is deleted after each save (the pattern tf.distribute documents).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from typing import Callable, Dict, List, Optional, Tuple

import keras
import tensorflow as tf

from pretraining import input_pipeline
from pretraining.create_data import masking_rate_problems
from tfmodels import configs, precision
from tfmodels.architectures import ARCHITECTURES, input_format
from tfmodels.bert import BertCausalLM, BertPretrainer
from tfmodels.config_flags import AutoBool, option
from tfmodels.files import atomic_write_text, json_safe
from tfmodels.folder_lock import exclusive_folder, is_chief
from tfmodels.gpt import GptLanguageModel
from tfmodels.lstm import LstmDecoder, LstmLanguageModel
from tfmodels.losses import bert_pretraining_loss, causal_lm_loss, gpt_pretraining_loss
from tfmodels.optimization import WarmupDecaySchedule, create_optimizer
from tfmodels.progress import Progress
# make_strategy is imported from here by older callers; it lives in tfmodels.training.
from tfmodels.training import (DISTRIBUTION_STRATEGIES, TensorBoardLog, TrainingDiverged,
                               TrainStep, make_strategy, op_determinism)  # noqa: F401


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    # What to train.
    model: str = option(
        "bert",
        "The model to pretrain (lstm: GPT-1's LSTM baseline: GPT-1's records and causal LM "
        "loss; needs an lstm_* model_config, e.g. lstm_2048).",
        choices=ARCHITECTURES)
    model_config: str = dataclasses.field(
        default="bert_base", metadata={"help": f"Named size: {sorted(configs.NAMED_CONFIGS)}"})
    vocab_size: int = dataclasses.field(
        default=0, metadata={"help": "Override the config's vocabulary size (0: keep)."})
    # Data.
    input_files: Tuple[str, ...] = dataclasses.field(
        default=(), metadata={"help": "Globs of TFRecord shards from create_pretraining_data."})
    seq_length: int = option(
        128,
        "Tokens per record (the records' length: create_pretraining_data's max_seq_length / "
        "n_ctx).")
    max_predictions_per_seq: int = option(
        20, "BERT: masked positions per record (at most seq_length; the records' value).")
    use_nsp: bool = dataclasses.field(
        default=True, metadata={"help": "BERT: train next-sentence prediction too."})
    objective: str = option(
        "",
        "bert: mlm | ltr (left-to-right LM on a causal BERT, needs --nouse_nsp); gpt, lstm: "
        "lm. '' = mlm / lm.",
        choices=("", "mlm", "ltr", "lm"))
    dynamic_masking: bool = dataclasses.field(
        default=False, metadata={"help": "BERT: re-mask in tf.data each time a record is "
                                         "read instead of using the records' static masks."})
    mask_token_rate: float = dataclasses.field(
        default=0.8, metadata={"help": "Dynamic masking: share of the selected tokens "
                                       "replaced by [MASK]."})
    random_token_rate: float = dataclasses.field(
        default=0.1, metadata={"help": "Dynamic masking: share replaced by a random token "
                                       "(the rest keep theirs)."})
    whole_word_masking: bool = option(
        False, "Dynamic masking: mask every piece of a chosen word together.")
    vocab_file: str = dataclasses.field(
        default="", metadata={"help": "WordPiece vocab (needed for dynamic masking)."})
    shuffle_buffer: int = option(10000, "Records in the training shuffle buffer.")
    # Optimisation.
    global_batch_size: int = option(
        256, "Records per optimizer update, over every replica and micro-batch.")
    train_steps: int = option(
        1000, "Optimizer updates in the whole run (a resumed run continues to this).")
    warmup_steps: int = option(100, "Steps of linear learning-rate warmup.")
    learning_rate: float = option(1e-4, "Peak learning rate (after warmup).")
    optimizer: str = option(
        "adamw", "AdamW (the papers') or LAMB (large batches).",
        choices=("adamw", "lamb"))
    decay: str = option(
        "",
        "Learning-rate decay after warmup ('' = linear for BERT, cosine for GPT-1, as in the "
        "papers).",
        choices=("", "linear", "cosine", "constant"))
    weight_decay: float = option(0.01, "Decoupled weight decay (not on biases and LayerNorm).")
    beta_2: float = option(0.999, "Adam's second-moment decay (BERT 0.999; RoBERTa 0.98).")
    clip_norm: float = option(1.0, "Clip the global gradient norm to this (0 = no clipping).")
    recovery_max_trials: int = option(
        0, "When the loss or gradient norm stops being finite: resume from the last good "
        "checkpoint with the learning rate times --recovery_lr_factor, at most this many times "
        "(0: stop with the error), as TF Model Garden's trainer recovers.")
    recovery_lr_factor: float = option(
        0.5, "Each recovery's learning-rate factor (the peak and the whole schedule).")
    gradient_accumulation_steps: int = dataclasses.field(
        default=1, metadata={"help": "Micro-batches per update; each is "
                                     "global_batch_size / this."})
    # Execution.
    strategy: str = option(
        "one_device",
        "tf.distribute strategy: one device, mirrored over local devices, multi-worker "
        "(TF_CONFIG), or TPU.",
        choices=DISTRIBUTION_STRATEGIES)
    tpu: str = dataclasses.field(default="", metadata={"help": "TPU name or grpc:// address."})
    num_cpu_devices: int = dataclasses.field(
        default=0, metadata={"help": "Split the CPU into this many logical devices (testing "
                                     "mirrored strategies without accelerators)."})
    mixed_precision: str = option(precision.AUTO, precision.MIXED_PRECISION_HELP,
                                  choices=precision.MIXED_PRECISION_CHOICES)
    jit_compile: AutoBool = dataclasses.field(
        default=False, metadata={"help": "XLA-compile the training step; --jit_compile=auto: "
                                         "on for GPUs and TPUs; on CPUs only where "
                                         "XLA's measured matmul is >= 1.3x faster "
                                         "(tfmodels.precision)."})
    deterministic: bool = dataclasses.field(
        default=False, metadata={"help": "Enable TF op determinism (reproducible losses)."})
    seed: int = option(12345, "Seed of initialisation, dropout, shuffling and dynamic masks.")
    # Held-out evaluation (MLM / NSP accuracy, perplexity) during training.
    eval_input_files: Tuple[str, ...] = dataclasses.field(
        default=(), metadata={"help": "Globs of held-out shards; empty: no evaluation."})
    eval_every: int = option(1000, "Steps between held-out evaluations (TensorBoard eval/).")
    eval_batches: int = option(20, "Held-out batches per evaluation.")
    # Output.
    model_dir: str = option(
        "",
        "Folder for checkpoints, pretrained.keras, metrics.jsonl and TensorBoard events; a run"
        " resumes from its last checkpoint; one process writes it at a time.")
    checkpoint_every: int = option(1000, "Steps between checkpoints.")
    keep_checkpoints: int = option(5, "Most recent checkpoints kept.")
    log_every: int = option(100, "Steps between progress lines and TensorBoard train/ points.")
    init_checkpoint: str = dataclasses.field(
        default="", metadata={"help": "Checkpoint (file prefix or folder) to take model "
                                      "weights from; optimizer and step start fresh."})

    def __post_init__(self):
        problems = []
        if self.model not in ARCHITECTURES:
            problems.append(f"model must be one of {', '.join(ARCHITECTURES)} (lstm: GPT-1's "
                            f"LSTM baseline), got {self.model!r}")
        if not self.input_files:
            problems.append("input_files is empty")
        if self.recovery_max_trials < 0 or not 0.0 < self.recovery_lr_factor < 1.0:
            problems.append(f"recovery_max_trials must be >= 0 and recovery_lr_factor in (0, 1), "
                            f"got {self.recovery_max_trials} and {self.recovery_lr_factor}")
        if self.model == "bert" and not 1 <= self.max_predictions_per_seq <= self.seq_length:
            problems.append(f"max_predictions_per_seq must be in 1..seq_length "
                            f"({self.seq_length}), got {self.max_predictions_per_seq}")
        if not self.model_dir:
            problems.append("model_dir is required")
        if self.strategy not in DISTRIBUTION_STRATEGIES:
            problems.append(f"unknown strategy {self.strategy!r}")
        problems += precision.check_settings(self.mixed_precision, self.jit_compile)
        if self.global_batch_size % self.gradient_accumulation_steps:
            problems.append(f"global_batch_size {self.global_batch_size} is not divisible by "
                            f"gradient_accumulation_steps {self.gradient_accumulation_steps}")
        if self.dynamic_masking and not self.vocab_file:
            problems.append("dynamic_masking needs vocab_file")
        objectives = {"bert": ("mlm", "ltr")}.get(self.model, ("lm",))
        if self.objective and self.objective not in objectives:
            problems.append(f"objective {self.objective!r} is not one for model "
                            f"{self.model!r} (expected one of {objectives})")
        if self.objective == "ltr":
            if self.use_nsp:
                problems.append("objective ltr needs use_nsp=False: NSP reads [CLS], which "
                                "sees only itself under left-to-right attention")
            if self.dynamic_masking:
                problems.append("objective ltr reads the original text; dynamic_masking "
                                "does not apply")
        problems += masking_rate_problems(self.mask_token_rate, self.random_token_rate)
        if (self.mask_token_rate, self.random_token_rate) != (0.8, 0.1) and not (
                self.dynamic_masking):
            problems.append("mask_token_rate / random_token_rate apply to dynamic_masking; "
                            "static masks are fixed when the records are made "
                            "(create_pretraining_data --mask_token_rate --random_token_rate)")
        if problems:
            raise ValueError("bad pretraining config: " + "; ".join(problems))

    @property
    def pretraining_objective(self) -> str:
        """`objective`, or the model's default: mlm (BERT), lm (GPT, LSTM)."""
        return self.objective or ("mlm" if self.model == "bert" else "lm")

    @property
    def decay_shape(self) -> str:
        return self.decay or ("linear" if self.model == "bert" else "cosine")


def build_model(config: PretrainConfig, dtype=None) -> keras.Model:
    """The model `config` trains, its weights drawn from `config.seed`, in dtype policy `dtype`
    (None: Keras' global policy)."""
    built = dict(seed=config.seed, dtype=dtype)
    overrides = {"vocab_size": config.vocab_size} if config.vocab_size else {}
    model_config = configs.get_config(config.model_config, **overrides)
    if config.model == "bert":
        if not isinstance(model_config, configs.BertConfig):
            raise ValueError(f"model bert needs a BERT config, got {config.model_config!r}")
        if config.pretraining_objective == "ltr":
            return BertCausalLM(model_config.replace(causal=True), **built)
        model = BertPretrainer(model_config, **built)
        if not config.use_nsp:
            # No loss reads them: None gradients break all-reduce and clipping (mirrored).
            model.nsp_head.trainable = False
            model.encoder.pooler.trainable = False
        return model
    if config.model == "lstm":
        if not isinstance(model_config, configs.LstmConfig):
            raise ValueError(f"model lstm needs an LSTM config (lstm_2048, lstm_small, "
                             f"lstm_test), got {config.model_config!r}")
    elif not isinstance(model_config, configs.GptConfig):
        raise ValueError(f"model gpt needs a GPT config, got {config.model_config!r}")
    if config.seq_length > model_config.max_positions:
        raise ValueError(f"seq_length {config.seq_length} exceeds {config.model_config}'s "
                         f"{model_config.max_positions} positions")
    if config.model == "lstm":
        # XLA cannot compile the cuDNN LSTM kernel that Keras picks on GPUs.
        return LstmLanguageModel(LstmDecoder(
            model_config, use_cudnn=False if config.jit_compile else "auto", **built),
            **built)
    return GptLanguageModel(model_config, **built)


def loss_function(config: PretrainConfig) -> Callable:
    if input_format(config.model) == "gpt":  # the LSTM baseline: GPT-1's records and objective
        return gpt_pretraining_loss
    if config.pretraining_objective == "ltr":
        return lambda outputs, batch: causal_lm_loss(outputs["logits"], batch["input_ids"],
                                                     batch["input_mask"])
    return lambda outputs, batch: bert_pretraining_loss(outputs, batch, use_nsp=config.use_nsp)


def dataset_function(config: PretrainConfig, micro_batch_size: int,
                     training: bool = True, skip_batches: int = 0,
                     text_ids: bool = False) -> Callable:
    """input_context -> this pipeline's per-replica dataset (what the strategy distributes).

    Evaluation reads `eval_input_files` in order, static masks, no shuffling. text_ids: the
    batches also carry `doc_id` and `text_span` (tools/data_coverage replays the training
    order with them)."""
    masking = None
    files = config.input_files if training else config.eval_input_files
    if config.dynamic_masking and training:
        masking = input_pipeline.DynamicMasking.from_vocab_file(
            config.vocab_file, whole_word=config.whole_word_masking,
            mask_token_rate=config.mask_token_rate, random_token_rate=config.random_token_rate)

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = context.get_per_replica_batch_size(micro_batch_size)
        common = dict(is_training=training, input_context=context, seed=config.seed,
                      shuffle_buffer=config.shuffle_buffer, skip_batches=skip_batches,
                      text_ids=text_ids)
        if input_format(config.model) == "gpt":
            return input_pipeline.gpt_pretraining_dataset(
                files, batch, config.seq_length, **common)
        return input_pipeline.bert_pretraining_dataset(
            files, batch, config.seq_length, config.max_predictions_per_seq,
            dynamic_masking=masking, use_nsp=config.use_nsp,
            unmasked=config.pretraining_objective == "ltr", **common)

    return make


def _write_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
    if is_chief(strategy):
        return model_dir
    resolver = strategy.cluster_resolver
    return os.path.join(model_dir, f".scratch_{resolver.task_type}_{resolver.task_id}")


def _resolve_checkpoint(path: str) -> str:
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise ValueError(f"init_checkpoint folder {path} holds no checkpoint")
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise ValueError(f"init_checkpoint {path} not found (expected {path}.index)")
    return path


class Evaluator:
    """Mean pretraining metrics over the first `batches` held-out batches (dropout off)."""

    def __init__(self, model, loss_fn, strategy, dataset_fn, batches: int):
        self.strategy, self.batches = strategy, batches
        self.dataset = input_pipeline.distribute_dataset(strategy, dataset_fn)

        def replica_step(batch):
            return loss_fn(model(batch, training=False), batch)

        @tf.function
        def step(batch):
            per_replica = strategy.run(replica_step, args=(batch,))
            return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                    for name, value in per_replica.items()}

        self.step = step

    def __call__(self) -> Dict[str, float]:
        totals: Dict[str, float] = {}
        count = 0
        for batch in self.dataset:
            for name, value in self.step(batch).items():
                totals[name] = totals.get(name, 0.0) + float(value)
            count += 1
            if count == self.batches:
                break
        if not count:
            raise ValueError("eval_input_files gave no complete batch")
        return {f"eval_{name}": value / count for name, value in totals.items()}


class MetricLog:
    """Per-step metrics kept as tensors and read at log time, so logging does not force a
    device sync every step; written as JSON lines (strict JSON: a non-finite value is null)
    and TensorBoard scalars by the chief: held-out `eval_*` metrics under `eval/` (without
    the prefix, so train and eval curves overlay), the rest under `train/`."""

    def __init__(self, model_dir: str, enabled: bool):
        self.enabled = enabled
        self.pending: List[Tuple[int, Dict[str, tf.Tensor]]] = []
        self.path = os.path.join(model_dir, "metrics.jsonl")
        self.tensorboard = TensorBoardLog(model_dir if enabled else "")

    def add(self, step: int, metrics: Dict[str, tf.Tensor]) -> None:
        self.pending.append((step, metrics))

    def flush(self, extra: Optional[Dict[str, float]] = None) -> List[Dict[str, float]]:
        rows = [{"step": step, **{k: float(v) for k, v in m.items()}}
                for step, m in self.pending]
        self.pending = []
        if not (self.enabled and rows):
            return rows
        rows[-1].update(extra or {})
        with open(self.path, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(json_safe(row), allow_nan=False) + "\n")
        for row in rows:
            scalars = {name: value for name, value in row.items() if name != "step"}
            self.tensorboard.write("train", row["step"], {
                name: value for name, value in scalars.items() if not name.startswith("eval_")})
            self.tensorboard.write("eval", row["step"], {
                name[len("eval_"):]: value for name, value in scalars.items()
                if name.startswith("eval_")})
        return rows

    def close(self) -> None:
        self.tensorboard.close()


def checkpoint_micro_steps(config: PretrainConfig) -> List[int]:
    """The micro-steps a run saves a checkpoint at: every checkpoint_every steps, and the last.
    Its CheckpointManager keeps the last keep_checkpoints of them, so a finished run's
    settings alone name its checkpoints (a run carried without its weights, say)."""
    accumulation = config.gradient_accumulation_steps
    every, last = config.checkpoint_every * accumulation, config.train_steps * accumulation
    return sorted(set(range(every, last + 1, every)) | {last})


def save_checkpoint(manager: tf.train.CheckpointManager, write_dir: str, step: int) -> str:
    """manager.save, and on failure (a full disk...) no half-written `ckpt-N_temp/` or
    `ckpt-N.*` left behind: an OSError naming the checkpoint and the last complete one."""
    try:
        return manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as error:
        prefix = os.path.join(write_dir, f"ckpt-{step}")
        for path in tf.io.gfile.glob(prefix + "_temp*") + tf.io.gfile.glob(prefix + ".*"):
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
        message = getattr(error, "message", None) or str(error)
        raise OSError(f"writing checkpoint {prefix} failed ({' '.join(message.split())}); "
                      f"removed its partial files; the last complete checkpoint is "
                      f"{manager.latest_checkpoint or 'none'}") from None


def _check_finite(rows: List[Dict[str, float]], schedule, accumulation: int) -> None:
    """TrainingDiverged at the first row whose loss or gradient norm is not finite."""
    for row in rows:
        loss, norm = row["loss"], row.get("grad_norm", 0.0)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            step = row["step"]
            raise TrainingDiverged(
                "pretraining", math.ceil(step / accumulation), loss, row.get("grad_norm"),
                float(schedule(step - 1)),
                kept="no checkpoint of it is written; the earlier ones are kept")


# The fields that decide a model's variables: a checkpoint of another value cannot be resumed.
_MODEL_FIELDS = ("model", "model_config", "vocab_size", "objective")


def _check_model_dir_config(config: PretrainConfig, latest: str) -> None:
    """Refuses a model_dir whose checkpoint was written for another model, naming both (the
    restore itself would only say which tensor shapes differ)."""
    path = os.path.join(config.model_dir, "pretrain_config.json")
    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path) as f:
        try:
            previous = json.load(f)
        except ValueError:
            return
    current = dataclasses.asdict(config)
    for fields in (previous, current):  # '' is the model's default objective
        fields["objective"] = fields.get("objective") or (
            "mlm" if fields.get("model") == "bert" else "lm")
    shown = lambda k, v: f"{v!r}" + (" (the model_config's)" if k == "vocab_size" and not v
                                     else "")  # noqa: E731
    differences = [f"{k} {shown(k, previous[k])} there, {shown(k, current[k])} now"
                   for k in _MODEL_FIELDS if k in previous and previous[k] != current[k]]
    if differences:
        raise ValueError(f"model_dir {config.model_dir} holds a checkpoint ({latest}) of "
                         f"another model: {'; '.join(differences)}. Use another --model_dir "
                         f"(or --init_checkpoint to start from its weights)")


def _restore(checkpoint: tf.train.Checkpoint, latest: str, config: PretrainConfig) -> None:
    try:
        checkpoint.restore(latest).assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        message = getattr(e, "message", None) or str(e)
        raise ValueError(f"checkpoint {latest} in model_dir does not fit this model "
                         f"({config.model} {config.model_config}): "
                         f"{' '.join(message.split())[:300]}. Use another --model_dir") from e


def _drop_metrics_after(path: str, step: int) -> None:
    """Keeps the metrics.jsonl rows of steps <= `step` (the restored one): a killed run may
    have logged steps past its last checkpoint, which the resumed run logs again."""
    if not tf.io.gfile.exists(path):
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the kill
            if row.get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    atomic_write_text(path, "".join(kept))


def _next_batch(iterator, config: PretrainConfig):
    """The next training batch; a data error names the shard (tf.data cannot)."""
    try:
        return next(iterator)
    except tf.errors.DataLossError as e:
        problems = input_pipeline.find_corrupt_records(config.input_files)
        named = "; ".join(f"{path}: {problem}" for path, problem in problems.items())
        raise ValueError(f"corrupt record file in input_files: "
                         f"{named or input_pipeline._error_text(e)}") from e


def run_pretraining(config: PretrainConfig, strategy: Optional[tf.distribute.Strategy] = None,
                    log: Callable[[str], None] = print) -> List[Dict[str, float]]:
    """Trains until `config.train_steps` optimizer updates, resuming from `model_dir`.

    Returns the metrics of the steps run by this call (one dict per micro-step; after a
    recovery from divergence, those of the resumed run).
    Changes no process-wide setting: the model gets the dtype policy and `config.seed`
    explicitly, and op determinism (`deterministic`) is on only during the call. With
    `num_cpu_devices`, the caller splits the CPU first (tfmodels.training.configure_cpu_devices,
    as the binary's main does).
    """
    # The strategy first: multi-worker collectives must be configured before anything
    # initialises the TensorFlow runtime.
    strategy = strategy or make_strategy(config.strategy, config.tpu, config.num_cpu_devices)
    # One writer per model_dir: a second pretraining into it is refused, naming this one.
    with (exclusive_folder(config.model_dir, "pretraining", log) if is_chief(strategy)
          else contextlib.nullcontext()), op_determinism(config.deterministic):
        for trial in range(config.recovery_max_trials + 1):
            try:
                return _train(config, strategy, log)
            except TrainingDiverged as error:
                if trial == config.recovery_max_trials:
                    raise
                # Resuming reads the newest checkpoint, all of it written before the bad
                # window (_check_finite runs first), and drops the metrics logged after it.
                config = dataclasses.replace(
                    config, learning_rate=config.learning_rate * config.recovery_lr_factor)
                latest = tf.train.latest_checkpoint(config.model_dir)
                log(f"{error}; recovery {trial + 1} of {config.recovery_max_trials}: resuming "
                    f"from the last good checkpoint ({latest or 'none yet: the start'}) at "
                    f"learning rate {config.learning_rate:g}")
        raise AssertionError("unreachable")


def _train(config: PretrainConfig, strategy: tf.distribute.Strategy,
           log: Callable[[str], None]) -> List[Dict[str, float]]:
    chosen = precision.resolve_precision(config.mixed_precision, config.jit_compile,
                                         strategy=strategy)
    log(chosen.describe())
    config = dataclasses.replace(config, mixed_precision=chosen.policy,
                                 jit_compile=chosen.jit_compile)
    policy = config.mixed_precision or "float32"
    accumulation = config.gradient_accumulation_steps
    micro_steps = config.train_steps * accumulation
    micro_batch = config.global_batch_size // accumulation
    loss_fn = loss_function(config)
    chief = is_chief(strategy)
    # Every shard checked before step 1: an empty or truncated one is refused by name,
    # and a corpus smaller than one global batch (which would never fill it) too.
    input_pipeline.check_record_files(config.input_files, config.global_batch_size,
                                      batch="global batch (--global_batch_size)")
    if config.eval_input_files:
        input_pipeline.check_record_files(config.eval_input_files, micro_batch,
                                          what="eval_input_files")
    # The schedule counts optimizer iterations, which Keras advances every micro-step; built
    # once, the optimizer follows it and the logs read it.
    schedule = WarmupDecaySchedule(config.learning_rate, micro_steps,
                                   config.warmup_steps * accumulation, config.decay_shape)
    with strategy.scope():
        model = build_model(config, dtype=policy)
        optimizer = create_optimizer(
            schedule, optimizer=config.optimizer, weight_decay=config.weight_decay,
            beta_2=config.beta_2,
            gradient_accumulation_steps=accumulation if accumulation > 1 else None,
            loss_scale=config.mixed_precision == "mixed_float16")
        step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="micro_step")
    train_step = TrainStep(model, optimizer, loss_fn, strategy,
                           jit_compile=config.jit_compile, clip_norm=config.clip_norm,
                           report_grad_norm=True)
    # Dropout's seed-generator states are not tracked by the model's checkpoint
    # dependencies; without them a resumed run would draw different dropout masks.
    seed_states = [v for v in model.non_trainable_variables if "seed_generator" in v.path]
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_counter,
                                     seed_states=seed_states)
    write_dir = _write_dir(config.model_dir, strategy)
    manager = tf.train.CheckpointManager(checkpoint, write_dir, config.keep_checkpoints,
                                         step_counter=step_counter)
    # Every worker restores from the chief's folder: it holds the only complete history.
    latest = tf.train.latest_checkpoint(config.model_dir)
    if latest:
        _check_model_dir_config(config, latest)
        _restore(checkpoint, latest, config)
        log(f"resumed from {latest} at micro-step {int(step_counter.numpy())}")
    elif config.init_checkpoint:
        source = _resolve_checkpoint(config.init_checkpoint)
        tf.train.Checkpoint(model=model).read(source).expect_partial()
        log(f"model weights initialised from {source}")
    step = int(step_counter.numpy())
    # The input position is the step: distributed iterators cannot be checkpointed
    # (tensorflow#56372), so each pipeline, deterministic for a seed, skips the batches
    # already consumed. The skip reads records but does not parse them.
    iterator = iter(input_pipeline.distribute_dataset(
        strategy, dataset_function(config, micro_batch, skip_batches=step)))
    if chief:
        tf.io.gfile.makedirs(config.model_dir)
        with open(os.path.join(config.model_dir, "pretrain_config.json"), "w") as f:
            json.dump(dataclasses.asdict(config), f, indent=2)
        # The settings asked for (auto?) and why they resolved as they did: beside the
        # config, which holds the resolved ones and must stay a PretrainConfig's fields.
        with open(os.path.join(config.model_dir, "precision.json"), "w") as f:
            json.dump(chosen.as_dict(), f, indent=2)
    if chief:
        _drop_metrics_after(os.path.join(config.model_dir, "metrics.jsonl"), step)
    metric_log = MetricLog(config.model_dir, enabled=chief)
    evaluator = None
    if config.eval_input_files:
        evaluator = Evaluator(model, loss_fn, strategy,
                              dataset_function(config, micro_batch, training=False),
                              config.eval_batches)
    log(f"{config.model} {config.model_config}: {model.count_params():,} parameters, "
        f"{strategy.num_replicas_in_sync} replica(s) ({type(strategy).__name__}), "
        f"policy {policy}, jit_compile={config.jit_compile}")
    history: List[Dict[str, float]] = []
    window_start, window_step = time.perf_counter(), step
    tokens_per_micro_step = micro_batch * config.seq_length
    saved_at = set(checkpoint_micro_steps(config))
    bar = Progress(micro_steps, "pretrain", unit="micro-steps")
    bar.last = step   # a resumed run counts on from its checkpoint
    while step < micro_steps:
        metrics = train_step(_next_batch(iterator, config))
        step += 1
        step_counter.assign(step)
        metric_log.add(step, metrics)
        if step % bar.log_every == 0 or step == micro_steps or bar.interactive:
            bar.update(step, loss=float(metrics["loss"]))
        at_checkpoint = step in saved_at
        at_eval = evaluator is not None and (
            step % (config.eval_every * accumulation) == 0 or step == micro_steps)
        if step % config.log_every == 0 or step == micro_steps or at_checkpoint or at_eval:
            seconds = time.perf_counter() - window_start
            extra = {"tokens_per_second": (step - window_step) * tokens_per_micro_step
                     / max(seconds, 1e-9),
                     "learning_rate": float(schedule(step - 1))}
            if at_eval:
                extra.update(evaluator())
            rows = metric_log.flush(extra)
            # Before any checkpoint or model of this window is written: a diverged run stops
            # here and keeps its last good checkpoint.
            _check_finite(rows, schedule, accumulation)
            history.extend(rows)
            last = rows[-1]
            shown = {k: v for k, v in last.items() if k not in ("step",)}
            log(f"step {step // accumulation}/{config.train_steps}  " + "  ".join(
                f"{k} {v:.4g}" for k, v in shown.items()))
            window_start, window_step = time.perf_counter(), step
        if at_checkpoint:
            save_checkpoint(manager, write_dir, step)
            if not chief:
                shutil.rmtree(write_dir, ignore_errors=True)
    metric_log.close()   # every write was flushed: a run that raises above loses nothing
    if chief:
        model.save(os.path.join(config.model_dir, "pretrained.keras"))
    return history
