"""What every input encoder shares: the features container, chunked in-graph tokenization,
label lookup and located errors.

Encoders for each task kind (sequence.py, squad.py, tokens.py) decide *which* texts go into a
row; truncation and BERT's `[CLS] A [SEP] B [SEP]` / GPT-1's `[start] A [delim] B [classify]`
layouts are `tfmodels.preprocessing.TextPacker`'s, the same code exported models run.
Arrays are stored at `seq_length` columns; length-aware batching (finetune.batching) trims
each batch to its longest row.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfmodels.preprocessing import (BERT_INPUT_KEYS, GPT_INPUT_KEYS, TextPacker,
                                    ragged_from_lists)
from tfmodels.preprocessing import INPUT_FORMATS
_TOKENIZE_CHUNK = 8192  # texts per in-graph call: one TF call per chunk, not per text
# Arrays whose last axis is the sequence: what length-aware batching trims to a batch's width.
SEQUENCE_KEYS = ("input_ids", "segment_ids", "input_mask", "label_ids", "label_mask")


def example_error(kind: str, ident: Any, reason: str) -> ValueError:
    """ValueError naming the example: `example 'train.tsv:12': label 'x' is not ...`."""
    return ValueError(f"{kind} {ident!r}: {reason}")


@dataclasses.dataclass
class EncodedFeatures:
    """Fixed-length features for one list of examples.

    arrays: every array has the number of features as its first dimension (one per example,
      except SQuAD, where a long context gives several windows). `example_index` maps each
      feature back to its example.
    input_keys / label_keys: which arrays the model reads and which the loss reads; label_keys
      is empty for unlabelled (test) examples.
    metadata: one record per feature where decoding needs more than arrays (SpanFeature for
      SQuAD, TokenFeature for NER), else None.
    """

    arrays: Dict[str, np.ndarray]
    input_keys: Tuple[str, ...]
    label_keys: Tuple[str, ...] = ()
    metadata: Optional[List[Any]] = None

    def __len__(self) -> int:
        return len(self.arrays["example_index"])

    def inputs(self) -> Dict[str, np.ndarray]:
        return {k: self.arrays[k] for k in self.input_keys}

    def labels(self) -> Dict[str, np.ndarray]:
        return {k: self.arrays[k] for k in self.label_keys}


class Tokens:
    """Texts -> lists of ids through the model's in-graph tokenizer (`TextPacker.tokenize`, the
    one text path), for encoders that lay rows out in Python first (SQuAD windows)."""

    def __init__(self, tokenizer: Any, model: str, seq_length: int = 512):
        if model not in INPUT_FORMATS:
            raise ValueError(f"model must be one of {INPUT_FORMATS}, got {model!r}")
        self.packer = TextPacker(tokenizer, model, seq_length)
        self.tokenizer, self.model = tokenizer, model

    def ragged(self, texts: Sequence[str]) -> tf.RaggedTensor:
        """int32 ragged [n, (ids)], tokenised a chunk of texts per call."""
        if not texts:
            return ragged_from_lists([])
        chunks = [self.packer.tokenize(list(texts[i:i + _TOKENIZE_CHUNK]))
                  for i in range(0, len(texts), _TOKENIZE_CHUNK)]
        return chunks[0] if len(chunks) == 1 else tf.concat(chunks, axis=0)

    def ids(self, texts: Sequence[str]) -> List[List[int]]:
        """Token ids of each text (same order, duplicates allowed)."""
        return self.ragged(texts).to_list()

    def input_keys(self) -> Tuple[str, ...]:
        return self.packer.input_keys


def to_numpy(tensors: Dict[str, tf.Tensor]) -> Dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in tensors.items()}


def in_chunks(n: int, build, chunk: int = _TOKENIZE_CHUNK) -> Dict[str, np.ndarray]:
    """`build(start, stop)` -> dict of numpy arrays, over [0, n) a chunk at a time, concatenated
    (bounds the memory of one in-graph call on 67k SST-2 sentences)."""
    parts = [build(i, min(n, i + chunk)) for i in range(0, n, chunk)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def check_seq_length(seq_length: int, num_segments: int, num_texts: int, what: str) -> None:
    """Every text must keep at least one token next to the special tokens."""
    needed = num_segments + 1 + num_texts  # begin, (middle,) end + a token each
    if seq_length < needed:
        raise ValueError(f"seq_length {seq_length} is too short for {what}: needs at least "
                         f"{needed} (the special tokens and one token per text)")


def check_text(text: Any, kind: str, ident: Any, field: str) -> None:
    """A text field must be a non-blank string."""
    if not isinstance(text, str) or not text.strip():
        raise example_error(kind, ident, f"{field} is empty" if isinstance(text, str)
                            else f"{field} must be a string, got {type(text).__name__}")


def check_tokens(ids: Sequence[int], kind: str, ident: Any, field: str, text: str) -> None:
    """Blank-looking text (control characters only...) that tokenizes to nothing is an error."""
    if not ids:
        raise example_error(kind, ident, f"{field} {text[:60]!r} has no tokens after tokenization")


def labels_present(labels: Sequence[Any], kind: str, idents: Sequence[Any]) -> bool:
    """True if every example is labelled, False if none is; a mix is an error (a test file
    concatenated to a train file, or a reader bug)."""
    missing = [i for i, label in enumerate(labels) if label is None]
    if not missing:
        return True
    if len(missing) == len(labels):
        return False
    present = next(i for i, label in enumerate(labels) if label is not None)
    raise example_error(kind, idents[missing[0]],
                        f"has no label but {kind} {idents[present]!r} has one; "
                        "label all examples or none")


def label_index(label_names: Sequence[str], kind: str = "example") -> Dict[str, int]:
    """label name -> id; the names must be unique and non-empty."""
    if not label_names:
        raise ValueError(f"label_names are required to map {kind} labels to ids")
    index = {name: i for i, name in enumerate(label_names)}
    if len(index) != len(label_names):
        raise ValueError(f"label_names {list(label_names)} contain duplicates")
    return index


def lookup_label(index: Dict[str, int], label: Any, kind: str, ident: Any) -> int:
    try:
        return index[label]
    except (KeyError, TypeError):
        raise example_error(kind, ident, f"label {label!r} is not one of {list(index)}") from None
