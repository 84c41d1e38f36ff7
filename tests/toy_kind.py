"""A task kind that is not in the library, in one file: counting (Poisson regression).

tests/test_task_kinds.py registers it and a task of it, then fine-tunes, exports and serves it
through the library's own binary code, to show that a new kind needs this file and two
registry entries, and no change anywhere else.

The task: how many times does "good" occur in a text? The head reads the sequence summary and
predicts a log-rate; the loss is Poisson's negative log-likelihood; a prediction is the rate.
"""
from __future__ import annotations

from typing import Dict, List

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from finetune import predictions as prediction_files
from finetune.examples import TextExample
from finetune.export.heads import Head
from finetune.export.signatures import TEXT
from finetune.features.sequence import encode_text_examples
from finetune.kinds import Decoded, TaskKind
from finetune.losses import batch_label
from finetune.models import TaskModel
from finetune.text_inputs import pack_texts


@keras.saving.register_keras_serializable(package="toy")
class CountModel(TaskModel):
    """call(inputs) -> {"log_rate": float32 [b]}."""

    def __init__(self, backbone, **kwargs):
        super().__init__(backbone, **kwargs)
        self.rate = self._dense(1, "rate")

    def call(self, inputs, training=None):
        encoded = self.encode(inputs, training=training)
        return self._finish({"log_rate": self._project(self.rate, encoded.summary,
                                                       training)[:, 0]}, encoded)


class CountHead(Head):
    text_inputs = {"text": TEXT}

    def encode(self, packer, texts):
        return pack_texts(packer, packer.tokenize(texts["text"])), None

    def decode(self, outputs, inputs):
        return {"count": tf.exp(outputs["log_rate"])}


def count_metrics(labels, predictions) -> Dict[str, float]:
    labels, predictions = np.asarray(labels, float), np.asarray(predictions, float)
    return {"exact": float(np.mean(np.round(predictions) == labels)),
            "mae": float(np.mean(np.abs(predictions - labels)))}


class CountKind(TaskKind):
    name = "toy_count"
    output_keys = ("log_rate",)

    def num_labels(self, task) -> int:
        return 1

    def encode(self, examples, input_format, tokenizer, seq_length, label_names=(), **options):
        return encode_text_examples(examples, input_format, tokenizer, seq_length,
                                    regression=True)

    def build_model(self, task, backbone, **options):
        return CountModel(backbone, **options)

    def head_loss(self, outputs, batch):
        log_rate = outputs["log_rate"]
        counts = ops.cast(ops.reshape(batch_label(batch, "label"), (-1,)), "float32")
        loss = ops.mean(ops.exp(log_rate) - counts * log_rate)
        return {"loss": loss, "poisson_nll": loss}

    def decode(self, outputs, examples, features, options) -> Decoded:
        return Decoded(np.exp(outputs["log_rate"]).astype(float).tolist())

    def gold(self, example, task) -> float:
        return float(example.label)

    def write_task_predictions(self, task, examples, decoded, predictions, path) -> List[str]:
        return [prediction_files.write_jsonl(
            path, [{"guid": e.guid, "prediction": p} for e, p in zip(examples, predictions)])]

    def serving_head(self, spec):
        return CountHead(spec)


COUNT = CountKind()


def read_counts(path: str, split: str) -> List[TextExample]:
    """One text per line; the label is how often "good" occurs in it."""
    with open(path, encoding="utf-8") as f:
        texts = [line.strip() for line in f if line.strip()]
    return [TextExample(f"{path}:{i + 1}", t, None, float(t.split().count("good")))
            for i, t in enumerate(texts)]


def write_count_data(path, n: int = 96, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = ["the", "film", "was", "plot", "and", "cast", "good"]
    lines = [" ".join(rng.choice(words, size=int(rng.integers(3, 9)), p=[.15] * 6 + [.1]))
             for _ in range(n)]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
