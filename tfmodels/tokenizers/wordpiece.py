"""BERT's WordPiece tokenizer on tensorflow-text ops (`encode` packs `[CLS] A [SEP] B [SEP]`
through tfmodels.preprocessing, the one packer).

One implementation runs eagerly (data creation, tests), inside `tf.function` / tf.data
(training input pipelines) and inside exported SavedModels (raw text in): it is a `tf.Module`
so its tokenizer model and lookup resources are tracked and exported with the model.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Sequence, Union

import tensorflow as tf
import tensorflow_text as tf_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
Texts = Union[tf.Tensor, Sequence[str]]


def read_vocab_file(vocab_file: str) -> List[str]:
    """Reads one token per line and validates it; errors name the file and the problem."""
    if not os.path.isfile(vocab_file):
        raise ValueError(f"vocabulary file {vocab_file} does not exist")
    with open(vocab_file, encoding="utf-8") as f:
        tokens = [line.rstrip("\n").rstrip("\r") for line in f]
    while tokens and not tokens[-1]:
        tokens.pop()  # a trailing newline is not a token
    if not tokens:
        raise ValueError(f"vocabulary file {vocab_file} is empty")
    seen: Dict[str, int] = {}
    problems = []
    for line_number, token in enumerate(tokens, 1):
        if not token:
            problems.append(f"line {line_number} is empty")
        elif token in seen:
            problems.append(f"line {line_number}: token {token!r} duplicates line {seen[token]}")
        else:
            seen[token] = line_number
    missing = [t for t in SPECIAL_TOKENS if t not in seen]
    if missing:
        problems.append(f"missing special tokens {missing}")
    if problems:
        raise ValueError(f"invalid vocabulary file {vocab_file}: " + "; ".join(problems[:10]))
    return tokens


class _Vocabulary:
    """tokens in id order and token -> id. A plain object: tf.Module would wrap a list or dict
    attribute for tracking and walk its 30k entries on every `variables` read and SavedModel
    save (seconds per export)."""

    def __init__(self, tokens: List[str]):
        self.tokens = list(tokens)
        self.ids = {token: i for i, token in enumerate(self.tokens)}


class WordPieceTokenizer(tf.Module):
    """WordPiece tokenizer with BERT's basic pre-tokenisation.

    lower_case=True: uncased models (lower case, NFD, strip accents); False: cased models.
    Whitespace and punctuation split words, CJK characters are words of their own, as in
    google-research/bert's BasicTokenizer; words longer than `max_chars_per_word` bytes become
    [UNK].
    """

    family = "bert"  # the layout its special tokens serve (tfmodels.preprocessing)

    def __init__(self, vocab_file: str, lower_case: bool = True,
                 max_chars_per_word: int = 100, name: Optional[str] = None):
        super().__init__(name=name)
        self.vocab_file = vocab_file
        self.lower_case = lower_case
        self._vocab = _Vocabulary(read_vocab_file(vocab_file))
        self._tokenizer = tf_text.FastBertTokenizer(
            vocab=self.vocab, suffix_indicator="##", max_bytes_per_word=max_chars_per_word,
            token_out_type=tf.int32, unknown_token="[UNK]", support_detokenization=True)

    @property
    def vocab(self) -> List[str]:
        """The tokens in id order."""
        return self._vocab.tokens

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return self._vocab.ids["[PAD]"]

    @property
    def unk_id(self) -> int:
        return self._vocab.ids["[UNK]"]

    @property
    def cls_id(self) -> int:
        return self._vocab.ids["[CLS]"]

    @property
    def sep_id(self) -> int:
        return self._vocab.ids["[SEP]"]

    @property
    def mask_id(self) -> int:
        return self._vocab.ids["[MASK]"]

    def token_to_id(self, token: str) -> int:
        return self._vocab.ids.get(token, self.unk_id)

    def id_to_token(self, token_id: int) -> str:
        return self.vocab[token_id]

    def normalize(self, texts: Texts) -> tf.Tensor:
        """BERT's text normalisation, string [batch] -> string [batch].

        Control characters are dropped; uncased: lower case, then NFD and accents (Mn marks)
        stripped. This is done here rather than with FastBertTokenizer's
        `lower_case_nfd_strip_accents`, which also applies compatibility decomposition
        ('½' -> '1⁄2', '´' -> ' ́') and so disagrees with the original vocabularies'
        tokenizers on such characters.
        """
        texts = tf.convert_to_tensor(texts, tf.string)
        texts = tf.strings.regex_replace(texts, r"[\t\n\r]", " ")
        texts = tf.strings.regex_replace(texts, r"[\x{fffd}\p{C}]", "")
        if self.lower_case:
            texts = tf.strings.lower(texts, encoding="utf-8")
            texts = tf_text.normalize_utf8(texts, "NFD")
            texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
        return texts

    def tokenize(self, texts: Texts) -> tf.RaggedTensor:
        """string [batch] -> int32 RaggedTensor [batch, (pieces)]."""
        return self._tokenizer.tokenize(self.normalize(texts))

    def tokenize_words(self, texts: Texts) -> tf.RaggedTensor:
        """string [batch] -> int32 RaggedTensor [batch, (words), (pieces)].

        A word is a piece that does not start with '##' plus the '##' pieces after it (the
        grouping whole-word masking and first-sub-token NER labels need).
        """
        return group_pieces_into_words(self.tokenize(texts), self.continuation_mask)

    @property
    def continuation_mask(self) -> tf.Tensor:
        """bool [vocab_size]: True for pieces that continue a word ('##...')."""
        if not hasattr(self, "_continuation_mask"):
            self._continuation_mask = tf.constant([t.startswith("##") for t in self.vocab])
        return self._continuation_mask

    def detokenize(self, ids) -> tf.Tensor:
        """int [batch, (pieces)] -> string [batch]: words joined by spaces, '##' merged."""
        return self._tokenizer.detokenize(ids)

    def tokenize_with_offsets(self, texts: Texts, normalized: bool = False):
        """string [batch] -> (ids, starts, ends), ragged [batch, (pieces)]: byte offsets of each
        piece in the NORMALISED text (`normalize`; equal to the input's for ASCII).
        normalized: `texts` are already `normalize`'s output (a caller that needs both)."""
        return self._tokenizer.tokenize_with_offsets(texts if normalized
                                                     else self.normalize(texts))

    def encode(self, texts: Iterable[str]) -> List[List[int]]:
        """Texts -> one list of WordPiece ids per text, no special tokens (eager; the
        tokenizers' shared protocol, see tfmodels.preprocessing). `[CLS] A [SEP] (B [SEP])` rows
        are `TextPacker(tokenizer, "bert", seq_length).encode(texts_a, texts_b)`."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings, not a string")
        return self.tokenize(list(texts)).to_list()


def group_pieces_into_words(pieces: tf.RaggedTensor,
                            continuation_mask: tf.Tensor) -> tf.RaggedTensor:
    """int [batch, (pieces)] -> [batch, (words), (pieces)] using a per-id '##' mask."""
    flat = pieces.flat_values
    starts = tf.logical_not(tf.gather(continuation_mask, flat))
    # The first piece of every row starts a word even if it is a '##' piece, so that words
    # never straddle rows.
    row_first = tf.cast(pieces.row_starts()[pieces.row_lengths() > 0], tf.int32)
    starts = tf.tensor_scatter_nd_update(starts, row_first[:, None],
                                         tf.ones_like(row_first, tf.bool))
    starts_int = tf.cast(starts, tf.int32)
    word_ids = tf.cumsum(starts_int) - 1
    words = tf.RaggedTensor.from_value_rowids(flat, word_ids, nrows=tf.reduce_sum(starts_int))
    words_per_row = tf.RaggedTensor.from_row_splits(starts_int, pieces.row_splits)
    return tf.RaggedTensor.from_row_lengths(words, tf.reduce_sum(words_per_row, axis=1))
