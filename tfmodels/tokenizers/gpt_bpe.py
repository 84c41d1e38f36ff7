"""GPT-1's byte-pair-encoding tokenizer for the original OpenAI files (`encoder_bpe_40000.json`,
`vocab_40000.bpe`), with an eager Python path and an in-graph TensorFlow path that agree exactly.

The original pipeline (openai/finetune-transformer-lm `text_utils.py`): `ftfy.fix_text` ->
`text_standardize` (dash/ellipsis/accent replacements, punctuation runs padded with spaces,
whitespace collapsed) -> spaCy's English tokenizer -> each token lower-cased -> BPE per token (its
characters with `</w>` on the last one; the lowest-ranked adjacent pair is merged, all its
occurrences left to right, until no pair is in the merge list) -> ids, unknown symbols -> 0.

Here:
- ftfy runs in Python only (`clean_text`, `encode(clean=True)`): the offline clean-up step of
  data creation. In-graph text gets the parts of ftfy that are simple regular expressions and a
  no-op on ftfy's output (NFC, quote uncurling, CR/LF, control characters), so
  `tokenize(t) == encode([ftfy(t)], clean=False)` always and raw text comes close to it.
- spaCy is replaced by `pre_tokenize`, RE2 rules run as TensorFlow ops by both paths, so the
  two paths cannot disagree on words. It follows spaCy's English rules for the common cases:
  punctuation becomes its own token; spaCy's contraction exceptions split
  (don't -> do n't, can't -> ca n't, I'm -> i 'm, they'll -> they 'll, cannot -> can not,
  gonna -> gon na), and 's splits off any word; apostrophes inside words stay (o'clock);
  "...", runs of - ~ / \\ |, decimals and times (3.5, 9:00), letter-dot abbreviations (U.S.,
  e.g.), initials (J.) and spaCy's list of abbreviations (Mr., Jan., Calif.) stay whole.
  Unlike spaCy: a period between a lower-case and an upper-case letter ("end.Start") does not
  split; unit suffixes after numbers ("5km") do not split; emoticons split; "'m" and "'ve" are
  always kept whole; a few rarer exceptions ("y'all", "dunno") are not applied. On 35k lines of
  WikiText-2, Tiny Shakespeare and Gutenberg text, 99.7% of spaCy's tokens are reproduced.
- Lower-casing is `tf.strings.lower(encoding="utf-8")` (ICU), equal to Python's `str.lower`
  (final sigma included) except for ~40 code points added in Unicode 14+.
- Symbols missing from the encoder map to `<unk>` as in the original (`encoder.get(t, 0)`, id 0
  is `<unk>` there); with an encoder that has no `<unk>` they are dropped.
- A word longer than MAX_BPE_PIECE_CHARS (64) characters is merged in pieces of 64 (its
  `</w>` on the last piece), in both paths: BPE costs O(length^2) per word, and the original,
  merging it whole, took minutes on a 200 KB "word" and hung on a multi-MB one. Every word of
  up to 64 characters (all of ordinary text) keeps the original's ids.
"""
from __future__ import annotations

import itertools
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import tensorflow as tf
import tensorflow_text as tf_text

SPECIAL_TOKENS = ("_start_", "_delimiter_", "_classify_")
WORD_END = "</w>"
UNK_TOKEN = "<unk>"
_NO_MERGE = 2 ** 31 - 1  # rank of a pair that is not in the merge list
_ENCODE_CHUNK = 4096  # lines per pre-tokenisation call of the eager path
_CACHE_LIMIT = 1 << 20  # words memoised by the eager path before the cache is cleared
# BPE costs O(length^2) per word (each merge round rescans the word), so a word longer than
# this many characters is merged in pieces of it (its `</w>` still on its last character):
# a line holding one multi-MB "word" takes linear time instead of hanging. Words up to this
# length (every word of ordinary text; the longest vocabulary token has 32) are unchanged.
MAX_BPE_PIECE_CHARS = 64

# Python's str.isspace() characters (what the original's `\s` means); RE2's \s is ASCII only.
_SPACE = r"\t\x0b\x0c\r\x1c-\x1f\x85\p{Z}"
# ftfy's remove_control_chars set, less the whitespace above: removed outright.
_CONTROL = r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\x{fff9}-\x{fffc}]"

# (pattern, replacement) applied in order: ftfy's simple parts, then `text_standardize`.
_STANDARDIZE = (
    (r"\r\n?", "\n"),
    (_CONTROL, ""),
    ("[\u02bc\u2018-\u201b]", "'"),
    ("[\u201c-\u201f]", '"'),
    ("\u2014|\u2013|\u2015", "-"),
    ("\u2026", "..."),
    ("\u00b4", "'"),
    (r"""(-+|~+|!+|"+|;+|\?+|\++|,+|\)+|\(+|\\+|/+|\*+|\[+|\]+|\}+|\{+|\|+|_+)""", r" \1 "),
    (rf"[\n{_SPACE}]*\n[\n{_SPACE}]*", " \n "),
    (rf"[{_SPACE}]+", " "),
)

_NEWLINE = "\x01"  # stands for a line break during the split
_ALNUM = r"\p{L}\p{M}\p{N}"
# spaCy's English contraction exceptions as (word, suffix) alternatives: the suffix is split off
# when the word is whole (not preceded by a letter or digit).
_CONTRACTIONS = (
    ("ai|are|ca|could|dare|did|do|does|had|has|have|is|may|might|must|need|ought|sha|should"
     "|was|were|wo|would", "n't|nt"),
    ("i|you|he|she|it|we|they|who|what|where|when|why|how|there|that|this|these|those",
     "'d|'ll|'m|'re|'ve"),
    ("could|might|must|should|would", "'ve"),
    ("can", "not"), ("gon", "na"), ("got", "ta"),
)
_SPLIT_CONTRACTIONS = tuple(
    (rf"(?i)(^|[^{_ALNUM}])({words})({suffixes})\b", r"\1\2 \3")
    for words, suffixes in _CONTRACTIONS
) + ((r"(?i)(\S)('s)\b", r"\1 \2"),)  # spaCy splits 's off any token

# spaCy's English abbreviations that keep their period (case-sensitive, as spaCy's are).
_ABBREVIATIONS = (
    "Adm|Ak|Ala|Apr|Ariz|Ark|Aug|Bros|Calif|Co|Colo|Conn|Corp|Dec|Del|Dr|Feb|Fla|Ga|Gen|Gov|Ia"
    "|Id|Ill|Inc|Ind|Jan|Jr|Jul|Jun|Kan|Kans|Ky|La|Ltd|Mar|Mass|Md|Messrs|Mich|Minn|Miss|Mo"
    "|Mont|Mr|Mrs|Ms|Mt|Neb|Nebr|Nev|Nov|Oct|Okla|Ore|Pa|Ph\\.D|Prof|Rep|Rev|Sen|Sep|Sept|St"
    "|Tenn|Va|Wash|Wis|co|vs|e\\.g|i\\.e|a\\.m|p\\.m|v\\.s"
)
# A word is the leftmost-first match of these alternatives at the current position.
_WORD = "|".join((
    r"(?i:'(?:s|d|ll|m|re|ve|em|cause|bout|cos|coz|cuz|nuff))\b",
    r"(?i:doin|goin|havin|lovin|nothin|nuthin|somethin|ol)'",
    r"\.\.+",
    rf"\p{{Lu}}\.(?:\p{{L}}\.)+",
    rf"(?:{_ABBREVIATIONS})\.",
    r"\p{L}\.",
    r"\p{N}+(?::\p{N}+)+",
    rf"[{_ALNUM}]+(?:['.][{_ALNUM}]+)*",
    r"-+|~+|/+|\\+|\|+",
    r"\S",
))

Texts = Union[tf.Tensor, Sequence[str]]


def pre_tokenize(texts: Texts) -> tf.RaggedTensor:
    """Splits text into GPT-1 words.

    texts: string [batch]. Returns string RaggedTensor [batch, (words)], lower-cased; a line
    break is the word "\\n" as in the original.
    """
    t = tf_text.normalize_utf8(tf.convert_to_tensor(texts, tf.string), "NFC")
    for pattern, rewrite in _STANDARDIZE + _SPLIT_CONTRACTIONS:
        t = tf.strings.regex_replace(t, pattern, rewrite)
    # Words are marked by spaces around each match and cut by the fast whitespace split
    # (regex_split is ~7x slower); line breaks become a control character, which cannot be in
    # the text any more, so that the split keeps them.
    t = tf.strings.regex_replace(t, "\n", _NEWLINE)
    t = tf.strings.regex_replace(t, _WORD, r" \0 ")
    # Lower-casing after the rules, which are case-sensitive, as the original lower-cased
    # spaCy's tokens; spaces delimit the context of ICU's final-sigma rule just as well.
    words = tf.strings.split(tf.strings.lower(t, encoding="utf-8"))
    return tf.ragged.map_flat_values(
        lambda w: tf.where(w == _NEWLINE, "\n", w), words)


def _read_bpe_files(encoder_file: str,
                    merges_file: str) -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
    """Loads and validates the encoder JSON and the ranked merges; errors name file and line."""
    for path in (encoder_file, merges_file):
        if not os.path.isfile(path):
            raise ValueError(f"{path}: BPE file does not exist")
    with open(encoder_file, encoding="utf-8") as f:
        try:
            encoder = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{encoder_file}, line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(encoder, dict) or not encoder:
        raise ValueError(f"{encoder_file}: expected a non-empty JSON object token -> id")
    ids = set()
    for token, i in encoder.items():
        if type(i) is not int or not 0 <= i < len(encoder) or i in ids:
            raise ValueError(f"{encoder_file}: token {token!r} has id {i!r}; ids must be the "
                             f"integers 0..{len(encoder) - 1}, each used once")
        ids.add(i)
    merges: List[Tuple[str, str]] = []
    seen: Dict[Tuple[str, str], int] = {}
    with open(merges_file, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if (line_number == 1 and line.startswith("#version")) or not line:
                continue
            parts = line.split(" ")
            where = f"{merges_file}, line {line_number}"
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"{where}: expected two symbols separated by one space, "
                                 f"got {line!r}")
            pair = (parts[0], parts[1])
            for symbol in (*pair, pair[0] + pair[1]):
                if symbol not in encoder:
                    raise ValueError(f"{where}: symbol {symbol!r} of merge {line!r} is not "
                                     f"in {encoder_file}")
            if pair in seen:
                raise ValueError(f"{where}: merge {line!r} repeats line {seen[pair]}")
            seen[pair] = line_number
            merges.append(pair)
    return encoder, merges


class _EagerBpe:
    """Plain-Python state of the eager path: vocabulary, merge ranks and the word cache.

    Kept out of tf.Module's attribute tracking, whose dict wrappers slow every lookup ~5x.
    """

    def __init__(self, encoder: Dict[str, int], merges: List[Tuple[str, str]]):
        self.encoder = encoder
        self.decoder = {i: token for token, i in encoder.items()}
        self.unk_id: Optional[int] = encoder.get(UNK_TOKEN)
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.cache: Dict[bytes, List[int]] = {}

    def bpe(self, word: str) -> List[int]:
        """The original merge loop on one word (in pieces of MAX_BPE_PIECE_CHARS when it is
        longer): ids of its symbols."""
        symbols = list(word[:-1]) + [word[-1] + WORD_END]
        step = MAX_BPE_PIECE_CHARS
        merged = [s for start in range(0, len(symbols), step)
                  for s in self.merge(symbols[start:start + step])]
        ids = [self.encoder.get(s, self.unk_id) for s in merged]
        return [i for i in ids if i is not None]

    def merge(self, symbols: List[str]) -> List[str]:
        """Merges the lowest-ranked pair (all occurrences, left to right) until none is
        left in the merge list."""
        ranks = self.ranks
        while len(symbols) > 1:
            pair = min(zip(symbols, symbols[1:]), key=lambda p: ranks.get(p, _NO_MERGE))
            if pair not in ranks:
                break
            merged, i = [], 0
            while i < len(symbols):  # every occurrence, left to right, as the original
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def word_ids(self, words: List[bytes]) -> List[List[int]]:
        """UTF-8 words -> ids per word, memoised."""
        cache, out = self.cache, []
        for word in words:
            ids = cache.get(word)
            if ids is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                ids = cache[word] = self.bpe(word.decode("utf-8"))
            out.append(ids)
        return out


class GptBpeTokenizer(tf.Module):
    """The GPT-1 tokenizer: the BPE vocabulary, then the added tokens (start, delimiter,
    classify); 40478 + 3 = 40481 ids for the original files.

    `encode` (Python lists, memoised, for data creation) and `tokenize` (TensorFlow ops, for
    tf.function, tf.data and SavedModels) return the same ids.
    """

    family = "gpt"  # the layout its special tokens serve (tfmodels.preprocessing)

    def __init__(self, encoder_file: str, merges_file: str,
                 special_tokens: Sequence[str] = SPECIAL_TOKENS, name: Optional[str] = None):
        super().__init__(name=name)
        encoder, merges = _read_bpe_files(encoder_file, merges_file)
        special_tokens = tuple(special_tokens)
        if len(special_tokens) != 3 or len(set(special_tokens)) != 3:
            raise ValueError(f"expected 3 distinct added tokens, got {special_tokens}")
        for token in special_tokens:
            if token in encoder:
                raise ValueError(f"{encoder_file}: added token {token!r} is already present")
            encoder[token] = len(encoder)
        self._eager = _EagerBpe(encoder, merges)

        # Graph tables. Symbols are ids; a symbol missing from the encoder gets the id
        # `vocab_size`, which is in no merge. A pair (a, b) is the key a * (vocab_size + 1) + b.
        tokens = list(encoder)
        self._symbol_ids = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(tokens), tf.constant([encoder[t] for t in tokens], tf.int64)),
            default_value=self.vocab_size)
        keys = [encoder[a] * (self.vocab_size + 1) + encoder[b] for a, b in merges]
        self._pair_ranks = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(keys or [-1], tf.int64),
                tf.constant(list(range(len(merges))) or [_NO_MERGE], tf.int32)),
            default_value=_NO_MERGE)
        self._merged_ids = tf.constant([encoder[a + b] for a, b in merges], tf.int64)

    @property
    def encoder(self) -> Dict[str, int]:
        """token -> id, added tokens included."""
        return self._eager.encoder

    @property
    def decoder(self) -> Dict[int, str]:
        """id -> token."""
        return self._eager.decoder

    @property
    def merges(self) -> List[Tuple[str, str]]:
        """The merge list in rank order (what a merges file holds)."""
        ranks = self._eager.ranks
        return sorted(ranks, key=ranks.get)

    @property
    def special_tokens(self) -> Tuple[str, str, str]:
        """The added tokens (start, delimiter, classify)."""
        return tuple(self._eager.decoder[self.bpe_vocab_size + i] for i in range(3))

    @property
    def unk_id(self) -> Optional[int]:
        """Id that symbols missing from the encoder map to; None: they are dropped."""
        return self._eager.unk_id

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (40481 for the original files)."""
        return len(self._eager.encoder)

    @property
    def bpe_vocab_size(self) -> int:
        """Number of ids in the encoder file (40478 for the original files)."""
        return len(self._eager.encoder) - 3

    @property
    def start_id(self) -> int:
        return self.bpe_vocab_size

    @property
    def delimiter_id(self) -> int:
        return self.bpe_vocab_size + 1

    @property
    def classify_id(self) -> int:
        return self.bpe_vocab_size + 2

    @staticmethod
    def clean_text(text: str) -> str:
        """`ftfy.fix_text` (mojibake, HTML entities, ligatures, widths...): Python only, the
        offline clean-up of data creation; `tokenize` does not run it."""
        import ftfy
        return ftfy.fix_text(text)

    # ---- eager path ---------------------------------------------------------------------
    def encode(self, texts: Iterable[str], clean: bool = True) -> List[List[int]]:
        """Texts -> one list of ids per text.

        clean: run `clean_text` (ftfy) first, as the original did. Words are split by
        `pre_tokenize` in chunks of lines; each distinct word's ids are memoised.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings, not a string")
        texts = iter(texts)
        results: List[List[int]] = []
        while True:
            chunk = list(itertools.islice(texts, _ENCODE_CHUNK))
            if not chunk:
                return results
            if clean:
                chunk = [self.clean_text(t) for t in chunk]
            words = pre_tokenize(chunk)
            word_ids = self._eager.word_ids(words.flat_values.numpy().tolist())
            splits = words.row_splits.numpy().tolist()
            results.extend(list(itertools.chain.from_iterable(word_ids[a:b]))
                           for a, b in zip(splits, splits[1:]))

    def decode(self, ids: Iterable[int]) -> str:
        """ids -> text: symbols joined, `</w>` read as a space; added tokens read as words."""
        decoder, first_added = self._eager.decoder, self.bpe_vocab_size
        text = "".join(decoder[i] + WORD_END if i >= first_added else decoder[i]
                       for i in map(int, ids))
        return text.replace(WORD_END, " ").strip()

    # ---- graph path ---------------------------------------------------------------------
    def _merge_step(self, symbols: tf.Tensor, splits: tf.Tensor, _):
        """One round of merges on every word: symbols int64 [S] with row_splits [n + 1].

        Each word merges all left-to-right, non-overlapping occurrences of its lowest-ranked
        pair. Returns the new (symbols, splits) and whether any word merged.
        """
        rows = tf.ragged.row_splits_to_segment_ids(splits)
        left = tf.where(rows[:-1] == rows[1:])[:, 0]  # symbol index of each pair's left side
        ranks = self._pair_ranks.lookup(
            tf.gather(symbols, left) * (self.vocab_size + 1) + tf.gather(symbols, left + 1))
        pair_rows = tf.gather(rows, left)
        best = tf.math.unsorted_segment_min(ranks, pair_rows, tf.size(splits) - 1)
        match = (ranks == tf.gather(best, pair_rows)) & (ranks < _NO_MERGE)
        # Occurrences can overlap only for a pair (x, x): in a run of adjacent matches keep the
        # 1st, 3rd, ... as the original's left-to-right scan does.
        at = tf.boolean_mask(left, match)
        position = tf.range(tf.size(at, tf.int64))
        run_start = (position == 0) | (tf.gather(at, tf.maximum(position - 1, 0)) != at - 1)
        run_first = tf.boolean_mask(at, run_start)
        offset = at - tf.gather(run_first, tf.cumsum(tf.cast(run_start, tf.int64)) - 1)
        at = tf.boolean_mask(at, offset % 2 == 0)
        merged = tf.gather(self._merged_ids, tf.gather(best, tf.gather(rows, at)))
        symbols = tf.tensor_scatter_nd_update(symbols, at[:, None], merged)
        removed = tf.scatter_nd((at + 1)[:, None], tf.ones_like(at), tf.shape(symbols, tf.int64))
        symbols = tf.boolean_mask(symbols, removed == 0)
        splits -= tf.gather(tf.concat([[0], tf.cumsum(removed)], 0), splits)
        return symbols, splits, tf.reduce_any(match)

    def _bpe_graph(self, words: tf.Tensor) -> tf.RaggedTensor:
        """string [n] words -> int32 RaggedTensor [n, (ids)] after all merges (words longer
        than MAX_BPE_PIECE_CHARS merged in pieces, as the eager path)."""
        chars = tf.strings.unicode_split(words, "UTF-8")
        flat, last = chars.flat_values, chars.row_limits() - 1
        flat = tf.tensor_scatter_nd_update(
            flat, last[:, None], tf.strings.join([tf.gather(flat, last), WORD_END]))
        # Pieces of at most MAX_BPE_PIECE_CHARS characters, each merged as a row of its own.
        lengths = chars.row_lengths()
        step = tf.constant(MAX_BPE_PIECE_CHARS, tf.int64)
        pieces_per_word = (lengths + step - 1) // step
        word_of_piece = tf.repeat(tf.range(tf.size(lengths, tf.int64)), pieces_per_word)
        first_piece = tf.cumsum(pieces_per_word, exclusive=True)
        piece_in_word = (tf.range(tf.reduce_sum(pieces_per_word))
                         - tf.gather(first_piece, word_of_piece))
        piece_starts = tf.gather(chars.row_starts(), word_of_piece) + piece_in_word * step
        piece_splits = tf.concat([piece_starts, tf.size(flat, tf.int64)[None]], 0)
        symbols, splits, _ = tf.while_loop(
            lambda symbols, splits, more: more, self._merge_step,
            (self._symbol_ids.lookup(flat), piece_splits, tf.constant(True)),
            shape_invariants=(tf.TensorShape([None]), tf.TensorShape([None]),
                              tf.TensorShape([])))
        pieces = tf.RaggedTensor.from_row_splits(symbols, splits, validate=False)
        ids = tf.RaggedTensor.from_row_splits(
            pieces, tf.concat([[0], tf.cumsum(pieces_per_word)], 0), validate=False
        ).merge_dims(1, 2)
        unknown = ids.flat_values == self.vocab_size
        if self.unk_id is None:
            return tf.cast(tf.ragged.boolean_mask(ids, ids.with_flat_values(~unknown)), tf.int32)
        # On the flat values: the ragged dispatch of tf.where builds ~1 s of graph per trace.
        return ids.with_flat_values(tf.cast(
            tf.where(unknown, tf.cast(self.unk_id, tf.int64), ids.flat_values), tf.int32))

    def tokenize(self, texts: Texts) -> tf.RaggedTensor:
        """string [batch] -> int32 RaggedTensor [batch, (ids)]; no ftfy (see `clean_text`).

        Built from TensorFlow ops only: runs in tf.function, tf.data and SavedModels. Each
        distinct word of the batch goes through BPE once.
        """
        words = pre_tokenize(texts)
        unique, index = tf.unique(words.flat_values)
        per_word = tf.gather(self._bpe_graph(unique), index)
        return words.with_flat_values(per_word).merge_dims(1, 2)
