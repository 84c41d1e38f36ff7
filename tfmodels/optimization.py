"""Optimizers and learning-rate schedules of both papers.

BERT: Adam(W) with weight decay 0.01 that skips LayerNorm and bias, linear warmup then linear
decay. GPT-1: Adam, linear warmup then cosine decay (pretraining) or linear decay
(fine-tuning), L2 0.01 on non-bias/gain weights.
"""
from __future__ import annotations

import math

import keras
from keras import ops

# Variables named with any of these are not decayed (LayerNorm gains/biases, biases).
NO_DECAY_NAMES = ("gamma", "beta", "bias", "layer_norm", "LayerNorm")


@keras.saving.register_keras_serializable(package="tfmodels")
class WarmupDecaySchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then linear or cosine decay to
    `end_fraction * peak` at `total_steps` (and held there after)."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0,
                 decay: str = "linear", end_fraction: float = 0.0):
        if decay not in ("linear", "cosine", "constant"):
            raise ValueError(f"decay must be linear, cosine or constant, got {decay!r}")
        if total_steps <= 0 or warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError(
                f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}), "
                "total_steps > 0")
        self.peak = peak
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.decay = decay
        self.end_fraction = end_fraction

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.cast(self.warmup_steps, "float32")
        warm = self.peak * step / ops.maximum(warmup, 1.0)
        progress = ops.clip((step - warmup) / max(self.total_steps - self.warmup_steps, 1),
                            0.0, 1.0)
        if self.decay == "linear":
            shape = 1.0 - progress
        elif self.decay == "cosine":
            shape = 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            shape = ops.ones_like(progress)
        decayed = self.peak * (self.end_fraction + (1.0 - self.end_fraction) * shape)
        return ops.where(step < warmup, warm, decayed)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "decay": self.decay,
                "end_fraction": self.end_fraction}


def create_optimizer(learning_rate, total_steps: int = 0, warmup_steps: int = 0,
                     decay: str = "linear", optimizer: str = "adamw",
                     weight_decay: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.999,
                     epsilon: float = 1e-6,
                     gradient_accumulation_steps: int | None = None,
                     loss_scale: bool = False) -> keras.optimizers.Optimizer:
    """Builds AdamW or LAMB with the papers' decay exclusions and schedule.

    learning_rate: the peak of a WarmupDecaySchedule over total_steps (warmup_steps, decay),
    or a schedule already built, which a caller keeps to log the rate the optimizer uses.

    `loss_scale=True` wraps it in a dynamic LossScaleOptimizer (needed for mixed_float16).
    Gradient clipping is not set here: `TrainStep` clips the all-reduced gradient, because
    Keras optimizers clip each replica's partial gradient before summing them.
    """
    schedule = (learning_rate
                if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule)
                else WarmupDecaySchedule(learning_rate, total_steps, warmup_steps, decay))
    common = dict(learning_rate=schedule, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                  weight_decay=weight_decay,
                  gradient_accumulation_steps=gradient_accumulation_steps)
    if optimizer == "adamw":
        opt = keras.optimizers.AdamW(**common)
    elif optimizer == "lamb":
        opt = keras.optimizers.Lamb(**common)
    else:
        raise ValueError(f"optimizer must be adamw or lamb, got {optimizer!r}")
    opt.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    if loss_scale:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt
