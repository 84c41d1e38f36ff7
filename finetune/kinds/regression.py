"""Regression of a pair to one score (STS-B): the classification head with one output unit and
a squared-error loss; GPT-1 reads both orders of the pair, as for its other similarity tasks."""
from __future__ import annotations

import math
import numbers
from typing import Dict, Optional

import numpy as np

from finetune.export.heads import RegressionHead
from finetune.kinds.base import Decoded, DecodeOptions
from finetune.kinds.classification import ClassificationKind
from finetune.losses import batch_label, regression_loss


class RegressionKind(ClassificationKind):
    name = "regression"
    output_keys = ("predictions",)
    supports_soft_f1 = False
    regression = True

    def num_labels(self, task) -> int:
        return 1

    def head_loss(self, outputs, batch) -> Dict:
        return regression_loss(outputs["predictions"], batch_label(batch, "label"))

    def decode(self, outputs, examples, features, options: DecodeOptions) -> Decoded:
        return Decoded(outputs["predictions"].astype(float).tolist())

    def gold(self, example, task) -> float:
        return float(example.label)

    def constant_answer(self, task, examples) -> Optional[float]:
        # The mean target: what a model that ignores its input scores at best on squared error.
        return float(np.mean([self.gold(e, task) for e in examples])) if examples else None

    def written(self, task, prediction) -> float:
        return prediction

    def serving_head(self, spec):
        return RegressionHead(spec)

    def api_label(self, value, model) -> float:
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value):
            raise ValueError(f"target {value!r} is not a finite number")
        return float(value)

    def api_predictions(self, decoded: Decoded, model) -> np.ndarray:
        return np.asarray(decoded.predictions, np.float32)

    def api_labels(self, decoded: Decoded, model):
        return decoded.predictions


REGRESSION = RegressionKind()
