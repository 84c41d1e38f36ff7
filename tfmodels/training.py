"""One training step that works the same on one device, under tf.distribute strategies, with
XLA and with mixed precision, and the strategies themselves by name. Pretraining and
fine-tuning loops both drive them."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Dict, Iterator, Optional

import keras
import tensorflow as tf
# TensorFlow exports only enable_op_determinism; reading and undoing it live in this module.
from tensorflow.python.framework import config as tf_framework_config

LossFn = Callable[[Dict, Dict], Dict[str, tf.Tensor]]
# tf.distribute strategies by name (pretraining's --strategy, fine-tuning's
# --distribution_strategy).
DISTRIBUTION_STRATEGIES = ("one_device", "mirrored", "multi_worker", "tpu")


def configure_cpu_devices(count: int) -> None:
    """Splits the CPU into `count` logical devices, so `mirrored` runs real cross-device
    all-reduce without accelerators (testing). Process-wide and possible only before
    TensorFlow initialises its runtime: a binary's `main` calls it first, before
    `make_strategy`. A no-op for count < 2 or when the split is already configured."""
    if count < 2:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    if tf.config.get_logical_device_configuration(cpu) is None:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def check_cpu_devices(count: int) -> None:
    """Refuses a run asking for `count` logical CPUs the process was not split into
    (`configure_cpu_devices` is the binary's to call, before the runtime starts)."""
    if count < 2:
        return
    found = len(tf.config.list_logical_devices("CPU"))
    if found < count:
        raise ValueError(f"num_cpu_devices={count} but the process has {found} logical CPU "
                         f"device(s): call tfmodels.training.configure_cpu_devices({count}) "
                         f"before TensorFlow starts (the binaries' main does)")


@contextlib.contextmanager
def op_determinism(enabled: bool) -> Iterator[None]:
    """TensorFlow op determinism on inside the block when `enabled`, then back to what it was
    (it is process-wide: a library call must not leave it changed)."""
    before = tf_framework_config.is_op_determinism_enabled()
    if enabled and not before:
        tf_framework_config.enable_op_determinism()
    try:
        yield
    finally:
        if tf_framework_config.is_op_determinism_enabled() != before:
            if before:
                tf_framework_config.enable_op_determinism()
            else:
                tf_framework_config.disable_op_determinism()


def make_strategy(name: str, tpu: str = "", num_cpu_devices: int = 0) -> tf.distribute.Strategy:
    """one_device (first GPU, else CPU) | mirrored (all GPUs, else the logical CPUs) |
    multi_worker (TF_CONFIG) | tpu.

    num_cpu_devices: the logical CPUs a mirrored run without GPUs expects; the process must
    already be split (`configure_cpu_devices`, which binaries call in `main`)."""
    if name == "multi_worker":
        # Before anything else touches the runtime (listing devices initialises it, and
        # collectives must be configured at start-up).
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy multi_worker needs TF_CONFIG (cluster and task) set")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    check_cpu_devices(num_cpu_devices)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    raise ValueError(f"unknown strategy {name!r}")


class TensorBoardLog:
    """TensorBoard event files under `log_dir`, one folder per run name: fine-tuning and
    pretraining write `train/` (loss, learning_rate, grad_norm, throughput, the step's
    metrics) and `eval/` (held-out metrics under the same tags), so TensorBoard overlays the
    two curves. No directory: nothing is written."""

    def __init__(self, log_dir: str = ""):
        self.log_dir = log_dir
        self._writers: Dict[str, Any] = {}

    def write(self, run: str, step: int, scalars: Dict[str, float]) -> None:
        if not self.log_dir or not scalars:
            return
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))
        with self._writers[run].as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, float(value))
        self._writers[run].flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class TrainingDiverged(ValueError):
    """The loss or the gradient norm stopped being finite. A ValueError: the binaries report it
    in one line and exit 2; a fine-tuning sweep marks the run diverged and never selects it."""

    def __init__(self, label: str, step: int, loss: float, grad_norm: Optional[float],
                 learning_rate: float, kept: str = "nothing of this run is saved"):
        self.step, self.loss, self.learning_rate = step, loss, learning_rate
        norm = "" if grad_norm is None else f", gradient norm {grad_norm:.4g}"
        super().__init__(f"{label}: diverged at step {step}: loss {loss:.4g}{norm} at learning "
                         f"rate {learning_rate:.3g}; {kept} (lower the learning rate)")


def _scale(grads, factor):
    """Multiplies dense and sparse (IndexedSlices, from embedding lookups) gradients."""
    return [tf.IndexedSlices(g.values * factor, g.indices, g.dense_shape)
            if isinstance(g, tf.IndexedSlices) else g * factor for g in grads]


class TrainStep:
    """Computes the loss and gradients (optionally XLA-compiled) and applies them.

    model: a Keras model called as `model(batch, training=True)` -> outputs dict.
    loss_fn: (outputs, batch) -> dict with a scalar `loss` and any metrics (per replica).
    strategy: a tf.distribute strategy; the model and optimizer must have been created in
      its scope. Batches passed to `__call__` are distributed batches
      (`strategy.experimental_distribute_dataset` or `distribute_datasets_from_function`).

    clip_norm: clip the global gradient norm (of the gradient summed over replicas).
    input_signature: the (distributed) batch's spec; None dims are traced once for all sizes.
    report_grad_norm: also return `grad_norm`, the global norm before clipping (free when
      clipping; without clip_norm, one more reduction over the gradients).

    Each replica's loss is divided by the replica count because the optimizer all-reduces
    gradients with a SUM; the returned metrics are the mean over replicas.
    """

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 loss_fn: LossFn, strategy: Optional[tf.distribute.Strategy] = None,
                 jit_compile: bool = False, clip_norm: Optional[float] = None,
                 input_signature=None, report_grad_norm: bool = False):
        self.model = model
        self.clip_norm = clip_norm
        self.report_grad_norm = report_grad_norm
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.strategy = strategy or tf.distribute.get_strategy()
        # Create the optimizer's slots now, in the strategy's scope: variables created lazily
        # inside the first distributed tf.function step break under MirroredStrategy.
        with self.strategy.scope():
            optimizer.build(model.trainable_variables)
        # XLA compiles the forward and backward pass; the optimizer update runs outside it
        # because cross-replica merge calls cannot be compiled by XLA.
        self._grads = tf.function(self._compute_gradients, jit_compile=jit_compile,
                                  reduce_retracing=True)
        # input_signature (e.g. a distributed dataset's element_spec with an open sequence
        # axis): one trace for batches of every width, as length-bucketed fine-tuning sends.
        self._step = (tf.function(self._distributed_step, input_signature=[input_signature])
                      if input_signature is not None
                      else tf.function(self._distributed_step, reduce_retracing=True))

    def _compute_gradients(self, batch):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.model(batch, training=True)
            metrics = self.loss_fn(outputs, batch)
            loss = metrics["loss"] / self.strategy.num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        # Embedding lookups give IndexedSlices with one slice per token occurrence, so indices
        # repeat. Keras' Adam squares the slices before summing the repeats (its second moment
        # gets sum(g_i^2) instead of (sum g_i)^2), and all-reduces of IndexedSlices concatenate
        # them: embeddings not also used densely got a wrong update (BERT's token and segment
        # embeddings in fine-tuning, its segment embeddings in pretraining, GPT-1's tokens
        # without the tied aux LM; found by tools/training_parity against torch). Dense
        # gradients give Adam's exact update, as in torch and google-research/bert.
        return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                for g in grads], metrics

    def _clip(self, grads):
        """(the gradients to apply, their global norm before clipping or None)."""
        if not self.clip_norm:
            # Without clipping the norm is the replica's own gradient's (exact on one replica).
            return grads, (tf.linalg.global_norm(grads) if self.report_grad_norm else None)
        replicas = self.strategy.num_replicas_in_sync
        if replicas > 1:
            # Keras optimizers clip per replica before their own all-reduce, which clips the
            # wrong (partial) gradient. Reduce here, clip the true global gradient, and hand
            # each replica 1/replicas of it so the optimizer's SUM restores it exactly.
            grads = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, grads)
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # Clip the unscaled gradient; the optimizer still sees the scaled one.
            scale = tf.cast(self.optimizer.dynamic_scale, tf.float32)
            grads, norm = tf.clip_by_global_norm(_scale(grads, 1.0 / scale), self.clip_norm)
            grads = _scale(grads, scale)
        else:
            grads, norm = tf.clip_by_global_norm(grads, self.clip_norm)
        return (_scale(grads, 1.0 / replicas) if replicas > 1 else grads), norm

    def replica_step(self, batch):
        """One step on this replica's batch, in a replica context (`strategy.run`): what
        Keras' own distributed train function calls (finetune.api)."""
        grads, metrics = self._grads(batch)
        grads, norm = self._clip(grads)
        self.optimizer.apply(grads, self.model.trainable_variables)
        if self.report_grad_norm:
            metrics = {**metrics, "grad_norm": norm}
        return metrics

    def _distributed_step(self, batch):
        per_replica = self.strategy.run(self.replica_step, args=(batch,))
        return {name: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                for name, value in per_replica.items()}

    def __call__(self, batch) -> Dict[str, tf.Tensor]:
        return self._step(batch)
