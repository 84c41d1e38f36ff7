"""SQuAD v1.1 / v2.0 for BERT: sliding windows over the context, span labels, and decoding
start/end logits back to answer text.

Follows google-research/bert `run_squad.py`: the question is truncated to `max_query_length`
pieces; the context's WordPiece pieces are cut into windows of `seq_length - len(query) - 3`
pieces every `doc_stride`; each window is one feature `[CLS] question [SEP] window [SEP]`;
training labels point at the answer's first/last piece, or at [CLS] (0) when the window does
not hold the whole answer or the question is unanswerable (v2.0); `token_is_max_context`
marks the window where a piece has the most context on both sides (`_check_is_max_context`).

Unlike the original, every piece keeps the character span it came from in the context
(pieces are aligned to characters inside each whitespace-separated word), so
- the answer's piece span is the pieces its characters overlap (the tightest span, which is
  what `_improve_answer_span` approximates; that tokenized-answer search is kept as a
  refinement for words whose pieces could not be aligned), and
- predicted text is cut from the original context characters, which makes the original's
  `get_final_text` heuristic unnecessary. Answers that end inside a piece ("Ital" of
  "italian") come back as the whole piece.
"""
from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from finetune.examples import SpanExample
from finetune.features.common import (EncodedFeatures, Tokens, check_text, check_tokens,
                                      example_error, in_chunks, labels_present, to_numpy)
from tfmodels.preprocessing import ragged_from_lists

_WORD = re.compile(r"\S+")  # Unicode whitespace, a superset of run_squad's " \t\r\n\u202f"


@dataclasses.dataclass(frozen=True, eq=False)
class ContextPieces:
    """A context's WordPiece pieces and the characters each came from (shared by windows)."""

    text: str
    ids: np.ndarray          # int32 [pieces]
    char_spans: np.ndarray   # int32 [pieces, 2]: start, end (exclusive) offsets into text


@dataclasses.dataclass(frozen=True, eq=False)
class SpanFeature:
    """What decoding needs to know about one window (one row of the arrays)."""

    example_index: int
    qid: str
    window_index: int
    seq_length: int
    context_offset: int              # position of the window's first piece: len(query) + 2
    window_start: int                # index of that piece among the context's pieces
    token_is_max_context: np.ndarray  # bool [window length]
    context: ContextPieces

    @property
    def window_length(self) -> int:
        return len(self.token_is_max_context)

    def is_context(self, position: int) -> bool:
        return self.context_offset <= position < self.context_offset + self.window_length

    def char_span(self, position: int) -> Tuple[int, int]:
        """Character span (start, end exclusive) of the context piece at `position`."""
        if not self.is_context(position):
            raise ValueError(f"position {position} of feature {self.qid!r}/{self.window_index} "
                             "is not a context piece")
        start, end = self.context.char_spans[self.window_start + position - self.context_offset]
        return int(start), int(end)

    @property
    def token_to_char(self) -> np.ndarray:
        """int32 [seq_length, 2]: character span of each position; -1 outside the context."""
        out = np.full((self.seq_length, 2), -1, np.int32)
        window = slice(self.window_start, self.window_start + self.window_length)
        out[self.context_offset:self.context_offset + self.window_length] = \
            self.context.char_spans[window]
        return out


# ---- character alignment of pieces ---------------------------------------------------------

def _is_punctuation(ch: str) -> bool:
    """BERT's punctuation: ASCII symbols and Unicode P* (each is a word of its own)."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(a <= cp <= b for a, b in (
        (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def _normalize(word: str, lower_case: bool) -> Tuple[str, List[int]]:
    """The tokenizer's normalisation char by char: (normalised text, source index per char)."""
    chars, origin = [], []
    for k, ch in enumerate(word):
        if ch == "\ufffd" or unicodedata.category(ch).startswith("C"):
            continue  # dropped by WordPieceTokenizer.normalize
        if lower_case:
            ch = "".join(c for c in unicodedata.normalize("NFD", ch.lower())
                         if unicodedata.category(c) != "Mn")
        chars.append(ch)
        origin.extend([k] * len(ch))
    return "".join(chars), origin


def _align_word(word: str, pieces: Sequence[str], lower_case: bool, unk: str
                ) -> Optional[List[Tuple[int, int]]]:
    """Character span inside `word` of each of its pieces; None if they do not line up."""
    norm, origin = _normalize(word, lower_case)
    spans, p = [], 0
    for piece in pieces:
        while p < len(norm) and norm[p].isspace():
            p += 1
        if p >= len(norm):
            return None
        if piece == unk:  # [UNK] stands for one whole pre-tokenized word
            q = p + 1
            if not (_is_punctuation(norm[p]) or _is_cjk(norm[p])):
                while q < len(norm) and not (norm[q].isspace() or _is_punctuation(norm[q])
                                             or _is_cjk(norm[q])):
                    q += 1
        else:
            text = piece[2:] if piece.startswith("##") else piece
            q = p + len(text)
            if norm[p:q] != text:
                return None
        spans.append((origin[p], origin[q - 1] + 1))
        p = q
    return spans if not norm[p:].strip() else None


def tokenize_contexts(contexts: Sequence[str], tokens: Tokens) -> Dict[str, ContextPieces]:
    """Distinct contexts -> pieces with character spans; one tokenizer call for all words.

    Words are whitespace-separated, as run_squad's `doc_tokens`; a word whose pieces cannot
    be aligned to its characters gives each piece the whole word's span (the original's
    granularity) rather than failing.
    """
    tokenizer = tokens.tokenizer
    lower_case = getattr(tokenizer, "lower_case", True)
    unk = tokenizer.id_to_token(tokenizer.unk_id)
    unique = list(dict.fromkeys(contexts))
    words_of = {c: [(m.start(), m.end()) for m in _WORD.finditer(c)] for c in unique}
    all_words = list(dict.fromkeys(c[s:e] for c in unique for s, e in words_of[c]))
    word_ids = dict(zip(all_words, tokens.ids(all_words)))
    aligned: Dict[str, List[Tuple[int, int]]] = {}
    result = {}
    for context in unique:
        ids, spans = [], []
        for start, end in words_of[context]:
            word = context[start:end]
            pieces = word_ids[word]
            if word not in aligned:
                inside = _align_word(word, [tokenizer.id_to_token(i) for i in pieces],
                                     lower_case, unk)
                aligned[word] = inside or [(0, end - start)] * len(pieces)
            ids.extend(pieces)
            spans.extend((start + a, start + b) for a, b in aligned[word])
        result[context] = ContextPieces(context, np.array(ids, np.int32),
                                        np.array(spans, np.int32).reshape(-1, 2))
    return result


# ---- windows and labels ---------------------------------------------------------------------

def doc_windows(num_pieces: int, max_window: int, doc_stride: int) -> List[Tuple[int, int]]:
    """(start, length) of each window, exactly as run_squad's doc_spans."""
    windows, start = [], 0
    while start < num_pieces:
        length = min(num_pieces - start, max_window)
        windows.append((start, length))
        if start + length == num_pieces:
            break
        start += min(length, doc_stride)
    return windows


def max_context_window(windows: Sequence[Tuple[int, int]], num_pieces: int) -> np.ndarray:
    """int [pieces]: the window where each piece has the most context (`_check_is_max_context`:
    score = min(left, right) + 0.01 * window length, first window wins ties)."""
    best = np.full(num_pieces, -1, np.int64)
    best_score = np.full(num_pieces, -np.inf)
    for w, (start, length) in enumerate(windows):
        position = np.arange(start, start + length)
        score = np.minimum(position - start, start + length - 1 - position) + 0.01 * length
        better = score > best_score[position]
        best[position[better]] = w
        best_score[position[better]] = score[better]
    return best


def answer_piece_span(example: SpanExample, context: ContextPieces,
                      answer_ids: Sequence[int]) -> Tuple[int, int]:
    """(first, last) piece of the example's first answer; ValueError if it is not in the context."""
    text, char_start = example.answers[0]
    check_text(text, "question", example.qid, "answer text")
    if not isinstance(char_start, (int, np.integer)) or char_start < 0:
        raise example_error("question", example.qid,
                            f"answer start {char_start!r} is not an offset")
    found = example.context[char_start:char_start + len(text)]
    if found != text:
        raise example_error("question", example.qid,
                            f"answer {text!r} does not match the context at character "
                            f"{char_start} (found {found!r})")
    spans = context.char_spans
    inside = np.nonzero((spans[:, 0] < char_start + len(text)) & (spans[:, 1] > char_start))[0]
    if not len(inside):
        raise example_error("question", example.qid, f"answer {text!r} covers no context token")
    first, last = int(inside[0]), int(inside[-1])
    # _improve_answer_span: the tightest sub-span whose pieces are the tokenized answer.
    ids, n = context.ids.tolist(), len(answer_ids)
    for i in range(first, last - n + 2):
        if ids[i:i + n] == list(answer_ids):
            return i, i + n - 1
    return first, last


def encode_span_examples(examples: Sequence[SpanExample], tokenizer, seq_length: int,
                         doc_stride: int = 128, max_query_length: int = 64) -> EncodedFeatures:
    """SQuAD questions -> one BERT feature per context window, plus a SpanFeature each.

    Labels `start_position` / `end_position` (from the first answer; 0 = [CLS]) are included
    when every question has an answer or is marked impossible.
    """
    if not examples:
        raise ValueError("no examples to encode")
    if doc_stride < 1 or max_query_length < 1:
        raise ValueError(f"doc_stride ({doc_stride}) and max_query_length ({max_query_length}) "
                         "must be positive")
    for i, ex in enumerate(examples):
        if not isinstance(ex, SpanExample):
            raise ValueError(f"example {i} is a {type(ex).__name__}, expected SpanExample")
        check_text(ex.question, "question", ex.qid, "question")
        check_text(ex.context, "question", ex.qid, "context")
    labelled = labels_present([ex.answers or (() if ex.is_impossible else None) for ex in examples],
                              "question", [ex.qid for ex in examples])

    tokens = Tokens(tokenizer, "bert", seq_length)
    contexts = tokenize_contexts([ex.context for ex in examples], tokens)
    answerable = [ex for ex in examples if labelled and not ex.is_impossible]
    ids = tokens.ids([ex.question for ex in examples] + [ex.answers[0][0] for ex in answerable])
    questions, answer_ids = ids[:len(examples)], iter(ids[len(examples):])

    rows, metadata, starts, ends = [], [], [], []
    for index, (ex, question) in enumerate(zip(examples, questions)):
        check_tokens(question, "question", ex.qid, "question", ex.question)
        context = contexts[ex.context]
        check_tokens(context.ids.tolist(), "question", ex.qid, "context", ex.context)
        query = question[:max_query_length]
        max_window = seq_length - len(query) - 3
        if max_window < 1:
            raise example_error("question", ex.qid,
                                f"seq_length {seq_length} leaves no room for the context after "
                                f"[CLS], the {len(query)}-piece question and two [SEP]")
        answer = None
        if labelled and not ex.is_impossible:
            answer = answer_piece_span(ex, context, next(answer_ids))
        windows = doc_windows(len(context.ids), max_window, doc_stride)
        best = max_context_window(windows, len(context.ids))
        offset = len(query) + 2
        for w, (start, length) in enumerate(windows):
            rows.append([query, context.ids[start:start + length].tolist()])
            metadata.append(SpanFeature(index, ex.qid, w, seq_length, offset, start,
                                        best[start:start + length] == w, context))
            inside = answer is not None and start <= answer[0] and answer[1] < start + length
            starts.append(answer[0] - start + offset if inside else 0)
            ends.append(answer[1] - start + offset if inside else 0)

    # The windows are cut here (doc_stride); the rows are laid out by the shared packer.
    arrays = in_chunks(len(rows), lambda i, j: to_numpy(tokens.packer.model_inputs(
        tokens.packer.pack([ragged_from_lists([r[0] for r in rows[i:j]]),
                            ragged_from_lists([r[1] for r in rows[i:j]])],
                           truncate=False, width=seq_length))))
    arrays["example_index"] = np.array([m.example_index for m in metadata], np.int32)
    label_keys: Tuple[str, ...] = ()
    if labelled:
        arrays["start_position"] = np.array(starts, np.int32)
        arrays["end_position"] = np.array(ends, np.int32)
        label_keys = ("start_position", "end_position")
    return EncodedFeatures(arrays, tokens.input_keys(), label_keys, metadata)


# ---- decoding -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SpanPrediction:
    """The answer to one question, decoded from the logits of all its windows."""

    text: str                      # "" = no answer (v2.0 null wins, or no valid span)
    score: float                   # best non-null start + end logit (-inf if none)
    null_score: float              # min over windows of start[CLS] + end[CLS]
    score_diff: float              # null_score - score: v2.0 predicts "" above the threshold
    char_span: Optional[Tuple[int, int]]  # of the best non-null span in the context
    nbest: Tuple[Tuple[str, float], ...]  # distinct texts, best first


def best_span(start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray],
              features: Sequence[SpanFeature], n_best_size: int = 20,
              max_answer_length: int = 30, version_2: bool = False,
              null_threshold: float = 0.0) -> SpanPrediction:
    """Best answer over all windows of one question (logits [windows, seq] or lists of [seq]).

    A span (i, j) is valid when both ends are context pieces of the same window, j >= i,
    j - i + 1 <= max_answer_length and the window is the max-context one for i; its score is
    start[i] + end[j]. All valid pairs are scored (the original pre-filters to the top-20
    starts and ends, which can only miss spans). The text is cut from the original context.
    v2.0: the null score is start[CLS] + end[CLS] (minimum over windows); "" is predicted when
    null_score - best non-null score > null_threshold (tau, tuned on dev via `score_diff`).
    """
    if not features or len(start_logits) != len(features) or len(end_logits) != len(features):
        raise ValueError(f"need one start and end logit row per feature: {len(features)} "
                         f"features, {len(start_logits)} start and {len(end_logits)} end rows")
    if len({f.example_index for f in features}) != 1:
        raise ValueError("best_span decodes one question; the features belong to several")
    context = features[0].context
    candidates = []  # (score, feature, i, j), i and j relative to the window
    null_score = np.inf
    for f, (start, end) in enumerate(zip(start_logits, end_logits)):
        feature = features[f]
        start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
        null_score = min(null_score, start[0] + end[0])
        window = slice(feature.context_offset, feature.context_offset + feature.window_length)
        s, e = start[window], end[window]
        i, j = np.indices((len(s), len(e)))
        valid = (j >= i) & (j - i < max_answer_length) & feature.token_is_max_context[:, None]
        scores = np.where(valid, s[:, None] + e[None, :], -np.inf).ravel()
        top = np.argpartition(-scores, min(n_best_size, scores.size) - 1)[:n_best_size]
        candidates += [(scores[k], f, *divmod(int(k), len(e))) for k in top if scores[k] > -np.inf]
    candidates.sort(key=lambda c: (-c[0], c[1], c[2], c[3]))  # ties: earliest window and span

    nbest: List[Tuple[str, float]] = []
    best_chars = None
    for score, f, i, j in candidates:
        feature = features[f]
        char_start = int(context.char_spans[feature.window_start + i, 0])
        char_end = int(context.char_spans[feature.window_start + j, 1])
        text = context.text[char_start:char_end]
        if best_chars is None:
            best_chars = (char_start, char_end)
        if text not in (t for t, _ in nbest):
            nbest.append((text, float(score)))
        if len(nbest) >= n_best_size:
            break
    score = nbest[0][1] if nbest else -np.inf
    score_diff = float(null_score - score)
    text = nbest[0][0] if nbest else ""
    if version_2 and score_diff > null_threshold:
        text = ""
    return SpanPrediction(text, float(score), float(null_score), score_diff, best_chars,
                          tuple(nbest))


def predict_answers(start_logits: np.ndarray, end_logits: np.ndarray,
                    metadata: Sequence[SpanFeature], **options) -> Dict[str, SpanPrediction]:
    """Logits [features, seq] of a whole encoded set -> qid -> SpanPrediction (`best_span`
    options pass through)."""
    if not len(start_logits) == len(end_logits) == len(metadata):
        raise ValueError(f"{len(metadata)} features but {len(start_logits)} start and "
                         f"{len(end_logits)} end logit rows")
    by_example: Dict[int, List[int]] = {}
    for row, feature in enumerate(metadata):
        by_example.setdefault(feature.example_index, []).append(row)
    return {metadata[rows[0]].qid: best_span([start_logits[r] for r in rows],
                                             [end_logits[r] for r in rows],
                                             [metadata[r] for r in rows], **options)
            for rows in by_example.values()}
