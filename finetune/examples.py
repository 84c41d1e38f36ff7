"""The example types every fine-tuning task reads into, one per task kind.

Readers (finetune/readers/) turn files into these; input encoders (finetune/features/) turn
them into model inputs for BERT or GPT-1; metrics and prediction writers consume their
labels. Keeping them plain dataclasses keeps the three stages independent and testable.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple, Union


@dataclasses.dataclass(frozen=True)
class TextExample:
    """One or two texts with a class label (str), a regression target (float) or none (test)."""

    guid: str                       # "<file>:<line>" or the dataset's own id
    text_a: str
    text_b: Optional[str] = None
    label: Union[str, float, None] = None


@dataclasses.dataclass(frozen=True)
class SpanExample:
    """A SQuAD question: the answer is a character span of `context` (v2.0: maybe none)."""

    qid: str
    question: str
    context: str
    # (answer text, character offset into context); several for dev sets, one for train.
    answers: Tuple[Tuple[str, int], ...] = ()
    is_impossible: bool = False
    # Index of the article in its file: held-out slices keep whole articles together, so no
    # evaluation question shares a context with a training one.
    article: int = 0


@dataclasses.dataclass(frozen=True)
class ChoiceExample:
    """Multiple choice (SWAG, RACE, Story Cloze): context (+ question) and candidate endings."""

    guid: str
    context: str
    question: str                   # SWAG: the ending's start (sent2); "" for Story Cloze
    endings: Tuple[str, ...]
    label: Optional[int] = None     # index into endings


@dataclasses.dataclass(frozen=True)
class TokenExample:
    """A tokenised sentence with one tag per word (CoNLL-2003 NER)."""

    guid: str
    words: Tuple[str, ...]
    tags: Optional[Tuple[str, ...]] = None


Example = Union[TextExample, SpanExample, ChoiceExample, TokenExample]
ExampleList = List[Example]
