"""The one fine-tuning loop. The fine-tuning binary's sweep (finetune.trainer), the Python API's
`fit` (finetune.api) and the ablations (through the binary's `run_finetune`) all train here:

    trained = train(task_model, task, features, TrainOptions(learning_rate=2e-5), strategy)

One place for the schedule (steps from epochs, warmup as a fraction of them), the optimizer
(AdamW with the papers' decay exclusions, warmup + linear decay: tfmodels.optimization), the
freezing policy (finetune.freezing, gradual unfreezing included), the step (tfmodels.training
.TrainStep: global-norm clipping of the all-reduced gradient, optional XLA) on length-bucketed
batches (finetune.batching), progress on stderr, and Keras callbacks with a `History` of
per-epoch means.

The model and its dtype policy are the caller's: build it under `strategy.scope()` with the
`dtype=` it should compute in. Nothing here changes process-wide state.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Dict, Optional, Sequence

import keras
import tensorflow as tf

from finetune import batching, freezing
from finetune.features import EncodedFeatures
from finetune.losses import task_loss
from finetune.models import backbone_architecture
from tfmodels.optimization import WarmupDecaySchedule, create_optimizer
from tfmodels.progress import Progress
from tfmodels.training import TensorBoardLog, TrainingDiverged, TrainStep

__all__ = ["TrainOptions", "Schedule", "Trained", "TrainingDiverged", "TensorBoardLog",
           "plan_schedule", "train", "mean_loss"]


class DivergenceWatch:
    """Finds the first step whose loss or gradient norm is not finite, on the device: a few
    tensor ops per step and no host sync; `check` (at the loop's sync points) raises."""

    def __init__(self, label: str, learning_rate: Callable[[int], float]):
        self.label, self.learning_rate = label, learning_rate
        self.first_bad = tf.constant(-1)
        self.bad = (tf.constant(0.0), tf.constant(0.0))

    def update(self, step: int, metrics: Dict[str, Any]) -> None:
        loss = tf.cast(metrics["loss"], tf.float32)
        norm = tf.cast(metrics.get("grad_norm", 0.0), tf.float32)
        finite = tf.math.is_finite(loss) & tf.math.is_finite(norm)
        first = (self.first_bad < 0) & ~finite
        self.first_bad = tf.where(first, step, self.first_bad)
        self.bad = (tf.where(first, loss, self.bad[0]), tf.where(first, norm, self.bad[1]))

    def check(self, has_grad_norm: bool) -> None:
        step = int(self.first_bad)
        if step >= 0:
            raise TrainingDiverged(self.label, step, float(self.bad[0]),
                                   float(self.bad[1]) if has_grad_norm else None,
                                   self.learning_rate(step))


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """How one model trains. `from_config` reads them from a FinetuneConfig (the binary); the
    Python API's `fit` takes them as arguments."""

    learning_rate: float = 5e-5
    batch_size: int = 32
    epochs: float = 3.0
    train_steps: int = 0               # > 0 overrides epochs
    warmup_fraction: float = 0.1       # BERT 0.1, GPT-1 0.002 (finetune.config.WARMUP_FRACTION)
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-6
    clip_norm: float = 1.0
    loss: str = "cross_entropy"        # or soft_f1 (finetune.losses.LOSSES)
    lm_weight: float = 0.5             # GPT-1's auxiliary LM (ignored for BERT)
    freezing: str = "full"             # finetune.freezing.FREEZING_POLICIES
    top_k: int = 0
    unfreeze_layers_per_stage: int = 1
    unfreeze_steps_per_stage: int = 0  # gradual: 0 = one epoch
    jit_compile: bool = False
    loss_scale: bool = False           # dynamic loss scaling (mixed_float16)
    pad_to_max_length: bool = False
    seed: int = 0                      # the batches' shuffle
    log_every: int = 100               # a log line every N steps
    summary_every: int = 20            # TensorBoard train/ scalars every N steps

    @classmethod
    def from_config(cls, config, learning_rate: float, seed: int) -> "TrainOptions":
        return cls(
            learning_rate=learning_rate, batch_size=config.train_batch_size,
            epochs=config.epochs, train_steps=config.train_steps,
            warmup_fraction=config.resolved_warmup_fraction, weight_decay=config.weight_decay,
            adam_epsilon=config.adam_epsilon, clip_norm=config.clip_norm, loss=config.loss,
            lm_weight=config.lm_weight, freezing=config.freezing, top_k=config.top_k,
            unfreeze_layers_per_stage=config.unfreeze_layers_per_stage,
            unfreeze_steps_per_stage=config.unfreeze_steps_per_stage,
            jit_compile=bool(config.jit_compile),
            loss_scale=config.mixed_precision == "mixed_float16",
            pad_to_max_length=config.pad_to_max_length, seed=seed, log_every=config.log_every)


@dataclasses.dataclass(frozen=True)
class Schedule:
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int

    @property
    def epochs(self) -> int:
        """Epochs the loop runs (the last one partial for fractional epochs)."""
        return math.ceil(self.total_steps / self.steps_per_epoch)


def plan_schedule(num_features: int, options: TrainOptions) -> Schedule:
    """Steps per epoch (whole batches), total steps and warmup steps of one run."""
    steps_per_epoch = num_features // options.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{num_features} training examples are fewer than one batch of "
                         f"{options.batch_size}; lower the batch size")
    total = options.train_steps or max(1, int(round(options.epochs * steps_per_epoch)))
    return Schedule(total, steps_per_epoch, int(round(options.warmup_fraction * total)))


@dataclasses.dataclass
class Trained:
    """What one training run leaves besides the trained weights."""

    schedule: Schedule
    history: keras.callbacks.History
    seconds_per_step: float
    train_seconds: float
    final_loss: float


def train(model: keras.Model, task, features: EncodedFeatures, options: TrainOptions,
          strategy: tf.distribute.Strategy,
          callbacks: Sequence[keras.callbacks.Callback] = (),
          callback_model: Optional[keras.Model] = None, log: Callable[[str], None] = print,
          label: str = "fine-tune", verbose: bool = True,
          tensorboard: Optional[TensorBoardLog] = None,
          validate: Optional[Callable[[int], Dict[str, float]]] = None) -> Trained:
    """Trains `model` (a finetune.models.TaskModel built in `strategy.scope()`) on the encoded
    training features of `task`.

    callbacks: Keras callbacks; they see `callback_model` (default `model`: the API passes its
      wrapper so EarlyStopping's weight restore and `stop_training` act on it). Batch logs are
      the step's metrics as tensors; epoch logs (and the returned History) the epoch's means.
    tensorboard: where train/ scalars go (TensorBoardLog; None: nowhere).
    validate: called after every epoch with the steps done; its metrics (named `val_*`, as
      Keras names them) join the epoch's logs, so EarlyStopping / ModelCheckpoint can monitor
      them, and go to TensorBoard's eval/ without the prefix.
    Raises TrainingDiverged when the loss or the gradient norm is not finite.
    """
    schedule = plan_schedule(len(features), options)
    total = schedule.total_steps
    if options.freezing != "gradual":
        freezing.apply_freezing(model, options.freezing, options.top_k)
    # Built once: the optimizer follows it and the logs read it.
    learning_rate = WarmupDecaySchedule(options.learning_rate, total, schedule.warmup_steps,
                                        "linear")
    with strategy.scope():
        optimizer = create_optimizer(learning_rate, weight_decay=options.weight_decay,
                                     epsilon=options.adam_epsilon,
                                     loss_scale=options.loss_scale)
        unfreezing = None
        if options.freezing == "gradual":
            unfreezing = freezing.GradualUnfreezing(
                model, options.unfreeze_layers_per_stage,
                options.unfreeze_steps_per_stage or schedule.steps_per_epoch)
            # One optimizer for all stages: built on every variable any stage trains.
            optimizer.build(unfreezing.trainable_candidates())
    loss_fn = task_loss(task, backbone_architecture(model), options.lm_weight, loss=options.loss)
    batches = strategy.experimental_distribute_dataset(batching.train_dataset(
        {**features.inputs(), **features.labels()}, options.batch_size, options.seed,
        options.pad_to_max_length))
    # The batches' spec (sequence axis open) as the step's signature: one trace for every
    # bucket width instead of one per width.
    make_step = lambda: TrainStep(model, optimizer, loss_fn, strategy,
                                  jit_compile=options.jit_compile, clip_norm=options.clip_norm,
                                  input_signature=batches.element_spec, report_grad_norm=True)
    rate_at = lambda step: float(learning_rate(step))
    # Step k (1-based) ran at the schedule's value for k - 1 updates done.
    watch = DivergenceWatch(label, lambda step: rate_at(step - 1))
    tensorboard = tensorboard or TensorBoardLog()
    train_step = make_step()
    iterator = iter(batches)
    log(f"{label}: {total} steps ({schedule.steps_per_epoch}/epoch, {schedule.warmup_steps} "
        f"warmup), {model.count_params():,} parameters, policy {model.dtype_policy.name}")

    watched = callback_model or model
    watched.stop_training = False
    callback_list = keras.callbacks.CallbackList(list(callbacks), add_history=True,
                                                 model=watched)
    bar = Progress(total, label) if verbose else None
    metrics: Dict[str, Any] = {}
    done = 0
    start = timed_from = interval_start = time.perf_counter()
    interval_steps = 0
    callback_list.on_train_begin()
    for epoch in range(schedule.epochs):
        callback_list.on_epoch_begin(epoch)
        sums: Dict[str, Any] = {}
        ran = 0
        for batch in range(min(schedule.steps_per_epoch, total - done)):
            if unfreezing is not None and unfreezing.update(done):
                train_step = make_step()  # the trainable set changed: retrace
            callback_list.on_train_batch_begin(batch)
            metrics = train_step(next(iterator))
            if done == 0:
                float(metrics["loss"])  # wait for the first (tracing) step
                timed_from = time.perf_counter()
            done += 1
            ran += 1
            interval_steps += 1
            # Summed and watched as tensors: no host sync per step, only at the sync points
            # below (progress, log lines, summaries) and at epoch ends.
            sums = {k: sums.get(k, 0.0) + v for k, v in metrics.items()}
            watch.update(done, metrics)
            callback_list.on_train_batch_end(batch, metrics)
            shown = bar is not None and (done % bar.log_every == 0 or done == total
                                         or bar.interactive)
            logged = done % options.log_every == 0 or done == total
            summarized = done % options.summary_every == 0 or done == total
            if shown or logged or summarized:
                watch.check("grad_norm" in metrics)
            if shown:
                bar.update(done, loss=float(metrics["loss"]))
            if logged:
                log(f"  step {done}/{total}  " + "  ".join(
                    f"{k} {float(v):.4g}" for k, v in metrics.items()))
            if summarized and tensorboard.log_dir:
                now = time.perf_counter()
                tensorboard.write("train", done, {
                    **{k: float(v) for k, v in metrics.items()},
                    "learning_rate": rate_at(done - 1),
                    "examples_per_second": interval_steps * options.batch_size
                    / max(now - interval_start, 1e-9)})
                interval_start, interval_steps = now, 0
            if watched.stop_training:
                break
        watch.check("grad_norm" in metrics)
        epoch_logs = {k: float(v) / ran for k, v in sums.items()}
        if validate is not None:
            epoch_logs.update(validate(done))
            tensorboard.write("eval", done, {k[len("val_"):]: v for k, v in epoch_logs.items()
                                             if k.startswith("val_")})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if watched.stop_training:
            break
    callback_list.on_train_end()
    end = time.perf_counter()
    history = next(c for c in callback_list.callbacks if isinstance(c, keras.callbacks.History))
    return Trained(schedule, history,
                   seconds_per_step=(end - timed_from) / (done - 1) if done > 1 else end - start,
                   train_seconds=end - start, final_loss=float(metrics["loss"]))


def mean_loss(model: keras.Model, task, features: EncodedFeatures, lm_weight: float = 0.5,
              loss: str = "cross_entropy", batch_size: int = 64) -> float:
    """The training loss of `model` on labelled features in inference mode (no dropout), as a
    mean over examples: what Keras reports as `val_loss`."""
    loss_fn = task_loss(task, backbone_architecture(model), lm_weight, loss=loss)
    arrays = {**features.inputs(), **features.labels()}
    total, count = 0.0, 0
    for start in range(0, len(features), batch_size):
        batch = {k: v[start:start + batch_size] for k, v in arrays.items()}
        rows = len(next(iter(batch.values())))
        total += float(loss_fn(model(batch, training=False), batch)["loss"]) * rows
        count += rows
    return total / count
