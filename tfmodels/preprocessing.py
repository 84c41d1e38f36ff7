"""Text -> model inputs, in graph: the one implementation that fine-tuning features, evaluation,
exported SavedModels, `bert-gpt-predict` and `TextPacker.encode` all call.

Tokenizers (tfmodels.tokenizers) share one protocol: `tokenize(texts)` -> int32 ragged ids in
graph, `encode(texts)` -> a list of ids per text (eager; GPT-1 BPE runs ftfy first, as the
original did), and `family` ("bert" / "gpt", the layout their special tokens serve); neither
adds special tokens. Packing them into model rows is this module's.

Built from TensorFlow (and tensorflow-text tokenizer) ops only, so the same code runs eagerly on
a list of training examples, inside `tf.function` and inside a SavedModel that TF Serving loads
with raw strings. Because every caller goes through `TextPacker.pack`, the ids a model is
fine-tuned on and the ids its export builds from the same raw text are equal by construction.

Layouts (`begin A end` or `begin A middle B end`):
  BERT   [CLS] A [SEP] (B [SEP])        segment ids 1 from B to its [SEP]; pad [PAD]
  GPT-1  start A (delimiter B) classify  no segments (all 0); pad 0 (masked out);
                                         `last_position` = the classify token

Truncation is longest-first over any number of parts (`keep_lengths`), the rule Hugging Face's
`longest_first` uses for a pair: keras-hub's `MultiSegmentPacker` and tf-text's trimmers offer
round-robin and waterfall allocations, and GPT-1's multiple choice trims three parts (context,
question, ending) that it lays out as two segments, which neither packer expresses.

Width: rows are padded to `width` when given (the static `seq_length` that fixed-shape training
and TPUs want), else only to the longest row of the batch, so a short request does not pay for
`seq_length` positions (serving, length-bucketed fine-tuning). Padding is always at the end, so
a row packed to either width has the same ids in its first `length` positions.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import tensorflow as tf

# INPUT_FORMATS is re-exported: fine-tuning imports it from here.
from tfmodels.architectures import INPUT_FORMATS, check_input_format  # noqa: F401

BERT_INPUT_KEYS = ("input_ids", "segment_ids", "input_mask")
GPT_INPUT_KEYS = ("input_ids", "input_mask", "classify_position")

# Python's str.isspace() code points: what str.split() and re's \s separate words on.
WHITESPACE = (9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 133, 160, 5760, *range(8192, 8203), 8232,
              8233, 8239, 8287, 12288)


def sanitize_text(texts) -> tf.Tensor:
    """string [...] -> valid UTF-8: bytes that are not UTF-8 become U+FFFD (never an op error)."""
    return tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace",
                                        replacement_char=0xFFFD)


def whitespace_words(texts: tf.Tensor):
    """string [b] -> (words, byte starts, byte ends), ragged [b, (words)]: maximal runs of
    non-whitespace characters, exactly Python's `str.split()` / re `\\S+` (core ops only)."""
    chars, offsets = tf.strings.unicode_decode_with_offsets(texts, "UTF-8")
    space = tf.reduce_any(chars.flat_values[:, None] == tf.constant(WHITESPACE)[None], axis=1)
    rows = chars.value_rowids()
    index = tf.range(tf.size(space, out_type=tf.int64))
    first = index == tf.gather(chars.row_starts(), rows)
    last = index == tf.gather(chars.row_limits(), rows) - 1
    prev = tf.maximum(index - 1, 0)
    after = tf.minimum(index + 1, tf.maximum(tf.size(space, out_type=tf.int64) - 1, 0))
    starts = ~space & (first | tf.gather(space, prev))
    ends = ~space & (last | tf.gather(space, after))
    byte = offsets.flat_values
    length = tf.cast(tf.strings.length(texts), tf.int64)
    byte_end = tf.where(last, tf.gather(length, rows), tf.gather(byte, after))
    word_rows = tf.boolean_mask(rows, starts)
    start, end = tf.boolean_mask(byte, starts), tf.boolean_mask(byte_end, ends)
    words = tf.strings.substr(tf.gather(texts, word_rows), start, end - start)
    nrows = tf.shape(texts, out_type=tf.int64)[0]
    return tuple(tf.RaggedTensor.from_value_rowids(v, word_rows, nrows=nrows)
                 for v in (words, start, end))


def keep_lengths(lengths: tf.Tensor, budget) -> tf.Tensor:
    """Longest-first truncation of several parts per row: int [rows, n] -> kept int [rows, n].

    The largest cap c with sum(min(len, c)) <= budget, then one spare token each to the parts
    above the cap that were longest (on equal lengths the later part). With the lengths sorted
    ascending (S, prefix sums P), c = (budget - P_k) // (n - k) for the first k with
    P_k + (n - k) S_k > budget. For a pair this is Hugging Face's `longest_first`; the original
    `_truncate_seq_pair` differs only in giving the odd token to A on ties.
    """
    n = lengths.shape[-1]
    lengths = tf.cast(lengths, tf.int32)
    budget = tf.cast(budget, tf.int32)
    if n == 1:
        # One part: the cap is the budget (the general rule below gives the same; this is
        # one op instead of ~25 on every single-text request).
        return tf.minimum(lengths, budget)
    fits = tf.reduce_sum(lengths, axis=1, keepdims=True) <= budget
    s = tf.sort(lengths, axis=1)
    p = tf.cumsum(s, axis=1, exclusive=True)
    rest = n - tf.range(n)
    k = tf.argmax(tf.cast(p + rest * s > budget, tf.int32), axis=1, output_type=tf.int32)
    cap = ((budget - tf.gather(p, k, batch_dims=1)) // tf.gather(rest, k))[:, None]
    keep = tf.minimum(lengths, cap)
    spare = budget - tf.reduce_sum(keep, axis=1, keepdims=True)
    above = (lengths > cap) & ~fits
    # longer[r, i, j]: part j goes before part i for the spare tokens.
    later = (tf.range(n)[None, :] > tf.range(n)[:, None])[None]
    longer = (lengths[:, None, :] > lengths[:, :, None]) | (
        (lengths[:, None, :] == lengths[:, :, None]) & later)
    rank = tf.reduce_sum(tf.cast(above[:, None, :] & longer, tf.int32), axis=2)
    keep += tf.cast(above & (rank < spare), tf.int32)
    return tf.where(fits, lengths, keep)


def first_n(part: tf.RaggedTensor, keep: tf.Tensor) -> tf.RaggedTensor:
    """The first keep[r] items of each row r (keep: [rows] or a scalar).

    A gather of the kept values' flat indices: fewer kernels than a boolean mask over a ragged
    position tensor, which matters on the per-request serving path."""
    lengths = part.row_lengths()
    keep = tf.clip_by_value(tf.cast(keep, lengths.dtype), 0, lengths)
    starts = part.row_starts()
    index = tf.ragged.range(starts, starts + keep, row_splits_dtype=lengths.dtype)
    return tf.RaggedTensor.from_row_splits(tf.gather(part.flat_values, index.flat_values),
                                           index.row_splits, validate=False)


def as_ragged_ids(x: tf.RaggedTensor) -> tf.RaggedTensor:
    """int32 values with int64 row splits, so parts from any source concatenate."""
    return tf.cast(x, tf.int32).with_row_splits_dtype(tf.int64)


def ragged_from_lists(rows: Sequence[Sequence[int]]) -> tf.RaggedTensor:
    """Python id lists -> int32 ragged [n, (t)] (fast path for eager callers)."""
    lengths = [len(r) for r in rows]
    flat = [t for r in rows for t in r]
    return tf.RaggedTensor.from_row_lengths(tf.constant(flat, tf.int32, shape=[len(flat)]),
                                            tf.constant(lengths, tf.int64, shape=[len(lengths)]))


def _column(value: int, rows: tf.Tensor) -> tf.RaggedTensor:
    return tf.RaggedTensor.from_tensor(tf.fill(tf.stack([rows, 1]), tf.constant(value, tf.int32)))


class TextPacker(tf.Module):
    """Tokenises texts and lays token parts out as one model's input rows.

    tokenizer: a WordPieceTokenizer (input_format "bert") or GptBpeTokenizer ("gpt"); anything with
    `tokenize(texts) -> ragged ids` and the layout's special-token ids.
    seq_length: the longest row (special tokens included) after truncation.
    pad_to_max_length: rows are always seq_length wide (one static shape: TPUs, XLA-compiled
      serving); else as wide as the batch's longest unless `pack` is given a width.
    """

    def __init__(self, tokenizer, input_format: str, seq_length: int,
                 pad_to_max_length: bool = False):
        super().__init__(name="text_packer")
        check_input_format(input_format)
        needed = (("cls_id", "sep_id", "pad_id") if input_format == "bert"
                  else ("start_id", "delimiter_id", "classify_id"))
        missing = [a for a in needed + ("tokenize",) if not hasattr(tokenizer, a)]
        if missing:
            kind = "WordPieceTokenizer" if input_format == "bert" else "GptBpeTokenizer"
            raise ValueError(f"a {input_format} model reads text through a {kind}; "
                             f"{type(tokenizer).__name__} lacks {missing}")
        self.tokenizer = tokenizer
        self.input_format = input_format
        self.seq_length = int(seq_length)
        self.pad_to_max_length = bool(pad_to_max_length)
        if input_format == "bert":
            self.specials = (tokenizer.cls_id, tokenizer.sep_id, tokenizer.sep_id)
            self.pad_id = tokenizer.pad_id
        else:
            self.specials = (tokenizer.start_id, tokenizer.delimiter_id, tokenizer.classify_id)
            self.pad_id = 0  # GPT-1 has no pad token; padded positions are masked out

    @property
    def input_keys(self):
        return BERT_INPUT_KEYS if self.input_format == "bert" else GPT_INPUT_KEYS

    def tokenize(self, texts) -> tf.RaggedTensor:
        """string [n] -> int32 [n, (ids)]; each distinct text is tokenised once (a SQuAD
        context is shared by ~5 questions, a CoNLL word by thousands of sentences)."""
        texts = tf.convert_to_tensor(texts, tf.string)
        unique, index = tf.unique(tf.reshape(texts, [-1]))
        return tf.gather(as_ragged_ids(self.tokenizer.tokenize(unique)), index)

    def pack(self, parts: Sequence[tf.RaggedTensor],
             groups: Optional[Sequence[Sequence[int]]] = None, truncate: bool = True,
             width: Optional[int] = None) -> Dict[str, tf.Tensor]:
        """Token parts (ragged [n, (t)]) -> int32 input_ids / segment_ids / input_mask [n, w]
        and last_position [n].

        Each part is truncated longest-first against the others, then `groups` join parts into
        the layout's one or two segments (default: one segment per part) — GPT-1 multiple choice
        trims context, question and ending separately but lays out `[s] context question [$]
        ending [e]`. w = `width` if given, else the longest row of this batch.
        """
        groups = groups or [[i] for i in range(len(parts))]
        if len(groups) not in (1, 2):
            raise ValueError(f"a row has one or two segments, got {len(groups)}")
        parts = [as_ragged_ids(p) for p in parts]
        if truncate:
            budget = self.seq_length - len(groups) - 1
            if budget < len(parts):
                raise ValueError(f"seq_length {self.seq_length} is too short: {len(groups) + 1} "
                                 f"special tokens and at least one token of each of "
                                 f"{len(parts)} texts")
            lengths = tf.stack([tf.cast(p.row_lengths(), tf.int32) for p in parts], axis=1)
            keep = keep_lengths(lengths, budget)
            parts = [first_n(p, keep[:, i]) for i, p in enumerate(parts)]
        segments = [tf.concat([parts[i] for i in g], axis=1) if len(g) > 1 else parts[g[0]]
                    for g in groups]
        rows = segments[0].nrows(out_type=tf.int32)
        begin, middle, end = (_column(v, rows) for v in self.specials)
        pieces = [begin, segments[0], *([middle, segments[1]] if len(segments) == 2 else []), end]
        ids = tf.concat(pieces, axis=1)
        if width is None and self.pad_to_max_length:
            width = self.seq_length
        if width is None:
            # The batch's longest row; at least 2 positions so an empty batch still has a
            # position axis the models can slice.
            longest = tf.maximum(tf.cast(ids.bounding_shape(axis=1), tf.int32), 2)
            shape = tf.stack([rows, longest])
        else:
            shape = [None, width]
        input_ids = ids.to_tensor(self.pad_id, shape=shape)
        # Mask and segment ids from the row lengths (dense compares, not two more ragged
        # layouts to densify): real positions are [0, length); BERT's segment 1 starts after
        # begin A middle.
        length = tf.cast(ids.row_lengths(), tf.int32)
        position = tf.range(width if isinstance(width, int)  # keeps a static width static
                            else tf.shape(input_ids)[1])[None, :]
        real = position < length[:, None]
        if len(segments) == 2 and self.input_format == "bert":
            second = tf.cast(segments[0].row_lengths(), tf.int32)[:, None] + 2
            segment_ids = tf.cast(real & (position >= second), tf.int32)
        else:
            segment_ids = tf.zeros_like(input_ids)
        return {"input_ids": input_ids, "segment_ids": segment_ids,
                "input_mask": tf.cast(real, tf.int32), "last_position": length - 1}

    def encode(self, texts_a, texts_b=None) -> Dict[str, tf.Tensor]:
        """Raw texts (one segment, or pairs) -> the model's inputs (`model_inputs`) as rows of
        `seq_length` columns, truncated longest-first."""
        parts = [self.tokenize(texts_a)]
        if texts_b is not None:
            parts.append(self.tokenize(texts_b))
        return self.model_inputs(self.pack(parts, width=self.seq_length))

    def model_inputs(self, packed: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """The tensors each model reads: BERT ids/segments/mask; GPT-1 ids/mask/classify_position."""
        if self.input_format == "bert":
            return {k: packed[k] for k in BERT_INPUT_KEYS}
        return {"input_ids": packed["input_ids"], "input_mask": packed["input_mask"],
                "classify_position": packed["last_position"]}
