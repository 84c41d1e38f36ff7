"""What every input encoder shares: batched eager tokenization, longest-first truncation, the
BERT and GPT-1 sequence layouts, padding to static shapes, label lookup and located errors.

Encoders for each task kind (sequence.py, squad.py, tokens.py) are thin on purpose: they
decide *which* token lists go into a row; this module decides how a row becomes fixed-length
int32 arrays, so BERT's `[CLS] A [SEP] B [SEP]` and GPT-1's `[start] A [delim] B [classify]`
are written once for classification, pairs, multiple choice and SQuAD alike.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

MODELS = ("bert", "gpt")
_TOKENIZE_CHUNK = 8192  # texts per in-graph WordPiece call: one TF call per chunk, not per text

BERT_INPUT_KEYS = ("input_ids", "segment_ids", "input_mask")
GPT_INPUT_KEYS = ("input_ids", "input_mask", "classify_position")


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
    """One eager interface over both tokenizers: texts -> lists of ids, batched.

    Distinct texts are tokenized once (a SQuAD context is shared by ~5 questions, a RACE
    article by ~4, a CoNLL word by thousands of sentences). WordPiece goes through its
    in-graph tokenizer a chunk of texts per call; GPT-1 through its memoised eager `encode`.
    """

    def __init__(self, tokenizer: Any, model: str):
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {model!r}")
        needed = (("cls_id", "sep_id", "pad_id", "tokenize") if model == "bert"
                  else ("start_id", "delimiter_id", "classify_id", "encode"))
        missing = [a for a in needed if not hasattr(tokenizer, a)]
        if missing:
            raise ValueError(f"model {model!r} needs a "
                             f"{'WordPieceTokenizer' if model == 'bert' else 'GptBpeTokenizer'}; "
                             f"{type(tokenizer).__name__} lacks {missing}")
        self.tokenizer, self.model = tokenizer, model
        if model == "bert":
            self.layout = Layout(tokenizer.cls_id, tokenizer.sep_id, tokenizer.sep_id, bert=True)
            self.pad_id = tokenizer.pad_id
        else:
            self.layout = Layout(tokenizer.start_id, tokenizer.delimiter_id,
                                 tokenizer.classify_id, bert=False)
            self.pad_id = 0  # GPT-1 has no pad token; padded positions are masked out

    def ids(self, texts: Sequence[str]) -> List[List[int]]:
        """Token ids of each text (same order, duplicates allowed)."""
        unique = list(dict.fromkeys(texts))
        if self.model == "gpt":
            encoded = self.tokenizer.encode(unique)
        else:
            encoded = []
            for i in range(0, len(unique), _TOKENIZE_CHUNK):
                ragged = self.tokenizer.tokenize(unique[i:i + _TOKENIZE_CHUNK])
                flat = ragged.flat_values.numpy().tolist()
                splits = ragged.row_splits.numpy().tolist()
                encoded.extend(flat[a:b] for a, b in zip(splits, splits[1:]))
        by_text = dict(zip(unique, encoded))
        return [by_text[t] for t in texts]

    def input_keys(self) -> Tuple[str, ...]:
        return BERT_INPUT_KEYS if self.model == "bert" else GPT_INPUT_KEYS


@dataclasses.dataclass(frozen=True)
class Layout:
    """`begin A end` or `begin A middle B end`: BERT [CLS]/[SEP]/[SEP], GPT-1 start/delimiter/
    classify. BERT's segment ids are 1 from B to its [SEP]; GPT-1 has none (all 0)."""

    begin: int
    middle: int
    end: int
    bert: bool

    @staticmethod
    def num_specials(num_segments: int) -> int:
        return num_segments + 1

    def build(self, segments: Sequence[Sequence[int]]) -> Tuple[List[int], List[int]]:
        """(ids, segment ids) of one row from one or two token lists."""
        ids = [self.begin, *segments[0]]
        if len(segments) == 2:
            ids += [self.middle, *segments[1], self.end]
        elif len(segments) == 1:
            ids.append(self.end)
        else:
            raise ValueError(f"a row has one or two segments, got {len(segments)}")
        first = len(segments[0]) + 2
        types = [0] * first + [1 if self.bert else 0] * (len(ids) - first)
        return ids, types


def truncate_longest_first(parts: Sequence[Sequence[int]], budget: int) -> List[List[int]]:
    """Trims tokens from the ends of the longest parts until all fit in `budget`.

    Closed form: the largest cap with sum(min(len, cap)) <= budget; tokens left over go one
    each to the parts above the cap that were longest to begin with (on equal lengths the later
    part). For two parts this is `WordPieceTokenizer.encode`'s (Hugging Face's) rule; the
    original `_truncate_seq_pair` differs only in giving the odd token to A on ties.
    """
    lengths = [len(p) for p in parts]
    if sum(lengths) <= budget:
        return [list(p) for p in parts]
    lo, hi = 0, max(lengths)  # invariant: total(lo) <= budget < total(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if sum(min(n, mid) for n in lengths) <= budget:
            lo = mid
        else:
            hi = mid
    keep = [min(n, lo) for n in lengths]
    spare = budget - sum(keep)
    above = sorted((i for i, n in enumerate(lengths) if n > lo), key=lambda i: (-lengths[i], -i))
    for i in above[:spare]:
        keep[i] += 1
    return [list(p[:k]) for p, k in zip(parts, keep)]


def pack_rows(rows: Sequence[Sequence[Sequence[int]]], layout: Layout, seq_length: int,
              pad_id: int, groups: Optional[Sequence[Sequence[int]]] = None,
              truncate: bool = True) -> Dict[str, np.ndarray]:
    """Token-list rows -> int32 arrays [rows, seq_length].

    rows[i] is a list of text parts; each is truncated longest-first against the others, then
    `groups` (default: every part its own segment) concatenates parts into the one or two
    segments of the layout — e.g. GPT-1 multiple choice trims context, question and ending
    separately but lays out `[s] context question [$] ending [e]`.
    Returns input_ids, segment_ids, input_mask and last_position (index of the final special
    token: GPT-1's classify token).
    """
    n = len(rows)
    input_ids = np.full((n, seq_length), pad_id, np.int32)
    segment_ids = np.zeros((n, seq_length), np.int32)
    input_mask = np.zeros((n, seq_length), np.int32)
    last_position = np.zeros((n,), np.int32)
    for r, parts in enumerate(rows):
        row_groups = groups or [[i] for i in range(len(parts))]
        if truncate:
            parts = truncate_longest_first(parts, seq_length - layout.num_specials(len(row_groups)))
        segments = [[t for i in g for t in parts[i]] for g in row_groups]
        ids, types = layout.build(segments)
        if len(ids) > seq_length:
            raise ValueError(f"row {r}: {len(ids)} tokens do not fit seq_length {seq_length}")
        input_ids[r, :len(ids)] = ids
        segment_ids[r, :len(ids)] = types
        input_mask[r, :len(ids)] = 1
        last_position[r] = len(ids) - 1
    return {"input_ids": input_ids, "segment_ids": segment_ids, "input_mask": input_mask,
            "last_position": last_position}


def model_inputs(packed: Dict[str, np.ndarray], model: str) -> Dict[str, np.ndarray]:
    """The arrays each model reads: BERT ids/segments/mask; GPT-1 ids/mask/classify_position."""
    if model == "bert":
        return {k: packed[k] for k in BERT_INPUT_KEYS}
    return {"input_ids": packed["input_ids"], "input_mask": packed["input_mask"],
            "classify_position": packed["last_position"]}


def check_seq_length(seq_length: int, num_segments: int, num_texts: int, what: str) -> None:
    """Every text must keep at least one token next to the special tokens."""
    needed = Layout.num_specials(num_segments) + num_texts
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
