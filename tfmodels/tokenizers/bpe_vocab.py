"""Learning GPT-1-style BPE merges from a corpus (Sennrich et al. 2016), with `</w>` word ends
and the same word splitting as `GptBpeTokenizer`, writing the original file formats."""
from __future__ import annotations

import collections
import heapq
import json
from typing import Dict, Iterable, List, Tuple

from tfmodels.files import atomic_write_text
from tfmodels.tokenizers.gpt_bpe import WORD_END, pre_tokenize

Pair = Tuple[str, str]


def count_words(texts: Iterable[str], batch_size: int = 4096) -> collections.Counter:
    """Word frequencies after GPT-1 pre-tokenisation (lower-cased, punctuation split)."""
    counts: collections.Counter = collections.Counter()
    batch: List[str] = []

    def flush():
        for words in pre_tokenize(batch).to_list():
            counts.update(w.decode("utf-8") for w in words)
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return counts


def _pairs(symbols: Tuple[str, ...]) -> collections.Counter:
    return collections.Counter(zip(symbols, symbols[1:]))


def _merge(symbols: Tuple[str, ...], pair: Pair) -> Tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def learn_bpe_merges(texts: Iterable[str], num_merges: int,
                     min_frequency: int = 2) -> Tuple[List[Pair], Dict[str, int]]:
    """Learns up to `num_merges` merges, most frequent pair first (ties: smallest pair).

    Returns (merges in rank order, encoder token -> id). The encoder holds `<unk>`, every
    character seen, with and without `</w>`, then each merge result in merge order, so
    `GptBpeTokenizer` can encode any text made of those characters.
    Pair counts are updated incrementally for the words a merge touches, and the best pair
    comes from a heap with stale entries skipped, so a few MB of text take seconds.
    """
    word_counts = count_words(texts)
    if not word_counts:
        raise ValueError("the corpus is empty: no words to learn merges from")
    words = [tuple(w[:-1]) + (w[-1] + WORD_END,) for w in word_counts]
    freqs = list(word_counts.values())
    pair_counts: collections.Counter = collections.Counter()
    where: Dict[Pair, set] = collections.defaultdict(set)
    for index, (symbols, freq) in enumerate(zip(words, freqs)):
        for pair, n in _pairs(symbols).items():
            pair_counts[pair] += n * freq
            where[pair].add(index)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges: List[Pair] = []
    while len(merges) < num_merges and heap:
        negative, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative:
            continue  # stale entry: the count changed after it was pushed
        if -negative < min_frequency:
            break
        merges.append(pair)
        changed = set()
        for index in where.pop(pair, ()):
            old = words[index]
            new = _merge(old, pair)
            freq = freqs[index]
            for p, n in _pairs(old).items():
                pair_counts[p] -= n * freq
                changed.add(p)
            for p, n in _pairs(new).items():
                pair_counts[p] += n * freq
                where[p].add(index)
                changed.add(p)
            words[index] = new
        pair_counts.pop(pair, None)
        for p in changed:
            if pair_counts.get(p, 0) > 0 and p != pair:
                heapq.heappush(heap, (-pair_counts[p], p))
    alphabet = sorted({c for w in word_counts for c in w})
    # `<unk>` first, as in the original vocabulary, for characters never seen here.
    tokens = ["<unk>"] + alphabet + [c + WORD_END for c in alphabet]
    tokens += [a + b for a, b in merges if a + b not in set(tokens)]
    encoder: Dict[str, int] = {}
    for token in tokens:
        encoder.setdefault(token, len(encoder))
    return merges, encoder




def write_bpe_files(merges: List[Pair], encoder: Dict[str, int], encoder_path: str,
                    merges_path: str) -> None:
    """Writes the original formats: encoder JSON and `#version: 0.2` + one merge per line."""
    atomic_write_text(encoder_path, json.dumps(encoder, ensure_ascii=False))
    atomic_write_text(merges_path, "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
