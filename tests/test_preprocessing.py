"""The one in-graph packer (tfmodels.preprocessing): longest-first truncation, the BERT and GPT-1
layouts, and padding to a fixed width or to the batch's longest row."""
import numpy as np
import pytest
import tensorflow as tf

from tfmodels.preprocessing import TextPacker, keep_lengths


class FakeBertTokenizer:
    cls_id, sep_id, pad_id = 1, 2, 0

    def tokenize(self, texts):
        return tf.strings.to_number(tf.strings.split(texts), tf.int32)


class FakeGptTokenizer(FakeBertTokenizer):
    start_id, delimiter_id, classify_id = 7, 8, 9


def ragged(rows):
    return tf.ragged.constant(rows, dtype=tf.int32)


def kept(lengths, budget):
    return keep_lengths(tf.constant([lengths]), budget).numpy()[0].tolist()


def test_keep_lengths_is_longest_first():
    assert kept([5, 5], 7) == [3, 4]            # tie: the later keeps more
    assert kept([30, 20], 29) == [15, 14]       # the longer keeps more
    assert kept([2, 10], 7) == [2, 5]           # a short part is kept whole
    assert kept([9, 1, 4], 8) == [4, 1, 3]      # any number of parts
    assert kept([3, 1], 10) == [3, 1]           # fits: nothing cut


def test_keep_lengths_matches_pop_the_longest_rule():
    """Against the definition: pop a token from the longest part until the parts fit; among
    equally long parts, from the one that was shorter to begin with (then the earlier) — random
    lengths, 2 and 3 parts."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(0, 40, size=rng.integers(2, 4)).tolist()
        budget = int(rng.integers(len(lengths), 60))
        expected = list(lengths)
        while sum(expected) > budget:
            longest = max(expected)
            tied = [i for i, n in enumerate(expected) if n == longest]
            expected[min(tied, key=lambda i: (lengths[i], i))] -= 1
        assert kept(lengths, budget) == expected, (lengths, budget)


def test_bert_pair_layout_and_padding():
    packer = TextPacker(FakeBertTokenizer(), "bert", 10)
    packed = packer.pack([ragged([[5, 6, 7]]), ragged([[8, 9]])], width=10)
    assert packed["input_ids"].numpy().tolist() == [[1, 5, 6, 7, 2, 8, 9, 2, 0, 0]]
    assert packed["segment_ids"].numpy().tolist() == [[0, 0, 0, 0, 0, 1, 1, 1, 0, 0]]
    assert packed["input_mask"].numpy().tolist() == [[1, 1, 1, 1, 1, 1, 1, 1, 0, 0]]
    assert packed["last_position"].numpy().tolist() == [7]


def test_longest_first_truncation_in_rows():
    packer = TextPacker(FakeBertTokenizer(), "bert", 10)
    a10, b3 = list(range(10, 20)), [30, 31, 32]
    packed = packer.pack([ragged([a10]), ragged([b3])], width=10)
    assert packed["input_ids"].numpy().tolist() == [[1, 10, 11, 12, 13, 2, 30, 31, 32, 2]]
    packed = packer.pack([ragged([a10, a10]), ragged([list(range(40, 46)), a10])], width=10)
    assert packed["input_ids"].numpy().tolist() == [
        [1, 10, 11, 12, 13, 2, 40, 41, 42, 2],
        [1, 10, 11, 12, 2, 10, 11, 12, 13, 2]]
    packed = TextPacker(FakeBertTokenizer(), "bert", 6).pack([ragged([a10, []])], width=6)
    assert packed["input_ids"].numpy().tolist() == [[1, 10, 11, 12, 13, 2], [1, 2, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match="too short"):
        TextPacker(FakeBertTokenizer(), "bert", 2).pack([ragged([a10]), ragged([b3])])


def test_rows_pad_to_the_batch_longest_unless_a_width_is_given():
    packer = TextPacker(FakeBertTokenizer(), "bert", 64)
    texts = tf.constant(["5 6 7", "5"])
    dynamic = packer.pack([packer.tokenize(texts)])
    fixed = packer.pack([packer.tokenize(texts)], width=64)
    assert dynamic["input_ids"].shape == (2, 5) and fixed["input_ids"].shape == (2, 64)
    for key in ("input_ids", "segment_ids", "input_mask"):
        np.testing.assert_array_equal(fixed[key].numpy()[:, :5], dynamic[key].numpy())
        assert not fixed[key].numpy()[:, 5:].any()


def test_gpt_layout_groups_parts_into_two_segments():
    packer = TextPacker(FakeGptTokenizer(), "gpt", 9)
    packed = packer.pack([ragged([[10, 11, 12]]), ragged([[20]]), ragged([[30, 31, 32]])],
                         groups=[[0, 1], [2]])
    # budget 9 - 3 specials = 6 over three parts: lengths 3, 1, 3 -> 2, 1, 3 (tie: the later)
    assert packed["input_ids"].numpy().tolist() == [[7, 10, 11, 20, 8, 30, 31, 32, 9]]
    assert not packed["segment_ids"].numpy().any()
    inputs = packer.model_inputs(packed)
    assert sorted(inputs) == ["classify_position", "input_ids", "input_mask"]
    assert inputs["classify_position"].numpy().tolist() == [8]


def test_packer_names_a_tokenizer_of_the_wrong_family():
    with pytest.raises(ValueError, match="GptBpeTokenizer"):
        TextPacker(FakeBertTokenizer(), "gpt", 16)
    with pytest.raises(ValueError, match="input_format"):
        TextPacker(FakeBertTokenizer(), "lstm", 16)
