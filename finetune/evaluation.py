"""Evaluation of a fine-tuned model: batched prediction in length order (`Predictor`), one
small decoder per task kind (`DECODERS`: argmax classes, a regression scalar, SQuAD spans with
null scores, NER word tags), the task metric (`score`, SQuAD v2.0's null threshold tuned on
these examples) and the prediction files (`write_predictions`)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from finetune import batching
from finetune import predictions as prediction_files
from finetune.config import FinetuneConfig
from finetune.data import Split
from finetune.features import EncodedFeatures, decode_word_predictions, predict_answers
from finetune.tasks import TaskSpec
from tfmodels.progress import Progress


class Predictor:
    """Batched inference under the strategy: model outputs for every feature, in order.
    Rows are run in length order, each batch only as wide as its longest (finetune.batching)."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy,
                 output_keys: Sequence[str], batch_size: int, sequence_outputs: bool = False,
                 pad_to_max_length: bool = False):
        self.batch_size = batch_size
        self.sequence_outputs = sequence_outputs
        self.pad_to_max_length = pad_to_max_length
        self.predict_batch = batching.distributed_predictor(model, strategy, output_keys)

    def __call__(self, features: EncodedFeatures) -> Dict[str, np.ndarray]:
        bar = Progress(len(features), "evaluate", unit="rows")
        return batching.predict_in_length_order(
            self.predict_batch, features.inputs(), self.batch_size, self.sequence_outputs,
            self.pad_to_max_length, progress=bar.update)


# ---- decoding: the only per-kind code ------------------------------------------------------------

@dataclasses.dataclass
class Decoded:
    """Per-example predictions in the form the task metric takes (class ids, floats, answer
    texts, tag lists), plus what the prediction files add (probabilities, null odds)."""

    predictions: List[Any]
    probabilities: Optional[np.ndarray] = None
    null_scores: Optional[List[float]] = None   # SQuAD: null score - best non-null score


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _decode_classes(outputs, split, config) -> Decoded:
    logits = outputs["logits"]
    return Decoded(logits.argmax(-1).tolist(), probabilities=_softmax(logits))


def _decode_regression(outputs, split, config) -> Decoded:
    return Decoded(outputs["predictions"].astype(float).tolist())


def _decode_spans(outputs, split, config) -> Decoded:
    answers = predict_answers(outputs["start_logits"], outputs["end_logits"],
                              split.features.metadata, n_best_size=config.n_best_size,
                              max_answer_length=config.max_answer_length, version_2=False)
    ordered = [answers[ex.qid] for ex in split.examples]
    return Decoded([a.text for a in ordered], null_scores=[a.score_diff for a in ordered])


def _decode_tags(outputs, split, config) -> Decoded:
    logits = outputs["logits"]
    return Decoded([decode_word_predictions(logits[i], feature)
                    for i, feature in enumerate(split.features.metadata)])


@dataclasses.dataclass(frozen=True)
class KindDecoder:
    output_keys: Tuple[str, ...]
    decode: Callable[[Dict[str, np.ndarray], Split, FinetuneConfig], Decoded]
    gold: Callable[[Any, TaskSpec], Any]     # example -> what the metric compares against
    sequence_outputs: bool = False           # outputs have a per-position axis (span, tags)

    def predictor(self, model, strategy, config: "FinetuneConfig") -> "Predictor":
        return Predictor(model, strategy, self.output_keys, config.eval_batch_size,
                         self.sequence_outputs, config.pad_to_max_length)


DECODERS: Dict[str, KindDecoder] = {
    "classification": KindDecoder(("logits",), _decode_classes,
                                  lambda ex, task: task.label_names.index(ex.label)),
    "regression": KindDecoder(("predictions",), _decode_regression, lambda ex, task: float(ex.label)),
    "multiple_choice": KindDecoder(("logits",), _decode_classes, lambda ex, task: int(ex.label)),
    "span": KindDecoder(("start_logits", "end_logits"), _decode_spans,
                        lambda ex, task: [a for a, _ in ex.answers] or [""],
                        sequence_outputs=True),
    "token_classification": KindDecoder(("logits",), _decode_tags,
                                        lambda ex, task: list(ex.tags), sequence_outputs=True),
}


def score(task: TaskSpec, examples: Sequence[Any], decoded: Decoded,
          config: FinetuneConfig) -> Dict[str, float]:
    """task.metric on the decoded predictions. SQuAD v2.0 also tunes the null threshold on these
    examples (official `best_f1_thresh`) and reports the metrics at it as the main numbers."""
    gold = [DECODERS[task.kind].gold(ex, task) for ex in examples]
    if not task.null_answers:
        return task.metric(gold, decoded.predictions)
    metrics = task.metric(gold, decoded.predictions, null_scores=decoded.null_scores,
                          threshold=config.null_threshold)
    if config.tune_null_threshold:
        tuned = metrics["best_f1_thresh"]
        metrics = {**task.metric(gold, decoded.predictions, null_scores=decoded.null_scores,
                                 threshold=tuned), "null_threshold": tuned}
    else:
        metrics["null_threshold"] = config.null_threshold
    return metrics


def final_answers(task: TaskSpec, decoded: Decoded, threshold: float) -> List[Any]:
    """Predictions as written: SQuAD v2.0 answers "" where the null score beats `threshold`."""
    if not task.null_answers:
        return decoded.predictions
    return ["" if s > threshold else p for p, s in zip(decoded.predictions, decoded.null_scores)]


def write_predictions(task: TaskSpec, split: Split, decoded: Decoded, folder: str,
                      threshold: float = 0.0) -> List[str]:
    """The task's prediction file(s) in `folder`; returns the paths written."""
    examples, preds = split.examples, final_answers(task, decoded, threshold)
    if task.name in prediction_files.GLUE_SUBMISSION_FILES:
        return [prediction_files.write_glue_predictions(
            task.name, preds, folder, indices=[ex.guid for ex in examples])]
    path = os.path.join(folder, "predictions.jsonl")
    if task.kind == "span":
        written = prediction_files.write_squad_predictions(
            os.path.join(folder, "predictions.json"),
            {ex.qid: p for ex, p in zip(examples, preds)},
            null_odds=({ex.qid: s for ex, s in zip(examples, decoded.null_scores)}
                       if task.null_answers else None))
        return list(written.values())
    if task.kind == "token_classification":
        return [prediction_files.write_ner_jsonl(path, examples, preds)]
    if task.kind == "multiple_choice":
        return [prediction_files.write_choice_predictions(
            path, [ex.guid for ex in examples], preds, decoded.probabilities,
            [ex.label for ex in examples])]
    records = []
    for i, ex in enumerate(examples):
        record = {"guid": ex.guid, "prediction": (task.label_names[preds[i]]
                                                  if task.kind == "classification" else preds[i])}
        if decoded.probabilities is not None:
            record["probabilities"] = decoded.probabilities[i].tolist()
        if ex.label is not None:
            record["label"] = ex.label
        records.append(record)
    return [prediction_files.write_jsonl(path, records)]
