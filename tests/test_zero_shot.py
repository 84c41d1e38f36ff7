"""GPT-1's zero-shot heuristics (Section 5, Figure 2; finetune.zero_shot): LM scoring, CoLA
thresholds, SST-2 continuations, multiple choice and Winograd substitution, checked on a tiny
random GPT-1 against direct computations, and the binary's run over the shared files."""
import json

import keras
import numpy as np
import pytest

from tfmodels import configs
from tfmodels.gpt import GptLanguageModel
from finetune import zero_shot
from tests.support import QUIET


@pytest.fixture(scope="module")
def scorer(gpt_bpe):
    keras.utils.set_random_seed(7)
    lm = GptLanguageModel(configs.get_config("gpt_test", vocab_size=gpt_bpe.vocab_size))
    return zero_shot.LmScorer(lm, gpt_bpe, batch_size=3)


def direct_log_probs(scorer, tokens, first):
    """log p(tokens[t] | tokens[:t]) for t >= first, from one unpadded forward pass."""
    logits = scorer.lm({"input_ids": np.array([tokens], np.int32)})["logits"][0].numpy()
    top = logits.max(-1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    return np.array([log_p[t - 1, tokens[t]] for t in range(first, len(tokens))])


TEXTS = ["the cat sat on the mat .", "a film", "it was a very long and rather dull evening .",
         "yes", "colorless green ideas sleep furiously"]


def test_log_probs_match_a_direct_pass_and_ignore_batch_composition(scorer):
    ids = scorer.encode(TEXTS)
    contexts, continuations = [t[:1] for t in ids], [t[1:] or [5] for t in ids]
    together = scorer.log_probs(contexts, continuations)
    alone = [scorer.log_probs([c], [x])[0] for c, x in zip(contexts, continuations)]
    reversed_ = scorer.log_probs(contexts[::-1], continuations[::-1])[::-1]
    for a, b, c, context, continuation in zip(together, alone, reversed_, contexts,
                                              continuations):
        assert len(a) == len(continuation)
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(a, c, atol=1e-5)
        np.testing.assert_allclose(a, direct_log_probs(scorer, context + continuation,
                                                       len(context)), atol=1e-4)
    # No context and no prefix: the first token is context only.
    assert len(scorer.log_probs([[]], [ids[0]])[0]) == len(ids[0]) - 1


def test_long_contexts_lose_tokens_from_the_left(scorer):
    short = zero_shot.LmScorer(scorer.lm, scorer.tokenizer, max_length=8)
    context, continuation = list(range(100, 120)), [7, 8, 9]
    np.testing.assert_allclose(short.log_probs([context], [continuation])[0],
                               direct_log_probs(scorer, context[-5:] + continuation, 5),
                               atol=1e-4)
    with pytest.raises(ValueError, match="does not fit max_length 8"):
        short.log_probs([[1]], [list(range(8))])


def test_cola_scores_and_thresholds(scorer):
    scores = zero_shot.sentence_scores(scorer, TEXTS[:3])
    for text, score in zip(TEXTS[:3], scores):
        ids = scorer.encode([text])[0]
        assert score == pytest.approx(direct_log_probs(scorer, ids, 1).mean(), abs=1e-4)
    with pytest.raises(ValueError, match="'yes' has no token to score"):
        zero_shot.sentence_scores(scorer, ["yes"])
    rng = np.random.default_rng(0)
    values, labels = rng.normal(size=40).round(1), rng.integers(0, 2, size=40)
    best, threshold = zero_shot.best_threshold_mcc(values, labels)
    brute = max(zero_shot.mcc_at(values, labels, t) for t in np.r_[values, values.min() - 1])
    assert best == pytest.approx(brute) and zero_shot.mcc_at(values, labels, threshold) == \
        pytest.approx(best)
    # By hand: scores 0.1..0.4, labels 0 0 1 1, cut at 0.25 is perfect; at 0.15: tp 2, fp 1,
    # tn 1, fn 0 -> (2 - 0) / sqrt(3 * 2 * 2 * 1) = 0.577.
    assert zero_shot.best_threshold_mcc([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == \
        pytest.approx((1.0, 0.25))
    assert zero_shot.mcc_at([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1], 0.15) == \
        pytest.approx(2 / np.sqrt(12))


def test_sst2_and_multiple_choice_compare_continuations(scorer):
    sentences = ["a gorgeous , witty film", "dull and lifeless"]
    margins = zero_shot.sst2_margins(scorer, sentences)
    for sentence, margin in zip(sentences, margins):
        context = scorer.encode([sentence + " very"])[0]
        pos, neg = scorer.encode([" positive", " negative"])
        expected = (direct_log_probs(scorer, context + pos, len(context)).sum()
                    - direct_log_probs(scorer, context + neg, len(context)).sum())
        assert margin == pytest.approx(expected, abs=1e-4)
    # The median cut calls the top half positive whatever the margins' offset.
    median = zero_shot.median_threshold_accuracy(np.array([-9.0, -8.0, -7.0, -6.0]),
                                                 np.array([0, 0, 1, 1]))
    assert median == {"accuracy_median_threshold": 1.0, "median_margin": -7.5}
    scores = zero_shot.choice_scores(scorer, ["she went to the store ."],
                                     [["she bought milk .", "the moon exploded loudly ."]])[0]
    context = scorer.encode(["she went to the store ."])[0]
    for score, ending in zip(scores, ["she bought milk .", "the moon exploded loudly ."]):
        tokens = scorer.encode([ending])[0]
        assert score == pytest.approx(
            direct_log_probs(scorer, context + tokens, len(context)).mean(), abs=1e-4)


def test_winograd_picks_the_candidate_whose_substituted_sentence_is_likelier(scorer):
    sentence = "the trophy does not fit in the suitcase because it is too big ."
    start = sentence.index(" it ") + 1
    example = zero_shot.WinogradExample(sentence, start, start + 2, ("the trophy", "the suitcase"))
    assert example.substituted("the trophy") == (
        "the trophy does not fit in the suitcase because the trophy", " is too big .")
    scores = zero_shot.winograd_scores(scorer, [example])[0]
    rest = scorer.encode([" is too big ."])[0]
    separate = []
    for candidate in example.candidates:
        prefix = scorer.encode([example.substituted(candidate)[0]])[0]
        whole = scorer.encode([sentence[:start] + candidate + sentence[start + 2:]])[0]
        assert whole == prefix + rest  # substitution at a word boundary keeps the tokens
        separate.append(direct_log_probs(scorer, whole, len(prefix)).sum())
    np.testing.assert_allclose(scores, separate, atol=1e-4)
    assert int(np.argmax(scores)) == int(np.argmax(separate))
    with pytest.raises(ValueError, match="nothing follows the pronoun"):
        zero_shot.winograd_scores(scorer, [zero_shot.WinogradExample("i saw it", 6, 8, ("a",))])


def test_zero_shot_binary_on_the_shared_files(scorer, gpt_bpe_files, shared_data, tmp_path):
    scorer.lm.save(str(tmp_path / "lm.keras"))
    config = zero_shot.ZeroShotConfig(
        checkpoint=str(tmp_path / "lm.keras"), bpe_encoder_file=gpt_bpe_files["encoder"],
        bpe_merges_file=gpt_bpe_files["merges"], data_dir=str(shared_data), max_examples=12,
        max_length=64, output_json=str(tmp_path / "zero_shot.json"))
    results = zero_shot.run_zero_shot(config, log=QUIET)
    assert json.loads((tmp_path / "zero_shot.json").read_text()) == results
    assert results["cola"]["examples"] == 12 and -1 <= results["cola"]["mcc_fixed_threshold"] <= 1
    assert results["cola"]["mcc_best_threshold"] >= results["cola"]["mcc_fixed_threshold"]
    assert 0 <= results["sst2"]["accuracy"] <= 1 and 0 <= results["story_cloze"]["accuracy"] <= 1
    # The binary (tools/zero_shot.py) is flags -> this config -> this call; the ablation
    # workspace imports both names from it.
    from tools import zero_shot as binary
    assert (binary.ZeroShotConfig, binary.run_zero_shot) == (zero_shot.ZeroShotConfig,
                                                            zero_shot.run_zero_shot)
