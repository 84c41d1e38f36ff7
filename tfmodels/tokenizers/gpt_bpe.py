"""GPT-1's byte-pair-encoding tokenizer, compatible with the original OpenAI release files
(`encoder_bpe_40000.json`, `vocab_40000.bpe`), eager and in-graph.

The original pipeline (openai/finetune-transformer-lm `text_utils.py`): ftfy clean-up ->
punctuation standardisation -> spaCy word split -> lower case -> BPE per word, where a word is
its characters with `</w>` on the last one and the lowest-ranked adjacent pair is merged until
no pair is in the merge list.

Here:
- ftfy runs in Python only (`clean_text`); it is the offline clean-up step for data creation.
- Standardisation, lower-casing and word splitting are TensorFlow ops (`pre_tokenize`), used by
  both paths, so the eager and graph tokenizers cannot disagree on word boundaries. spaCy is
  replaced by a regular-expression rule close to its English tokenizer: punctuation becomes its
  own token and the contractions n't, 's, 're, 've, 'm, 'll, 'd split off as spaCy does
  ("don't" -> "do n't"); unlike spaCy, decimal numbers and abbreviations ("3.5", "u.s.") are
  split at their periods.
- BPE merges run in Python with a per-word cache (`encode`, fast for data creation) or as a
  `tf.while_loop` over all distinct words of a batch (`tokenize`, for tf.data and SavedModels).
- Symbols missing from the encoder map to `<unk>` (id 0 in the original vocabulary, as in the
  original code's `encoder.get(token, 0)`).
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence, Tuple, Union

import tensorflow as tf
import tensorflow_text as tf_text

SPECIAL_TOKENS = ("_start_", "_delimiter_", "_classify_")
WORD_END = "</w>"
_NO_MERGE = 2 ** 31 - 1

# Punctuation runs the original `text_standardize` pads with spaces.
_STANDARDIZE_PUNCT = r"""(-+|~+|!+|"+|;+|\?+|\++|,+|\)+|\(+|\\+|/+|\*+|\[+|\]+|\}+|\{+|\|+|_+)"""
_CONTRACTION = r"n't\b|'(?:s|re|ve|m|ll|d)\b"
# Kept as tokens: contractions, newlines and any single character that is neither a letter,
# a combining mark, a digit nor whitespace. Dropped: other whitespace.
_KEEP = _CONTRACTION + r"|\n|[^\s\p{L}\p{M}\p{N}]"
_SPLIT = r"[^\S\n]+|" + _KEEP

Texts = Union[tf.Tensor, Sequence[str]]


def pre_tokenize(texts: Texts) -> tf.RaggedTensor:
    """string [batch] -> string RaggedTensor [batch, (words)], lower-cased, standardised."""
    t = tf.convert_to_tensor(texts, tf.string)
    t = tf.strings.regex_replace(t, "\u2014|\u2013|\u2015", "-")
    t = tf.strings.regex_replace(t, "\u2026", "...")
    t = tf.strings.regex_replace(t, "\u00b4", "'")
    t = tf.strings.regex_replace(t, _STANDARDIZE_PUNCT, r" \1 ")
    t = tf.strings.regex_replace(t, r"\s*\n\s*", " \n ")
    t = tf.strings.lower(t, encoding="utf-8")
    return tf_text.regex_split(t, _SPLIT, _KEEP)


def _read_bpe_files(encoder_file: str, merges_file: str) -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
    """Loads and validates the encoder json and the ranked merges; errors name file and line."""
    for path in (encoder_file, merges_file):
        if not os.path.isfile(path):
            raise ValueError(f"BPE file {path} does not exist")
    with open(encoder_file, encoding="utf-8") as f:
        try:
            encoder = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{encoder_file}: not valid JSON ({e})") from None
    if not isinstance(encoder, dict) or not encoder:
        raise ValueError(f"{encoder_file}: expected a non-empty JSON object token -> id")
    if sorted(encoder.values()) != list(range(len(encoder))):
        raise ValueError(f"{encoder_file}: ids must be exactly 0..{len(encoder) - 1}, each once")
    merges = []
    with open(merges_file, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line_number == 1 and line.startswith("#version"):
                continue
            if not line:
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"{merges_file}, line {line_number}: expected two symbols "
                                 f"separated by one space, got {line!r}")
            if parts[0] + parts[1] not in encoder:
                raise ValueError(f"{merges_file}, line {line_number}: merge result "
                                 f"{parts[0] + parts[1]!r} is not in {encoder_file}")
            merges.append((parts[0], parts[1]))
    return encoder, merges


class GptBpeTokenizer(tf.Module):
    """The GPT-1 tokenizer: 40478 BPE tokens, then the added tokens (start, delimiter, classify).

    `encode` (python lists) and `tokenize` (tensors, graph-capable) return the same ids.
    """

    def __init__(self, encoder_file: str, merges_file: str,
                 special_tokens: Sequence[str] = SPECIAL_TOKENS, name=None):
        super().__init__(name=name)
        self.encoder_file, self.merges_file = encoder_file, merges_file
        self.encoder, merges = _read_bpe_files(encoder_file, merges_file)
        self.special_tokens = tuple(special_tokens)
        for offset, token in enumerate(self.special_tokens):
            if token in self.encoder:
                raise ValueError(f"added token {token!r} is already in {encoder_file}")
            self.encoder[token] = len(self.encoder)
        self.decoder = {i: token for token, i in self.encoder.items()}
        if "<unk>" not in self.encoder:
            raise ValueError(f"{encoder_file} has no '<unk>' token for unknown symbols")
        self.unk_id = self.encoder["<unk>"]
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._cache: Dict[str, List[int]] = {}
        self._rank_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant([f"{a} {b}" for a, b in merges] or [" "]),
                tf.constant(list(range(len(merges))) or [_NO_MERGE], tf.int32)),
            default_value=_NO_MERGE)
        tokens = list(self.encoder)
        self._id_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(tokens), tf.constant([self.encoder[t] for t in tokens], tf.int32)),
            default_value=self.unk_id)

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    @property
    def bpe_vocab_size(self) -> int:
        return len(self.encoder) - len(self.special_tokens)

    @property
    def start_id(self) -> int:
        return self.encoder[self.special_tokens[0]]

    @property
    def delimiter_id(self) -> int:
        return self.encoder[self.special_tokens[1]]

    @property
    def classify_id(self) -> int:
        return self.encoder[self.special_tokens[2]]

    @staticmethod
    def clean_text(text: str) -> str:
        """ftfy's mojibake and Unicode repair (python only, as in the original pipeline)."""
        import ftfy
        return ftfy.fix_text(text)

    # ---- eager path -------------------------------------------------------------------
    def _bpe_word(self, word: str) -> List[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        symbols = list(word[:-1]) + [word[-1] + WORD_END]
        while len(symbols) > 1:
            ranked = [(self.bpe_ranks.get(pair, _NO_MERGE), i)
                      for i, pair in enumerate(zip(symbols, symbols[1:]))]
            rank, i = min(ranked)
            if rank == _NO_MERGE:
                break
            # Merging the leftmost occurrence each round gives the original's all-occurrences
            # result: pairs created by a merge always rank after the merge that made them.
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        ids = [self.encoder.get(s, self.unk_id) for s in symbols]
        self._cache[word] = ids
        return ids

    def encode(self, texts: Sequence[str], clean: bool = True,
               batch_size: int = 4096) -> List[List[int]]:
        """Python strings -> lists of BPE ids (word splitting by `pre_tokenize`)."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings")
        results: List[List[int]] = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            if clean:
                chunk = [self.clean_text(t) for t in chunk]
            for words in pre_tokenize(chunk).to_list():
                ids: List[int] = []
                for word in words:
                    ids.extend(self._bpe_word(word.decode("utf-8")))
                results.append(ids)
        return results

    def decode(self, ids: Sequence[int]) -> str:
        """ids -> text: symbols joined, `</w>` read as a space; added tokens kept by name."""
        text = "".join(self.decoder[int(i)] for i in ids)
        return text.replace(WORD_END, " ").strip()

    # ---- graph path -------------------------------------------------------------------
    def _bpe_symbols(self, words: tf.Tensor) -> tf.RaggedTensor:
        """string [n] distinct words -> string RaggedTensor [n, (symbols)] after all merges."""
        chars = tf.strings.unicode_split(words, "UTF-8")
        last = chars.row_limits() - 1
        flat = tf.tensor_scatter_nd_update(
            chars.flat_values, last[:, None],
            tf.strings.join([tf.gather(chars.flat_values, last), WORD_END]))
        symbols = chars.with_flat_values(flat)

        def merge_once(symbols):
            pairs = tf.strings.join([symbols[:, :-1], symbols[:, 1:]], separator=" ")
            ranks = tf.ragged.map_flat_values(self._rank_table.lookup, pairs)
            dense = ranks.to_tensor(default_value=_NO_MERGE)
            best = tf.reduce_min(dense, axis=1, keepdims=True)
            positions = tf.range(tf.shape(dense, out_type=tf.int64)[1])[None, :]
            first = tf.reduce_min(tf.where(dense == best, positions, tf.int64.max), axis=1)
            active = tf.squeeze(best, 1) < _NO_MERGE
            # Flat index of the left symbol of each active word's merge.
            left = tf.boolean_mask(symbols.row_starts() + first, active)
            flat = symbols.flat_values
            merged = tf.strings.join([tf.gather(flat, left), tf.gather(flat, left + 1)])
            flat = tf.tensor_scatter_nd_update(flat, left[:, None], merged)
            keep = tf.tensor_scatter_nd_update(
                tf.ones_like(flat, tf.bool), (left + 1)[:, None],
                tf.zeros_like(left, tf.bool))
            lengths = symbols.row_lengths() - tf.cast(active, tf.int64)
            return (tf.RaggedTensor.from_row_lengths(tf.boolean_mask(flat, keep), lengths),)

        def has_merge(symbols):
            pairs = tf.strings.join([symbols[:, :-1], symbols[:, 1:]], separator=" ")
            ranks = self._rank_table.lookup(pairs.flat_values)
            return tf.reduce_any(ranks < _NO_MERGE)

        return tf.while_loop(
            has_merge, merge_once, (symbols,),
            shape_invariants=(tf.RaggedTensorSpec([None, None], tf.string, 1, tf.int64),))[0]

    def tokenize(self, texts: Texts) -> tf.RaggedTensor:
        """string [batch] -> int32 RaggedTensor [batch, (ids)]; runs inside tf.function."""
        words = pre_tokenize(texts)
        unique, index = tf.unique(words.flat_values)
        symbol_ids = tf.ragged.map_flat_values(self._id_table.lookup, self._bpe_symbols(unique))
        per_word = tf.gather(symbol_ids, index)  # [total words, (ids)]
        return words.with_flat_values(per_word).merge_dims(1, 2)
