"""Multiple choice (SWAG, RACE, Story Cloze): one row per candidate ending, one scalar each,
softmax over the candidates (BERT's SWAG setup, GPT-1's multiple-choice transform)."""
from __future__ import annotations

from typing import List

import numpy as np

from finetune import predictions as prediction_files
from finetune import python_inputs
from finetune.examples import ChoiceExample
from finetune.export.heads import ChoiceHead
from finetune.features.sequence import encode_choice_examples
from finetune.kinds.classification import ClassIdKind
from finetune.models import MultipleChoiceModel


class MultipleChoiceKind(ClassIdKind):
    name = "multiple_choice"

    def num_labels(self, task) -> int:
        return task.num_choices

    def encode(self, examples, input_format, tokenizer, seq_length, label_names=(), **options):
        return encode_choice_examples(examples, input_format, tokenizer, seq_length)

    def build_model(self, task, backbone, **options):
        return MultipleChoiceModel(backbone, **options)

    def gold(self, example, task) -> int:
        return int(example.label)

    def write_task_predictions(self, task, examples, decoded, predictions, path) -> List[str]:
        return [prediction_files.write_choice_predictions(
            path, [e.guid for e in examples], predictions, decoded.probabilities,
            [e.label for e in examples])]

    def serving_head(self, spec):
        return ChoiceHead(spec)

    def serving_views(self, task, model) -> int:
        return task.num_choices

    def api_examples(self, x, y, model) -> List[ChoiceExample]:
        if isinstance(x, dict):
            rows = list(zip(x["context"], x.get("question") or [""] * len(x["context"]),
                            x["endings"]))
        else:
            rows = list(x)
        python_inputs.check_count(len(rows), y, "questions", "labels")
        text, choices = python_inputs.text, model.num_choices
        examples = []
        for i, row in enumerate(rows):
            if not (isinstance(row, (tuple, list)) and len(row) == 3):
                raise ValueError(f"item {i}: expected (context, question, endings), got {row!r}")
            context, question, endings = row
            endings = tuple(text(e) for e in endings)
            if len(endings) != choices:
                raise ValueError(f"item {i} has {len(endings)} endings, expected {choices}")
            label = None
            if y is not None:
                label = int(np.asarray(y[i]).item())
                if not 0 <= label < choices:
                    raise ValueError(f"label {label} is not an ending index in 0..{choices - 1}")
            examples.append(ChoiceExample(str(i), text(context), text(question), endings, label))
        return examples


MULTIPLE_CHOICE = MultipleChoiceKind()
