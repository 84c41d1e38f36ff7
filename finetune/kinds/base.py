"""The TaskKind base class: everything that differs between task kinds, in one object.

A kind (classification, regression, span, tagging, multiple choice, the GPT-1 LM) answers every
question the fine-tuning code, the exports and the Python API ask about a task, so none of them
branches on a kind's name:

  encoding    examples -> EncodedFeatures through the one in-graph text path (finetune.features)
  the head    the TaskModel that reads the backbone (finetune.models) and its loss
  decoding    model outputs -> per-example predictions, gold labels and the task metric
  files       the prediction files a run writes
  serving     the serving head of the exported signatures (finetune.export.heads)
  Python API  raw Python inputs -> examples, and what `predict` returns

The pieces themselves (encoders, losses, heads, metrics, writers) stay in their modules, where
they are tested on their own; a kind composes them. Adding a kind is one new module with a
subclass, plus one line in finetune/kinds/__init__.py (`register`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from finetune import predictions as prediction_files
from tfmodels.preprocessing import INPUT_FORMATS


@dataclasses.dataclass
class Decoded:
    """Per-example predictions in the form the task metric takes (class ids, floats, answer
    texts, tag lists), plus what the prediction files add (probabilities, null odds)."""

    predictions: List[Any]
    probabilities: Optional[np.ndarray] = None
    null_scores: Optional[List[float]] = None   # SQuAD: null score - best non-null score


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """What decoding reads beyond the model outputs. Explicit, so the Python API and tools
    decode without a run config; `from_settings` takes the fields from any object that has
    them (a FinetuneConfig)."""

    n_best_size: int = 20            # SQuAD: start / end candidates per window
    max_answer_length: int = 30      # SQuAD: longest answer, in pieces
    null_threshold: float = 0.0      # SQuAD v2.0: answer "" when null - best > threshold
    tune_null_threshold: bool = True  # SQuAD v2.0: choose the threshold on these examples

    @classmethod
    def from_settings(cls, settings: Any) -> "DecodeOptions":
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)
                      if hasattr(settings, f.name)})


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


class TaskKind:
    """One task kind. Subclasses set the class attributes and implement the methods that raise
    NotImplementedError; the defaults fit kinds with one `logits` output and class-id labels."""

    name: str = ""
    # Input formats with an input transform for this kind (neither paper gives GPT-1 one for
    # span or tagging tasks).
    input_formats: Tuple[str, ...] = INPUT_FORMATS
    # The model outputs decoding reads, and whether they have a per-position axis.
    output_keys: Tuple[str, ...] = ("logits",)
    sequence_outputs: bool = False
    # Options `encode` accepts beyond the common arguments (anything else is a typo).
    encode_option_names: Tuple[str, ...] = ()
    # Whether the head may train with soft F1 (finetune.losses.soft_f1_loss).
    supports_soft_f1: bool = False

    def __repr__(self) -> str:
        return f"<task kind {self.name}>"

    # ---- checks -------------------------------------------------------------------------------

    def problems(self, task, input_format: str) -> List[str]:
        """What is wrong with fine-tuning `task` with this input format (empty: nothing)."""
        if input_format not in self.input_formats:
            return [f"task {task.name!r} is a {self.name} task, which only "
                    f"{' and '.join(f.upper() for f in self.input_formats)} does (GPT-1 has no "
                    f"input transform for it); use --model=bert"]
        return []

    def num_labels(self, task) -> int:
        """Output units of the head."""
        return len(task.label_names)

    # ---- encoding -----------------------------------------------------------------------------

    def encode_options(self, task, input_format: str, settings: Any) -> Dict[str, Any]:
        """The `encode` options of a run (settings: a FinetuneConfig or an object with the
        fields the kind reads)."""
        return {}

    def encode(self, examples: Sequence[Any], input_format: str, tokenizer: Any,
               seq_length: int, label_names: Sequence[str] = (), **options: Any):
        """Examples -> EncodedFeatures (finetune.features)."""
        raise NotImplementedError

    def holdout_group(self):
        """Key of examples that must stay on one side of a held-out cut (None: any row)."""
        return None

    # ---- the head and its loss ----------------------------------------------------------------

    def head_options(self, task, input_format: str, options: Dict[str, Any]) -> Dict[str, Any]:
        """The head's constructor options from the run's (a kind drops what it does not use)."""
        return dict(options)

    def build_model(self, task, backbone, **options):
        """The TaskModel for `task` on `backbone` (finetune.models)."""
        raise NotImplementedError

    def head_loss(self, outputs: Mapping, batch: Mapping) -> Dict:
        """{"loss", metrics...} of the head's outputs against the batch's labels."""
        raise NotImplementedError

    # ---- decoding and metrics -----------------------------------------------------------------

    def decode(self, outputs: Mapping[str, np.ndarray], examples: Sequence[Any], features,
               options: DecodeOptions) -> Decoded:
        raise NotImplementedError

    def gold(self, example: Any, task) -> Any:
        """What the metric compares a prediction with."""
        raise NotImplementedError

    def score(self, task, examples: Sequence[Any], decoded: Decoded,
              options: DecodeOptions) -> Dict[str, float]:
        return task.metric([self.gold(e, task) for e in examples], decoded.predictions)

    def final_predictions(self, task, decoded: Decoded, threshold: float) -> List[Any]:
        """Predictions as written and returned (SQuAD v2.0 applies its null threshold)."""
        return decoded.predictions

    def constant_answer(self, task, examples: Sequence[Any]) -> Optional[Any]:
        """The prediction that answers every example the same, scored as a baseline (the
        commonest gold label; None where the kind has no such answer)."""
        return None

    # ---- files --------------------------------------------------------------------------------

    def write_predictions(self, task, examples: Sequence[Any], decoded: Decoded, folder: str,
                          threshold: float = 0.0) -> List[str]:
        """The task's prediction file(s) in `folder` (GLUE leaderboard TSVs for GLUE tasks);
        returns the paths written."""
        predictions = self.final_predictions(task, decoded, threshold)
        if task.name in prediction_files.GLUE_SUBMISSION_FILES:
            return [prediction_files.write_glue_predictions(
                task.name, predictions, folder, indices=[e.guid for e in examples])]
        return self.write_task_predictions(task, examples, decoded, predictions,
                                           os.path.join(folder, "predictions.jsonl"))

    def write_task_predictions(self, task, examples, decoded: Decoded, predictions,
                               path: str) -> List[str]:
        raise NotImplementedError

    # ---- serving ------------------------------------------------------------------------------

    def serving_head(self, spec):
        """The finetune.export.heads.Head that serves this kind."""
        raise NotImplementedError

    def serving_views(self, task, model) -> Optional[int]:
        """The view axis of a served request (candidates, GPT-1's two orders), or None."""
        return 2 if getattr(model, "symmetric", False) else None

    def check_serving(self, seq_length: int, max_query_length: int) -> None:
        if seq_length < 5:
            raise ValueError(f"seq_length {seq_length} is too short for the special tokens")

    # ---- the Python API (finetune.api) --------------------------------------------------------

    def api_examples(self, x: Any, y: Optional[Sequence[Any]], model) -> List[Any]:
        """Raw Python inputs (and labels) -> examples; `model` is the finetune.api model (its
        label names, pair-ness, number of choices)."""
        raise NotImplementedError

    def api_predictions(self, decoded: Decoded, model) -> Any:
        """What the API's `predict` returns (default: probabilities)."""
        return decoded.probabilities.astype(np.float32)

    def api_scores(self, scores: Dict[str, float]) -> Dict[str, float]:
        """The task's metrics on the API's one scale, fractions (as Keras and sklearn report
        them); results.json and the reports keep each metric's own convention."""
        return scores

    def api_labels(self, decoded: Decoded, model) -> List[Any]:
        """What the API's `predict_labels` returns: one answer per input."""
        return self.final_predictions(model.task_spec, decoded,
                                      model.decode_options.null_threshold)
