"""Classification of one text or a pair (GLUE, SNLI, SciTail): BERT's pooled [CLS], GPT-1's
classify state (its similarity tasks read both orders and sum them), dropout -> dense -> softmax
over the task's labels."""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List, Optional

import numpy as np

from finetune import predictions as prediction_files
from finetune import python_inputs
from finetune.python_inputs import labelled
from finetune.examples import TextExample
from finetune.export.heads import SequenceHead
from finetune.features.sequence import encode_text_examples
from finetune.kinds.base import Decoded, DecodeOptions, TaskKind, softmax
from finetune.losses import batch_label, classification_loss
from finetune.models import SequenceClassifier, backbone_input_format


class ClassIdKind(TaskKind):
    """Kinds whose head gives one logit per class (or per candidate): cross-entropy, argmax
    decoding with probabilities, and the commonest gold label as the constant answer."""

    def head_loss(self, outputs, batch) -> Dict:
        return classification_loss(outputs["logits"], batch_label(batch, "label"))

    def decode(self, outputs, examples, features, options: DecodeOptions) -> Decoded:
        logits = outputs["logits"]
        return Decoded(logits.argmax(-1).tolist(), probabilities=softmax(logits))

    def constant_answer(self, task, examples) -> Optional[int]:
        gold = [self.gold(e, task) for e in examples]
        return max(sorted(set(gold)), key=gold.count) if gold else None  # ties: smallest id


class ClassificationKind(ClassIdKind):
    name = "classification"
    encode_option_names = ("symmetric",)
    supports_soft_f1 = True
    regression = False

    def encode_options(self, task, input_format, settings) -> Dict[str, Any]:
        # GPT-1's similarity transform (both orders of the pair); BERT reads a pair once.
        return {"symmetric": task.similarity} if input_format == "gpt" else {}

    def encode(self, examples, input_format, tokenizer, seq_length, label_names=(), **options):
        return encode_text_examples(examples, input_format, tokenizer, seq_length, label_names,
                                    regression=self.regression, **options)

    def build_model(self, task, backbone, **options):
        if backbone_input_format(backbone) == "gpt":
            options.setdefault("symmetric", task.similarity)
        return SequenceClassifier(backbone, self.num_labels(task), regression=self.regression,
                                  **options)

    def gold(self, example, task) -> int:
        return task.label_names.index(example.label)

    def write_task_predictions(self, task, examples, decoded, predictions, path) -> List[str]:
        records = []
        for i, example in enumerate(examples):
            record = {"guid": example.guid, "prediction": self.written(task, predictions[i])}
            if decoded.probabilities is not None:
                record["probabilities"] = decoded.probabilities[i].tolist()
            if example.label is not None:
                record["label"] = example.label
            records.append(record)
        return [prediction_files.write_jsonl(path, records)]

    def written(self, task, prediction) -> Any:
        """A prediction as the JSONL file writes it: the label name."""
        return task.label_names[prediction]

    def serving_head(self, spec):
        return SequenceHead(spec)

    # ---- the Python API -----------------------------------------------------------------------

    def api_examples(self, x, y, model) -> List[TextExample]:
        a, b = python_inputs.text_columns(x, model.pair)
        python_inputs.check_count(len(a), y, "texts", "labels")
        labels = [None] * len(a) if y is None else [labelled(i, self.api_label, v, model)
                                                      for i, v in enumerate(y)]
        return [TextExample(str(i), t, None if b is None else b[i], labels[i])
                for i, t in enumerate(a)]

    def api_labels(self, decoded, model) -> List[str]:
        return [model.label_names[i] for i in decoded.predictions]

    def api_label(self, value, model) -> Any:
        """A label as given (a label name or a class id) -> the label name."""
        names = model.label_names
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, str):
            if value not in names:
                raise ValueError(f"label {value!r} is not one of {list(names)}")
            return value
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value):
            raise ValueError(f"label {value!r} is not a class id in 0..{len(names) - 1} or a "
                             f"label name")
        index = int(value)
        if not 0 <= index < len(names) or index != value:
            raise ValueError(f"label {value!r} is not a class id in 0..{len(names) - 1}")
        return names[index]


CLASSIFICATION = ClassificationKind()
