"""Fine-tuning metrics against hand-computed cases (worked out in the comments) and independent
formulas, and against scikit-learn and scipy (test-only oracles: the `test` extra installs
them; the library itself does not depend on them)."""
import math

import numpy as np
import pytest

from finetune import metrics


# ------------------------------------------------------------------ classification / regression

# labels  1 1 1 0 0 0 1 0
# preds   1 0 1 1 1 0 1 0
# tp = 3 (idx 0,2,6)  fp = 2 (idx 3,4)  fn = 1 (idx 1)  tn = 2 (idx 5,7)
LABELS = [1, 1, 1, 0, 0, 0, 1, 0]
PREDS = [1, 0, 1, 1, 1, 0, 1, 0]


def test_accuracy_hand_computed():
    assert metrics.accuracy([0, 1, 1, 0, 1], [0, 1, 0, 0, 0]) == {"accuracy": pytest.approx(3 / 5)}
    assert metrics.accuracy(LABELS, PREDS)["accuracy"] == pytest.approx(5 / 8)


def test_binary_f1_hand_computed():
    # precision 3/5, recall 3/4, F1 = 2 * 0.6 * 0.75 / 1.35 = 2/3, accuracy 5/8
    m = metrics.f1_and_accuracy(LABELS, PREDS)
    assert m["precision"] == pytest.approx(0.6)
    assert m["recall"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(0.625)
    assert m["acc_and_f1"] == pytest.approx((0.625 + 2 / 3) / 2)
    # Class 0 as positive: tp 2 (idx 5,7), fp 1 (idx 1), fn 2 (idx 3,4): P 2/3, R 1/2, F1 4/7.
    assert metrics.f1_and_accuracy(LABELS, PREDS, positive=0)["f1"] == pytest.approx(4 / 7)
    # No positive predicted and none true: F1 defined as 0, accuracy 1.
    assert metrics.f1_and_accuracy([0, 0], [0, 0])["f1"] == 0.0


def test_mcc_hand_computed():
    # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (6 - 2) / sqrt(5*4*4*3) = 4/sqrt(240)
    assert metrics.matthews_corrcoef(LABELS, PREDS)["mcc"] == pytest.approx(4 / math.sqrt(240))
    assert metrics.matthews_corrcoef([0, 1, 1, 0], [0, 1, 1, 0])["mcc"] == pytest.approx(1.0)
    assert metrics.matthews_corrcoef([0, 1, 1, 0], [1, 0, 0, 1])["mcc"] == pytest.approx(-1.0)
    # Constant prediction: denominator 0 -> 0 (sklearn's convention).
    assert metrics.matthews_corrcoef([0, 1, 1, 0], [1, 1, 1, 1])["mcc"] == 0.0
    # 3 classes: labels 0 0 1 1 2 2, preds 0 1 1 1 2 0: c=4, s=6, t=(2,2,2), p=(2,3,1)
    # (c*s - p.t) / sqrt((s^2 - p.p)(s^2 - t.t)) = (24 - 12) / sqrt((36 - 14)(36 - 12)) = 12/sqrt(528)
    assert metrics.matthews_corrcoef([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0])["mcc"] == pytest.approx(
        12 / math.sqrt(528))


def test_mcc_binary_matches_2x2_formula_on_random_data():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, p = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
        tp, tn = np.sum((y == 1) & (p == 1)), np.sum((y == 0) & (p == 0))
        fp, fn = np.sum((y == 0) & (p == 1)), np.sum((y == 1) & (p == 0))
        expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        assert metrics.matthews_corrcoef(y, p)["mcc"] == pytest.approx(expected)


def test_pearson_spearman_hand_computed():
    # x = 1 2 3 4 5, y = 2 4 5 4 5. Deviations dx = -2 -1 0 1 2, dy = -2 0 1 0 1:
    # Pearson = 6 / sqrt(10 * 6).
    # Ranks of y with ties averaged: 2->1, the two 4s -> 2.5, the two 5s -> 4.5, so ranks
    # 1 2.5 4.5 2.5 4.5, deviations -2 -.5 1.5 -.5 1.5: Spearman = 7 / sqrt(10 * 9).
    m = metrics.pearson_spearman([1, 2, 3, 4, 5], [2, 4, 5, 4, 5])
    assert m["pearson"] == pytest.approx(6 / math.sqrt(60))
    assert m["spearman"] == pytest.approx(7 / math.sqrt(90))
    assert m["corr"] == pytest.approx((6 / math.sqrt(60) + 7 / math.sqrt(90)) / 2)
    np.testing.assert_allclose(metrics.rank_average([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    np.testing.assert_allclose(metrics.rank_average([3, 3, 3]), [2, 2, 2])
    # A constant side has no correlation; reported as 0, never NaN.
    assert metrics.pearson_spearman([1, 2, 3], [2, 2, 2]) == {"pearson": 0.0, "spearman": 0.0, "corr": 0.0}


def test_correlations_match_independent_formulas():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=40), rng.normal(size=40)
    m = metrics.pearson_spearman(x, y)
    assert m["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    # Without ties Spearman = 1 - 6 sum d^2 / (n (n^2 - 1)), d the rank differences.
    d = (np.argsort(np.argsort(x)) - np.argsort(np.argsort(y))).astype(float)
    assert m["spearman"] == pytest.approx(1 - 6 * np.sum(d ** 2) / (40 * (40 ** 2 - 1)))
    # Spearman is invariant to monotone transforms.
    assert metrics.pearson_spearman(x, np.exp(x))["spearman"] == pytest.approx(1.0)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="same length"):
        metrics.accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="zero"):
        metrics.accuracy([], [])


def test_agreement_with_sklearn():
    sk = pytest.importorskip("sklearn.metrics", reason="pip install -e '.[test]' (scikit-learn)")
    rng = np.random.default_rng(2)
    for trial in range(5):
        n = int(rng.integers(20, 200))
        y, p = rng.integers(0, 3, n), rng.integers(0, 3, n)
        p = np.where(rng.random(n) < 0.3 * trial / 4, y, p)    # from chance to well correlated
        assert metrics.accuracy(y, p)["accuracy"] == pytest.approx(sk.accuracy_score(y, p))
        assert metrics.matthews_corrcoef(y, p)["mcc"] == pytest.approx(sk.matthews_corrcoef(y, p))
        yb, pb = y % 2, p % 2
        m = metrics.f1_and_accuracy(yb, pb)
        assert m["f1"] == pytest.approx(sk.f1_score(yb, pb))
        assert m["precision"] == pytest.approx(sk.precision_score(yb, pb))
        assert m["recall"] == pytest.approx(sk.recall_score(yb, pb))
    # Degenerate cases: one class predicted everywhere (sklearn: MCC 0).
    assert metrics.matthews_corrcoef([0, 1, 1, 0], [1, 1, 1, 1])["mcc"] == \
        sk.matthews_corrcoef([0, 1, 1, 0], [1, 1, 1, 1]) == 0.0


def test_agreement_with_scipy_pearson_and_spearman():
    stats = pytest.importorskip("scipy.stats", reason="pip install -e '.[test]' (scipy)")
    rng = np.random.default_rng(3)
    for trial in range(5):
        labels = rng.integers(0, 26, 150) / 5.0          # STS-B-like: 0..5 in steps, many ties
        predictions = labels * trial / 4 + rng.normal(0, 1, 150)
        if trial == 4:
            predictions = np.round(predictions)           # ties on both sides
        m = metrics.pearson_spearman(labels, predictions)
        assert m["pearson"] == pytest.approx(stats.pearsonr(labels, predictions)[0], abs=1e-12)
        assert m["spearman"] == pytest.approx(stats.spearmanr(labels, predictions)[0], abs=1e-12)
        np.testing.assert_allclose(metrics.rank_average(predictions),
                                   stats.rankdata(predictions, method="average"))


# ------------------------------------------------------------------ SQuAD

def test_normalize_answer_official_steps():
    # lower -> drop punctuation -> drop a/an/the as words -> collapse whitespace
    assert metrics.normalize_answer("The  Cat's hat!") == "cats hat"
    assert metrics.normalize_answer("An apple, a day.") == "apple day"
    assert metrics.normalize_answer("Theatre and anthem") == "theatre and anthem"   # not words


def test_squad_f1_hand_computed():
    # gold tokens {big, red, dog}, predicted {red, dog, barked}: 2 shared, P = R = 2/3
    assert metrics.squad_f1("the big red dog", "red dog barked") == pytest.approx(2 / 3)
    assert metrics.squad_f1("", "") == 1.0 and metrics.squad_f1("x", "") == 0.0


def test_squad_v1_hand_computed():
    gold = [["Denver Broncos", "The Denver Broncos"], ["Saint Bernadette Soubirous"], ["1858", "in 1858"]]
    pred = ["denver broncos!", "Bernadette", "in 1858 year"]
    # q1: normalised equal -> EM 1, F1 1.
    # q2: P 1/1, R 1/3 -> F1 0.5, EM 0.
    # q3: vs "1858": P 1/3 R 1 -> 0.5; vs "in 1858": P 2/3 R 1 -> 0.8; max 0.8, EM 0.
    m = metrics.squad_v1(gold, pred)
    assert m["exact_match"] == pytest.approx(100 / 3)
    assert m["f1"] == pytest.approx(100 * (1 + 0.5 + 0.8) / 3)


def test_squad_v2_hand_computed():
    gold = [["Denver Broncos"], [], [], ["Saint Bernadette Soubirous"], ["the"]]
    pred = ["Denver Broncos", "", "something", "", ""]
    # q1 answered right (1/1); q2 no answer, empty prediction (1/1); q3 no answer but answered
    # (0/0); q4 has an answer but predicted none (0/0); q5's only gold normalises to "" so it
    # counts as unanswerable and the empty prediction scores (1/1).
    m = metrics.squad_v2(gold, pred)
    assert m["exact"] == pytest.approx(60.0) and m["f1"] == pytest.approx(60.0)
    assert m["total"] == 5
    assert m["HasAns_exact"] == pytest.approx(50.0) and m["HasAns_total"] == 2
    assert m["NoAns_exact"] == pytest.approx(200 / 3) and m["NoAns_total"] == 3


def test_find_best_threshold_hand_computed():
    # q0 has answer, non-null F1 1.0, null score -2     q1 has answer, F1 1.0, null score 1
    # q2 no answer, predicts "x", null score 2          q3 no answer, predicts "y", null score 3
    # All null: 2 (q2, q3). In null-score order: +q0 -> 3 (thr -2), +q1 -> 4 (thr 1),
    # +q2 -> 3, +q3 -> 2. Best 4/4 at threshold 1.
    scores, null, has, pred = [1.0, 1.0, 0.0, 0.0], [-2, 1, 2, 3], [True, True, False, False], ["a", "b", "x", "y"]
    assert metrics.find_best_threshold(scores, null, has, pred) == (pytest.approx(100.0), 1)
    # q1 only half right: +q0 -> 3 (thr -2), +q2 -> 2 (q2 now null score 0), +q1 -> 2.5, +q3 -> 1.5.
    assert metrics.find_best_threshold([1.0, 0.5, 0, 0], [-2, 1, 0, 3], has, pred) == (pytest.approx(75.0), -2)
    # Answering nothing is best: like the official script the threshold stays at 0.0.
    assert metrics.find_best_threshold([0, 0], [-1, -0.5], [False, False], ["x", "y"]) == (100.0, 0.0)


def test_squad_v2_with_null_scores_applies_threshold_and_finds_best():
    gold = [["Denver"], ["big cat"], [], []]
    best_non_null = ["Denver", "big", "x", "y"]
    null = [-2.0, 1.0, 0.0, 3.0]
    # Threshold 0: null where score > 0 -> q1 (has answer: 0) and q3 (correct: 1) are null;
    # q0 right (1), q2 answered "x" (0). EM 2/4. F1 also 2/4.
    m = metrics.squad_v2(gold, best_non_null, null_scores=null, threshold=0.0)
    assert m["exact"] == pytest.approx(50.0) and m["f1"] == pytest.approx(50.0)
    # best F1: +q0 -> 3 (thr -2), +q2 -> 2, +q1 (F1 of "big" vs "big cat" = 2/3) -> 2.67, +q3 -> 1.67
    assert m["best_f1"] == pytest.approx(75.0) and m["best_f1_thresh"] == -2.0
    final = metrics.apply_null_threshold(best_non_null, null, m["best_f1_thresh"])
    assert final == ["Denver", "", "", ""]
    assert metrics.squad_v2(gold, final)["f1"] == pytest.approx(m["best_f1"])


# ------------------------------------------------------------------ NER

def test_iob_chunks_conlleval_rules():
    # IOB1: I- starts a chunk after O / another type; B- only splits same-type neighbours.
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG"]
    assert metrics.iob_chunks(iob1) == [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5), ("ORG", 5, 7)]
    assert metrics.iob1_to_iob2(iob1) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG"]
    iob2 = metrics.iob1_to_iob2(iob1)
    assert metrics.iob1_to_iob2(iob2) == iob2          # IOB2 is a fixed point
    # B-X I-Y: the I- of another type starts a new chunk.
    assert metrics.iob_chunks(["B-LOC", "I-ORG"]) == [("LOC", 0, 1), ("ORG", 1, 2)]
    with pytest.raises(ValueError, match="PER"):
        metrics.iob_chunks(["O", "PER"])


def test_ner_f1_hand_computed():
    gold = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "O", "B-ORG"]   # PER(0,2) LOC(3,4) LOC(4,5) ORG(6,7)
    pred = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-MISC"]  # PER(0,2) LOC(3,5) MISC(6,7)
    # Only PER matches exactly: P = 1/3, R = 1/4, F1 = 2 * (1/12) / (7/12) = 2/7.
    # Tokens equal at 0,1,2,3,5: accuracy 5/7.
    m = metrics.ner_f1([gold], [pred])
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 4)
    assert m["f1"] == pytest.approx(2 / 7)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["f1_PER"] == 1.0 and m["f1_LOC"] == 0.0 and m["f1_ORG"] == 0.0 and m["f1_MISC"] == 0.0


def test_ner_f1_iob1_and_iob2_score_the_same_entities():
    iob1 = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"], ["O", "I-ORG"]]
    iob2 = [metrics.iob1_to_iob2(s) for s in iob1]
    assert metrics.ner_f1(iob1, iob2)["f1"] == 1.0
    # Chunks never span sentences: I-PER | I-PER in two sentences is two chunks, matching
    # B-PER | B-PER; in one sentence it is one chunk (0, 2) against gold's (0, 1) and (1, 2).
    assert metrics.ner_f1([["B-PER"], ["B-PER"]], [["I-PER"], ["I-PER"]])["f1"] == 1.0
    assert metrics.ner_f1([["B-PER", "B-PER"]], [["I-PER", "I-PER"]])["f1"] == 0.0
    with pytest.raises(ValueError, match="sentence 0"):
        metrics.ner_f1([["O"]], [["O", "O"]])


def test_from_mapping_orders_by_gold_and_reports_missing():
    assert metrics.from_mapping(metrics.accuracy, {"a": 1, "b": 0}, {"b": 0, "a": 0})["accuracy"] == 0.5
    with pytest.raises(ValueError, match="'b'"):
        metrics.from_mapping(metrics.accuracy, {"a": 1, "b": 0}, {"a": 1})
