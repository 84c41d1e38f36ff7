"""The GPT-1 language model as a served kind: the next-token distribution after a text and
generation (finetune.export.heads.LanguageModelHead). It is not fine-tuned through a TaskSpec:
pretraining trains it (pretraining.trainer) and finetune.api.LanguageModel serves it."""
from __future__ import annotations

from finetune.export.heads import LanguageModelHead
from finetune.kinds.base import TaskKind


class LanguageModelKind(TaskKind):
    name = "language_model"
    input_formats = ("gpt",)

    def serving_head(self, spec):
        return LanguageModelHead(spec)

    def check_serving(self, seq_length, max_query_length) -> None:
        pass  # any window of at least one token


LANGUAGE_MODEL = LanguageModelKind()
