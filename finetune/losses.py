"""Fine-tuning losses: each task kind's head loss, soft F1 for imbalanced classification, and
GPT-1's auxiliary LM objective, combined by `task_loss` into the loss_fn(outputs, batch) that
tfmodels.training.TrainStep drives.

Outputs are the task models' (finetune.models); labels are read from the batch under the names
in LABEL_KEYS. Every loss computes in float32 whatever the dtype policy.
"""
from __future__ import annotations

from typing import Dict, Mapping

import keras
from keras import ops

from finetune.features.tokens import IGNORE_LABEL  # noqa: F401  (the label the losses skip)
from finetune.models import stack_views
from tfmodels.architectures import check_architecture, input_format
from tfmodels.losses import causal_lm_loss
from tfmodels.training import LossFn

# Classification training losses (`task_loss(loss=...)`); soft_f1 is for kind "classification".
LOSSES = ("cross_entropy", "soft_f1")
# Keeps soft F1's denominator away from 0 (a class neither present nor predicted).
SOFT_F1_EPSILON = 1e-7
# Where the loss finds each label: the first key present wins (the names of the design brief,
# then those finetune.features writes).
LABEL_KEYS = {
    "label": ("label_ids", "label"),
    "start": ("start_positions", "start_position"),
    "end": ("end_positions", "end_position"),
}


def batch_label(batch: Mapping, which: str):
    """The batch's `which` label ("label", "start", "end") under the first key present."""
    for key in LABEL_KEYS[which]:
        if key in batch:
            return batch[key]
    raise KeyError(f"the batch has none of the label keys {LABEL_KEYS[which]}; "
                   f"it has {sorted(batch)}")


def _masked_mean(values, weights):
    weights = ops.cast(weights, "float32")
    return ops.sum(values * weights) / ops.maximum(ops.sum(weights), 1e-5)


def _cross_entropy(labels, logits):
    """Per-example sparse CE from float32 logits: [...] int, [..., n] -> [...]."""
    return keras.losses.sparse_categorical_crossentropy(
        ops.cast(labels, "int32"), ops.cast(logits, "float32"), from_logits=True)


def _correct(labels, logits):
    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return ops.cast(ops.equal(predicted, ops.cast(labels, "int32")), "float32")


def classification_loss(logits, labels) -> Dict:
    """Mean CE and accuracy; logits [b, n] (classes, or candidates for multiple choice), labels
    int [b] (or [b, 1])."""
    labels = ops.reshape(labels, (-1,))
    return {"loss": ops.mean(_cross_entropy(labels, logits)),
            "accuracy": ops.mean(_correct(labels, logits))}


def soft_f1_loss(logits, labels) -> Dict:
    """1 - macro soft F1 over the batch, and accuracy; logits [b, n], labels int [b] (or [b, 1]).

    Optimises an F1-like objective directly, for imbalanced sets such as MRPC (F1) and CoLA.
    With p = softmax(logits), y = one-hot labels, per class c summed over the batch:
    tp = sum p_c y_c, fp = sum p_c (1 - y_c), fn = sum (1 - p_c) y_c and
    F1_c = 2 tp / (2 tp + fp + fn + eps). It is a batch-level statistic, so it needs reasonable
    batch sizes (a class absent from the batch scores F1_c = 0, a constant 1/n of the loss).
    """
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    logits = ops.cast(logits, "float32")
    probs = ops.softmax(logits, axis=-1)
    truth = ops.one_hot(labels, ops.shape(logits)[-1], dtype="float32")
    tp = ops.sum(probs * truth, axis=0)
    fp = ops.sum(probs * (1.0 - truth), axis=0)
    fn = ops.sum((1.0 - probs) * truth, axis=0)
    f1 = 2.0 * tp / (2.0 * tp + fp + fn + SOFT_F1_EPSILON)
    return {"loss": 1.0 - ops.mean(f1), "accuracy": ops.mean(_correct(labels, logits))}


def regression_loss(predictions, labels) -> Dict:
    """Mean squared error; predictions, labels float [b]."""
    error = ops.cast(predictions, "float32") - ops.cast(ops.reshape(labels, (-1,)), "float32")
    mse = ops.mean(ops.square(error))
    return {"loss": mse, "mse": mse}


def span_loss(start_logits, end_logits, start_positions, end_positions) -> Dict:
    """BERT's SQuAD loss: the mean of the start and end cross-entropies over the sequence."""
    start_positions = ops.reshape(start_positions, (-1,))
    end_positions = ops.reshape(end_positions, (-1,))
    start = ops.mean(_cross_entropy(start_positions, start_logits))
    end = ops.mean(_cross_entropy(end_positions, end_logits))
    return {"loss": (start + end) / 2.0, "start_loss": start, "end_loss": end,
            "start_accuracy": ops.mean(_correct(start_positions, start_logits)),
            "end_accuracy": ops.mean(_correct(end_positions, end_logits))}


def token_classification_loss(logits, label_ids) -> Dict:
    """Mean CE over the tokens whose label is not IGNORE_LABEL (any negative label is skipped);
    logits [b, s, n], label_ids int [b, s]."""
    weights = ops.greater_equal(label_ids, 0)
    safe = ops.where(weights, label_ids, 0)  # CE needs a valid class; the weight zeroes it
    return {"loss": _masked_mean(_cross_entropy(safe, logits), weights),
            "accuracy": _masked_mean(_correct(safe, logits), weights)}


def aux_lm_loss(lm_logits, inputs: Mapping):
    """GPT-1's L1 on the fine-tuning inputs: causal LM loss over the real tokens of every
    sequence (all candidates / both views), as one token-weighted mean."""
    inputs = stack_views(inputs)
    ids = inputs["input_ids"]
    seq = ops.shape(ids)[-1]
    mask = inputs.get("input_mask")
    return causal_lm_loss(
        ops.reshape(lm_logits, (-1, seq, ops.shape(lm_logits)[-1])), ops.reshape(ids, (-1, seq)),
        None if mask is None else ops.reshape(mask, (-1, seq)))["loss"]


def task_loss(task_spec, architecture: str = "bert", lm_weight: float = 0.5,
              loss: str = "cross_entropy") -> LossFn:
    """loss_fn(outputs, batch) -> {"loss", metrics...}: the head loss of `task_spec.kind`.

    GPT-1 with lm_weight > 0: loss = task loss + lm_weight * aux LM loss (L3 = L2 + lambda L1,
    lambda = 0.5), reported as `task_loss` and `lm_loss`; the model must return `lm_logits`
    (aux_lm=True). lm_weight is ignored for BERT, which has no auxiliary objective.
    architecture: "bert", "gpt" or "lstm" (GPT-1's LSTM baseline: GPT-1's objectives); an input
    format is an architecture name too.
    loss: the head's loss, one of LOSSES: "cross_entropy" (every kind's own loss) or "soft_f1"
    (`soft_f1_loss`; kinds with `supports_soft_f1`, i.e. classification).
    """
    check_architecture(architecture)
    if lm_weight < 0:
        raise ValueError(f"lm_weight must be >= 0, got {lm_weight}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    kind = task_spec.kind
    if loss == "soft_f1" and not kind.supports_soft_f1:
        raise ValueError(f"loss soft_f1 is for classification tasks; task "
                         f"{task_spec.name!r} is a {kind.name} task (use cross_entropy)")
    if loss == "soft_f1":
        head_loss = lambda outputs, batch: soft_f1_loss(outputs["logits"],
                                                        batch_label(batch, "label"))
    else:
        head_loss = kind.head_loss
    with_lm = input_format(architecture) == "gpt" and lm_weight > 0

    def loss_fn(outputs: Mapping, batch: Mapping) -> Dict:
        metrics = head_loss(outputs, batch)
        if with_lm:
            if "lm_logits" not in outputs:
                raise ValueError("lm_weight > 0 needs the model's lm_logits: build it with "
                                 "aux_lm=True, or pass lm_weight=0 (the 'without aux LM' ablation)")
            lm = aux_lm_loss(outputs["lm_logits"], batch)
            metrics["task_loss"] = metrics["loss"]
            metrics["lm_loss"] = lm
            metrics["loss"] = metrics["loss"] + lm_weight * lm
        return metrics

    return loss_fn
