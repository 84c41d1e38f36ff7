"""Whole-sequence tasks: classification, regression and pairs (TextExample), and multiple
choice (ChoiceExample), for BERT and GPT-1.

BERT reads `[CLS] A [SEP] (B [SEP])` and classifies the [CLS] state. GPT-1 reads its paper's
input transforms and classifies the final state at `classify_position`:
  classification   [s] text [e]
  entailment/pair  [s] premise [$] hypothesis [e]
  similarity       [s] A [$] B [e] and [s] B [$] A [e] (symmetric=True): a view axis of 2,
                   arrays [n, 2, seq], the head sums the two final states
  multiple choice  [s] context question [$] ending_k [e] per candidate, arrays [n, k, seq]
BERT multiple choice follows its SWAG setup: A = context, B = question (start phrase) + ending.
Texts are truncated longest-first so the special tokens always fit; the rows are built by
finetune.text_inputs, the code exported models run on raw text.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

import tensorflow as tf

from finetune.examples import ChoiceExample, TextExample
from finetune.features.common import (EncodedFeatures, Tokens, check_seq_length, check_text,
                                      check_tokens, example_error, in_chunks, label_index,
                                      labels_present, lookup_label, to_numpy)
from finetune.text_inputs import pack_choices, pack_texts


def _check_types(examples: Sequence, cls: type) -> None:
    if not examples:
        raise ValueError("no examples to encode")
    for i, ex in enumerate(examples):
        if not isinstance(ex, cls):
            raise ValueError(f"example {i} is a {type(ex).__name__}, expected {cls.__name__}")


def encode_text_examples(examples: Sequence[TextExample], model: str, tokenizer, seq_length: int,
                         label_names: Sequence[str] = (), regression: bool = False,
                         symmetric: bool = False) -> EncodedFeatures:
    """Single texts or pairs -> fixed-length inputs and a `label` (class id, or float).

    symmetric (GPT-1 only, every example a pair): both orders as a view axis [n, 2, ...];
    both views hold the same truncated texts, swapped.
    """
    _check_types(examples, TextExample)
    if symmetric and model != "gpt":
        raise ValueError("symmetric=True is GPT-1's similarity transform; BERT reads a pair "
                         "once with attention across both texts")
    # Labelled data with an empty text is a broken file; a text to predict may be empty, and
    # gets an answer as it does from the export ([CLS] [SEP] alone).
    predicting = all(ex.label is None for ex in examples)
    for ex in examples:
        if not predicting:
            check_text(ex.text_a, "example", ex.guid, "text_a")
        if ex.text_b is not None and not predicting:
            check_text(ex.text_b, "example", ex.guid, "text_b")
        elif ex.text_b is None and symmetric:
            raise example_error("example", ex.guid,
                                "symmetric=True needs a text pair; text_b is None")
    pairs = any(ex.text_b is not None for ex in examples)
    check_seq_length(seq_length, 1 + pairs, 1 + pairs, "a text pair" if pairs else "one text")

    tokens = Tokens(tokenizer, model, seq_length)
    ids_a = tokens.ragged([ex.text_a for ex in examples])
    paired = np.array([ex.text_b is not None for ex in examples])
    ids_b = tokens.ragged([ex.text_b for ex in examples if ex.text_b is not None])
    for name, ids, rows in (("text_a", ids_a, np.arange(len(examples))),
                            ("text_b", ids_b, np.flatnonzero(paired))):
        for i in np.flatnonzero(ids.row_lengths().numpy() == 0)[:0 if predicting else 1]:
            ex = examples[rows[i]]
            check_tokens([], "example", ex.guid, name, getattr(ex, name))
    # Singles and pairs are packed apart (a task has one or the other; tests mix them).
    arrays = {}
    for rows, b in ((np.flatnonzero(~paired), None), (np.flatnonzero(paired), ids_b)):
        if not len(rows):
            continue
        a = tf.gather(ids_a, rows)
        part = in_chunks(len(rows), lambda i, j: to_numpy(pack_texts(
            tokens.packer, a[i:j], None if b is None else b[i:j], symmetric, width=seq_length)))
        for k, v in part.items():
            arrays.setdefault(k, np.zeros((len(examples),) + v.shape[1:], v.dtype))[rows] = v
    arrays["example_index"] = np.arange(len(examples), dtype=np.int32)

    label_keys = ()
    if labels_present([ex.label for ex in examples], "example", [ex.guid for ex in examples]):
        arrays["label"] = (_float_labels(examples) if regression
                           else _class_labels(examples, label_names))
        label_keys = ("label",)
    return EncodedFeatures(arrays, tokens.input_keys(), label_keys)


def _class_labels(examples: Sequence[TextExample], label_names: Sequence[str]) -> np.ndarray:
    index = label_index(label_names)
    return np.array([lookup_label(index, ex.label, "example", ex.guid) for ex in examples],
                    np.int32)


def _float_labels(examples: Sequence[TextExample]) -> np.ndarray:
    values = []
    for ex in examples:
        try:
            value = float(ex.label)
        except (TypeError, ValueError):
            raise example_error("example", ex.guid,
                                f"regression label {ex.label!r} is not a number") from None
        if not math.isfinite(value):
            raise example_error("example", ex.guid, f"regression label {ex.label!r} is not finite")
        values.append(value)
    return np.array(values, np.float32)


def encode_choice_examples(examples: Sequence[ChoiceExample], model: str, tokenizer,
                           seq_length: int) -> EncodedFeatures:
    """One sequence per candidate ending -> arrays [n, num_choices, seq] and `label` [n].

    All examples must have the same number of endings (static shapes). `question` may be "".
    """
    _check_types(examples, ChoiceExample)
    num_choices = len(examples[0].endings)
    for ex in examples:
        if len(ex.endings) != num_choices or num_choices < 2:
            raise example_error("example", ex.guid,
                                f"has {len(ex.endings)} endings; expected {num_choices} like "
                                f"example {examples[0].guid!r} (at least 2)")
        check_text(ex.context, "example", ex.guid, "context")
        if not isinstance(ex.question, str):
            raise example_error("example", ex.guid, "question must be a string (\"\" for none)")
        for k, ending in enumerate(ex.endings):
            check_text(ending, "example", ex.guid, f"ending {k}")
    with_question = model == "gpt" and any(ex.question.strip() for ex in examples)
    check_seq_length(seq_length, 2, 2 + with_question, "context + question / ending pairs")

    tokens = Tokens(tokenizer, model, seq_length)
    n = len(examples)
    contexts = tokens.ragged([ex.context for ex in examples])
    questions = tokens.ragged([ex.question for ex in examples])
    endings = tokens.ragged([e for ex in examples for e in ex.endings])
    for i in np.flatnonzero(contexts.row_lengths().numpy() == 0)[:1]:
        check_tokens([], "example", examples[i].guid, "context", examples[i].context)
    for i in np.flatnonzero(endings.row_lengths().numpy() == 0)[:1]:
        ex, k = examples[i // num_choices], i % num_choices
        check_tokens([], "example", ex.guid, f"ending {k}", ex.endings[k])
    arrays = in_chunks(n, lambda i, j: to_numpy(pack_choices(
        tokens.packer, contexts[i:j], questions[i:j], endings[i * num_choices:j * num_choices],
        num_choices, width=seq_length)))
    arrays["example_index"] = np.arange(n, dtype=np.int32)

    label_keys = ()
    if labels_present([ex.label for ex in examples], "example", [ex.guid for ex in examples]):
        for ex in examples:
            if not isinstance(ex.label, (int, np.integer)) or not 0 <= ex.label < num_choices:
                raise example_error("example", ex.guid, f"label {ex.label!r} is not an ending "
                                    f"index 0..{num_choices - 1}")
        arrays["label"] = np.array([ex.label for ex in examples], np.int32)
        label_keys = ("label",)
    return EncodedFeatures(arrays, tokens.input_keys(), label_keys)
