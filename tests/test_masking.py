"""Dynamic MLM masking (in-graph, tf-text)."""
import numpy as np
import pytest
import tensorflow as tf

from pretraining.masking import mask_packed_inputs
from tfmodels.preprocessing import TextPacker


@pytest.fixture(scope="module")
def tokenizer(wordpiece):
    return wordpiece


def masked(tokenizer, texts, seq_length=64, max_predictions=20, **kwargs):
    packed = TextPacker(tokenizer, "bert", seq_length).encode(texts)
    out = mask_packed_inputs(packed, tokenizer.vocab_size, tokenizer.mask_id,
                             [tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id],
                             max_predictions, **kwargs)
    return packed, {k: v.numpy() for k, v in out.items()}


def test_masking_statistics(tokenizer, shared_data):
    with open(shared_data / "corpus/wikitext2-valid.tokens.txt", encoding="utf-8") as f:
        lines = [line.strip() for line in f if len(line.split()) > 30][:400]
    packed, out = masked(tokenizer, lines)
    original = packed["input_ids"].numpy()
    real = packed["input_mask"].numpy().astype(bool)
    weights = out["masked_lm_weights"] > 0
    rows, cols = np.nonzero(weights)
    positions = out["masked_lm_positions"][rows, cols]
    # Targets are the original tokens; never [CLS], [SEP] or padding.
    np.testing.assert_array_equal(out["masked_lm_ids"][rows, cols], original[rows, positions])
    assert not np.isin(original[rows, positions],
                       [tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id]).any()
    assert real[rows, positions].all()
    # 15% of selectable tokens, capped at max_predictions (62 selectable -> 9 or 10).
    rate = weights.sum() / (real.sum() - 2 * len(lines))
    assert 0.13 < rate < 0.17
    # 80% [MASK], 10% random, 10% unchanged.
    now = out["input_ids"][rows, positions]
    was = original[rows, positions]
    as_mask = np.mean(now == tokenizer.mask_id)
    unchanged = np.mean(now == was)
    assert 0.76 < as_mask < 0.84 and 0.07 < unchanged < 0.13
    # Positions not selected are untouched.
    untouched = original.copy()
    untouched[rows, positions] = out["input_ids"][rows, positions]
    np.testing.assert_array_equal(untouched, out["input_ids"])


def test_fresh_mask_each_call_and_graph_mode(tokenizer):
    texts = ["the cat sat on the mat and looked at the dog for a long while"] * 8
    _, first = masked(tokenizer, texts, seq_length=24, max_predictions=4)
    _, second = masked(tokenizer, texts, seq_length=24, max_predictions=4)
    assert (first["masked_lm_positions"] != second["masked_lm_positions"]).any()
    packed = TextPacker(tokenizer, "bert", 24).encode(texts)
    graph = tf.function(lambda p: mask_packed_inputs(p, tokenizer.vocab_size,
                                                     tokenizer.mask_id, [101, 102, 0], 4))
    shapes = {k: tuple(v.shape) for k, v in graph(packed).items()}
    assert shapes["masked_lm_positions"] == (8, 4) and shapes["input_ids"] == (8, 24)


def test_whole_word_masking_masks_all_pieces(tokenizer):
    # "embeddings" is em ##bed ##ding ##s: 4 pieces at 1-4, 5-8, ...
    texts = ["embeddings " * 6] * 200
    _, out = masked(tokenizer, texts, seq_length=32, max_predictions=8, selection_rate=0.3,
                    continuation_mask=tokenizer.continuation_mask)
    for positions, weights in zip(out["masked_lm_positions"], out["masked_lm_weights"]):
        chosen = positions[weights > 0]
        words, counts = np.unique((chosen - 1) // 4, return_counts=True)
        assert len(chosen) and (counts == 4).all(), chosen


def test_whole_words_that_overflow_the_budget_are_left_alone(tokenizer):
    # 4-piece words and a budget of 6: a second word would be cut, so it must not be chosen,
    # and none of its pieces may be corrupted without a prediction.
    texts = ["embeddings " * 6] * 200
    packed, out = masked(tokenizer, texts, seq_length=32, max_predictions=6,
                         selection_rate=0.5, continuation_mask=tokenizer.continuation_mask)
    original = packed["input_ids"].numpy()
    for row, (positions, weights) in enumerate(zip(out["masked_lm_positions"],
                                                   out["masked_lm_weights"])):
        chosen = positions[weights > 0]
        assert len(chosen) == 4 and len(np.unique((chosen - 1) // 4)) == 1, chosen
        untouched = np.ones(32, bool)
        untouched[chosen] = False
        np.testing.assert_array_equal(out["input_ids"][row][untouched], original[row][untouched])
