"""Length-aware batching: no compute spent on [PAD].

Features are stored with `seq_length` columns (finetune.features); real tokens are 20-50% of
them on GLUE. Training groups rows of similar length and trims every batch to its longest row,
rounded up to a multiple of `LENGTH_MULTIPLE` (so a jit-compiled step sees at most
seq_length / 8 shapes); evaluation sorts rows by length, trims each batch the same way and
puts the outputs back in the original order. Padding is at the end of every row and the models
mask it, so a row's outputs do not depend on the width it is computed at.

`pad_to_max_length=True` keeps one static width (seq_length) everywhere: TPUs.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from finetune.features.common import SEQUENCE_KEYS

LENGTH_MULTIPLE = 8
# Where a sequence output (span / tag logits) is padded back to seq_length: below any real
# logit, so padded positions never enter a SQuAD n-best list.
PADDED_LOGIT = -1e4


def row_lengths(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Real tokens of each row [n]; rows with views (choices, both orders) take their longest."""
    mask = arrays["input_mask"]
    lengths = (mask > 0).sum(-1)
    return lengths.reshape(len(mask), -1).max(-1)


def batch_widths(lengths: np.ndarray, seq_length: int,
                 multiple: int = LENGTH_MULTIPLE) -> np.ndarray:
    """Each row's bucket: its length rounded up to `multiple`, at most seq_length."""
    return np.minimum(seq_length, -(-np.maximum(lengths, 1) // multiple) * multiple)


def trim(arrays: Mapping[str, np.ndarray], width: int) -> Dict[str, np.ndarray]:
    """Cuts the sequence axis (the last) of SEQUENCE_KEYS arrays to `width`."""
    return {k: v[..., :width] if k in SEQUENCE_KEYS else v for k, v in arrays.items()}


def _signature(arrays: Mapping[str, np.ndarray], batch_size: int, fixed: bool):
    return {k: tf.TensorSpec((batch_size,) + tuple(
        None if (k in SEQUENCE_KEYS and i == v.ndim - 2 and not fixed) else d
        for i, d in enumerate(v.shape[1:])), tf.as_dtype(v.dtype)) for k, v in arrays.items()}


def epoch_batches(widths: np.ndarray, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """Row indices [steps, batch_size] of one epoch: rows shuffled with (seed, epoch), grouped
    by bucket, cut into batches, and the batch order shuffled. Each epoch leaves out a random
    n % batch_size rows (not always the longest ones)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(widths))
    order = order[:len(order) - len(order) % batch_size]
    order = order[np.argsort(widths[order], kind="stable")]
    batches = order.reshape(-1, batch_size)
    return batches[rng.permutation(len(batches))]


def train_dataset(arrays: Mapping[str, np.ndarray], batch_size: int, seed: int,
                  pad_to_max_length: bool = False) -> tf.data.Dataset:
    """Endless shuffled training batches (inputs + labels) of exactly `batch_size` rows.

    Length-bucketed (default): each batch as wide as its bucket. pad_to_max_length: every batch
    seq_length wide, rows shuffled with `seed` as a plain shuffled dataset would.
    """
    arrays = dict(arrays)
    n = len(arrays["input_ids"])
    if n < batch_size:
        raise ValueError(f"{n} training features are fewer than one batch of {batch_size}")
    seq_length = arrays["input_ids"].shape[-1]
    widths = (np.full(n, seq_length) if pad_to_max_length
              else batch_widths(row_lengths(arrays), seq_length))

    def batches() -> Iterator[Dict[str, np.ndarray]]:
        epoch = 0
        while True:
            for rows in epoch_batches(widths, batch_size, seed, epoch):
                yield trim({k: v[rows] for k, v in arrays.items()}, int(widths[rows].max()))
            epoch += 1

    return tf.data.Dataset.from_generator(
        batches, output_signature=_signature(arrays, batch_size, pad_to_max_length)
    ).prefetch(2)


def predict_in_length_order(predict_batch: Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]],
                            inputs: Mapping[str, np.ndarray], batch_size: int,
                            sequence_outputs: bool = False, pad_to_max_length: bool = False,
                            progress: Optional[Callable[[int], None]] = None
                            ) -> Dict[str, np.ndarray]:
    """Outputs of `predict_batch` for every row, in the original order.

    Rows are sorted by length and each batch trimmed to its longest (pad_to_max_length: input
    order, full width); the last batch is filled with copies of its final row, whose outputs are
    dropped. sequence_outputs: outputs have a sequence axis 1 (span and tag logits), padded back
    to seq_length with PADDED_LOGIT.
    """
    n = len(inputs["input_ids"])
    seq_length = inputs["input_ids"].shape[-1]
    if pad_to_max_length:
        order = np.arange(n)
        widths = np.full(n, seq_length)
    else:
        widths = batch_widths(row_lengths(inputs), seq_length)
        order = np.argsort(widths, kind="stable")
    padded = np.concatenate([order, np.repeat(order[-1:], -n % batch_size)])
    chunks: Dict[str, list] = {}
    for start in range(0, len(padded), batch_size):
        rows = padded[start:start + batch_size]
        outputs = predict_batch(trim({k: v[rows] for k, v in inputs.items()},
                                     int(widths[rows].max())))
        for k, v in outputs.items():
            if sequence_outputs and v.shape[1] < seq_length:
                pad = [(0, 0), (0, seq_length - v.shape[1])] + [(0, 0)] * (v.ndim - 2)
                v = np.pad(v, pad, constant_values=PADDED_LOGIT)
            chunks.setdefault(k, []).append(v)
        if progress is not None:
            progress(min(start + batch_size, n))
    result = {}
    for k, parts in chunks.items():
        stacked = np.concatenate(parts)[:n]
        out = np.empty_like(stacked)
        out[order] = stacked
        result[k] = out
    return result


def padding_stats(arrays: Mapping[str, np.ndarray], batch_size: int,
                  pad_to_max_length: bool = False, seed: int = 0) -> Dict[str, float]:
    """Real tokens / computed positions of one training epoch (benchmarks, logs)."""
    n = len(arrays["input_ids"])
    seq_length = arrays["input_ids"].shape[-1]
    lengths = row_lengths(arrays)
    views = int(np.prod(arrays["input_ids"].shape[1:-1], dtype=np.int64))
    real = int((np.asarray(arrays["input_mask"]) > 0).sum())
    if pad_to_max_length:
        computed = n * views * seq_length
    else:
        widths = batch_widths(lengths, seq_length)
        computed = sum(int(widths[rows].max()) * len(rows) * views
                       for rows in epoch_batches(widths, min(batch_size, n), seed, 0))
        computed = computed * n / max(1, (n // batch_size) * batch_size)
    return {"real_tokens": real, "computed_positions": computed,
            "useful_fraction": real / max(1, computed)}


def distributed_predictor(model, strategy: tf.distribute.Strategy,
                          output_keys: Sequence[str]) -> Callable[[Dict[str, np.ndarray]],
                                                                  Dict[str, np.ndarray]]:
    """One batch (numpy dict) -> numpy outputs, split over the strategy's replicas. On one
    replica the tf.function is traced once for every width; over several, at most 3 times."""

    def replica(batch):
        outputs = model(batch, training=False)
        return {k: outputs[k] for k in output_keys}

    def run(batch):
        per_replica = strategy.run(replica, args=(batch,))
        return {k: strategy.gather(v, axis=0) for k, v in per_replica.items()}

    steps = {}

    def predict(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if strategy.num_replicas_in_sync > 1:
            dataset = tf.data.Dataset.from_tensors(batch)
            batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
            step = steps.setdefault("distributed", tf.function(run, autograph=False,
                                                               reduce_retracing=True))
        elif "one" not in steps:
            # Batch and sequence axes open (views stay static: heads need their count): one
            # trace for all batch sizes and widths.
            spec = {k: tf.TensorSpec([None, *np.shape(v)[1:-1], None] if np.ndim(v) > 1
                                     else [None], tf.as_dtype(np.asarray(v).dtype))
                    for k, v in batch.items()}
            step = steps["one"] = tf.function(run, autograph=False, input_signature=[spec])
        else:
            step = steps["one"]
        return {k: v.numpy() for k, v in step(batch).items()}

    return predict
