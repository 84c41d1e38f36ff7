"""GPT-1 BPE in linear time on any line (issue 15, case 7): a word longer than
MAX_BPE_PIECE_CHARS is merged in pieces, in both the eager and the graph path; every shorter
word keeps the original tokenizer's ids."""
import random
import time

import pytest

from tfmodels.tokenizers import gpt_bpe
from tfmodels.tokenizers.gpt_bpe import MAX_BPE_PIECE_CHARS, WORD_END


@pytest.fixture(scope="module")
def tokenizer(gpt_bpe):
    return gpt_bpe


def original_ids(tokenizer, word):
    """The original merge loop on the whole word (no pieces)."""
    eager = tokenizer._eager
    symbols = eager.merge(list(word[:-1]) + [word[-1] + WORD_END])
    return [eager.encoder.get(s, eager.unk_id) for s in symbols]


def test_words_up_to_the_cap_are_unchanged(tokenizer, shared_data):
    text = (shared_data / "corpus" / "wikitext2-valid.tokens.txt").read_text(encoding="utf-8")
    words = sorted({w.lower() for w in text.split() if w.isalpha()})[:3000]
    rng = random.Random(7)
    # Long made-up words up to the cap, from real word pieces.
    words += ["".join(rng.sample(words, 12))[:MAX_BPE_PIECE_CHARS] for _ in range(50)]
    assert max(map(len, words)) == MAX_BPE_PIECE_CHARS
    assert [tokenizer._eager.bpe(w) for w in words] == [original_ids(tokenizer, w)
                                                        for w in words]
    assert tokenizer.tokenize(words).to_list() == tokenizer.encode(words, clean=False)


def test_a_huge_word_takes_linear_time_and_both_paths_agree(tokenizer, monkeypatch):
    rng = random.Random(15)
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(100_000))
    longest = []
    merge = gpt_bpe._EagerBpe.merge
    monkeypatch.setattr(gpt_bpe._EagerBpe, "merge",
                        lambda self, symbols: longest.append(len(symbols)) or merge(self,
                                                                                    symbols))
    start = time.perf_counter()
    ids = tokenizer.encode([word], clean=False)[0]
    seconds = time.perf_counter() - start
    assert max(longest) == MAX_BPE_PIECE_CHARS and len(longest) == 100_000 // 64 + 1
    assert seconds < 20  # the whole-word loop took minutes (quadratic)
    assert tokenizer.tokenize([word]).to_list()[0] == ids
    # Pieces merge on their own: the ids are those of the pieces, `</w>` on the last one.
    pieces = [word[i:i + MAX_BPE_PIECE_CHARS] for i in range(0, len(word), 64)]
    eager = tokenizer._eager
    expected = [eager.encoder[s] for p in pieces[:-1] for s in eager.merge(list(p))]
    assert ids == expected + original_ids(tokenizer, pieces[-1])
