"""Evaluation of a fine-tuned model: batched prediction in length order (`Predictor`), then the
task kind's decoding and metric (finetune.kinds: argmax classes, a regression scalar, SQuAD
spans with null scores and v2.0's tuned threshold, NER word tags)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from finetune import batching
from finetune.features import EncodedFeatures
from finetune.kinds import Decoded, DecodeOptions
from finetune.tasks import TaskSpec
from tfmodels.progress import Progress


class Predictor:
    """Batched inference under the strategy: model outputs for every feature, in order.
    Rows are run in length order, each batch only as wide as its longest (finetune.batching)."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy,
                 output_keys: Sequence[str], batch_size: int, sequence_outputs: bool = False,
                 pad_to_max_length: bool = False, progress_label: Optional[str] = "evaluate"):
        self.batch_size = batch_size
        self.sequence_outputs = sequence_outputs
        self.pad_to_max_length = pad_to_max_length
        self.progress_label = progress_label     # None: no progress line
        self.predict_batch = batching.distributed_predictor(model, strategy, output_keys)

    def __call__(self, features: EncodedFeatures) -> Dict[str, np.ndarray]:
        bar = (Progress(len(features), self.progress_label, unit="rows")
               if self.progress_label is not None else None)
        return batching.predict_in_length_order(
            self.predict_batch, features.inputs(), self.batch_size, self.sequence_outputs,
            self.pad_to_max_length, progress=bar.update if bar else None)


def predict_and_decode(model: keras.Model, task: TaskSpec, examples: Sequence[Any],
                       features: EncodedFeatures, strategy: tf.distribute.Strategy,
                       batch_size: int, options: DecodeOptions,
                       pad_to_max_length: bool = False,
                       progress_label: Optional[str] = "evaluate") -> Decoded:
    """The model's outputs for every feature, decoded per example by the task's kind
    (`progress_label`: the progress line's name on stderr; None: none)."""
    kind = task.kind
    outputs = Predictor(model, strategy, kind.output_keys, batch_size, kind.sequence_outputs,
                        pad_to_max_length, progress_label)(features)
    return kind.decode(outputs, examples, features, options)


def evaluate(model: keras.Model, task: TaskSpec, examples: Sequence[Any],
             features: EncodedFeatures, strategy: tf.distribute.Strategy, batch_size: int,
             options: DecodeOptions,
             pad_to_max_length: bool = False) -> Tuple[Dict[str, float], Decoded]:
    """(the task metric, the decoded predictions) of `model` on these examples."""
    decoded = predict_and_decode(model, task, examples, features, strategy, batch_size, options,
                                 pad_to_max_length)
    return task.kind.score(task, examples, decoded, options), decoded


def constant_answer_scores(task: TaskSpec, examples: Sequence[Any],
                           options: DecodeOptions) -> Dict[str, float]:
    """What answering every example the same scores with the task's metric: the commonest gold
    label (classification, multiple choice) or the mean target (regression), the baseline a
    model must beat. {} for kinds without one (spans, tags)."""
    answer = task.kind.constant_answer(task, examples)
    if answer is None or not examples:
        return {}
    decoded = Decoded([answer] * len(examples))
    return {k: float(v) for k, v in task.kind.score(task, examples, decoded, options).items()}
