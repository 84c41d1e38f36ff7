"""Evaluation metrics for every fine-tuning task, in plain numpy / python.

Each task metric is a function `(labels, predictions) -> dict[str, float]` so the task registry
can treat them alike and model selection can pick one named number. Classification metrics take
class ids (ints, the index into the task's `label_names`); STS-B takes floats; SQuAD takes answer
texts; NER takes tag sequences. No scipy / sklearn: the formulas are short and the tests check
them against hand-computed cases.

Scales: GLUE-style and NER metrics are fractions in [0, 1]. SQuAD EM / F1 are percentages in
[0, 100] with the official scripts' key names (`exact_match`/`f1` for v1.1; `exact`, `f1`,
`HasAns_*`, `NoAns_*`, `best_*` for v2.0), so numbers compare directly with published ones.
"""
from __future__ import annotations

import collections
import re
import string
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

Metrics = Dict[str, float]


# --------------------------------------------------------------------------------------------
# Classification and regression (GLUE, SNLI, SciTail, multiple choice)
# --------------------------------------------------------------------------------------------

def _pair_arrays(labels, predictions) -> Tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(labels), np.asarray(predictions)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels and predictions must be 1-D and the same length; "
                         f"got shapes {y.shape} and {p.shape}")
    if y.size == 0:
        raise ValueError("cannot compute a metric over zero examples")
    return y, p


def accuracy(labels: Sequence, predictions: Sequence) -> Metrics:
    """Fraction of predictions equal to the label."""
    y, p = _pair_arrays(labels, predictions)
    return {"accuracy": float(np.mean(y == p))}


def f1_and_accuracy(labels: Sequence[int], predictions: Sequence[int], positive: int = 1) -> Metrics:
    """Binary F1 of the `positive` class (MRPC, QQP), accuracy, and their mean (GLUE's score).

    F1 is 0 when there are no true positives (precision or recall undefined), as sklearn does.
    """
    y, p = _pair_arrays(labels, predictions)
    tp = float(np.sum((p == positive) & (y == positive)))
    fp = float(np.sum((p == positive) & (y != positive)))
    fn = float(np.sum((p != positive) & (y == positive)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    acc = float(np.mean(y == p))
    return {"f1": f1, "precision": precision, "recall": recall, "accuracy": acc,
            "acc_and_f1": (acc + f1) / 2}


def matthews_corrcoef(labels: Sequence[int], predictions: Sequence[int]) -> Metrics:
    """Matthews correlation (CoLA), the multiclass form that reduces to the 2x2 formula.

    MCC = (c*s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2)) with c correct,
    s samples, p_k / t_k predicted / true counts of class k. 0 when the denominator is 0.
    """
    y, p = _pair_arrays(labels, predictions)
    classes = np.union1d(y, p)
    t_k = np.array([np.sum(y == k) for k in classes], dtype=np.float64)
    p_k = np.array([np.sum(p == k) for k in classes], dtype=np.float64)
    c, s = float(np.sum(y == p)), float(y.size)
    denom = np.sqrt((s * s - p_k @ p_k) * (s * s - t_k @ t_k))
    mcc = float((c * s - p_k @ t_k) / denom) if denom > 0 else 0.0
    return {"mcc": mcc}


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    denom = np.sqrt((x @ x) * (y @ y))
    return float((x @ y) / denom) if denom > 0 else 0.0


def rank_average(values: Sequence[float]) -> np.ndarray:
    """1-based ranks with ties given the mean of the ranks they span (scipy's 'average')."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    # Start index of each run of equal values, and each element's run id.
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    run_id = np.cumsum(np.r_[True, sorted_v[1:] != sorted_v[:-1]]) - 1
    ends = np.r_[starts[1:], v.size]                  # exclusive
    mean_rank = (starts + 1 + ends) / 2.0             # mean of ranks starts+1 .. ends
    ranks = np.empty_like(v)
    ranks[order] = mean_rank[run_id]
    return ranks


def pearson_spearman(labels: Sequence[float], predictions: Sequence[float]) -> Metrics:
    """Pearson and Spearman correlation (STS-B) and their mean `corr`.

    Spearman is Pearson over average ranks (ties share their mean rank). A constant side makes
    a correlation undefined; it is reported as 0.0 so model selection never sees NaN.
    """
    y, p = _pair_arrays(labels, predictions)
    y, p = y.astype(np.float64), p.astype(np.float64)
    pearson = _pearson(y, p)
    spearman = _pearson(rank_average(y), rank_average(p))
    return {"pearson": pearson, "spearman": spearman, "corr": (pearson + spearman) / 2}


# --------------------------------------------------------------------------------------------
# SQuAD (official v1.1 / v2.0 evaluation semantics)
# --------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation, drop articles a/an/the, collapse whitespace (official)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def squad_exact(gold: str, prediction: str) -> int:
    """1 when the normalised strings are equal."""
    return int(normalize_answer(gold) == normalize_answer(prediction))


def squad_f1(gold: str, prediction: str) -> float:
    """Bag-of-tokens F1 between normalised answers; an empty side scores 1 only if both are."""
    gold_toks = normalize_answer(gold).split()
    pred_toks = normalize_answer(prediction).split()
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _check_squad_inputs(gold_answers, predictions) -> None:
    if len(gold_answers) != len(predictions):
        raise ValueError(f"{len(gold_answers)} gold answer lists but {len(predictions)} predictions")
    if not gold_answers:
        raise ValueError("cannot compute a metric over zero questions")


def squad_v1(gold_answers: Sequence[Sequence[str]], predictions: Sequence[str]) -> Metrics:
    """SQuAD v1.1: EM and F1 in percent, each the max over a question's gold answers."""
    _check_squad_inputs(gold_answers, predictions)
    em = f1 = 0.0
    for i, (golds, pred) in enumerate(zip(gold_answers, predictions)):
        if not golds:
            raise ValueError(f"question {i} has no gold answers (SQuAD v1.1 needs at least one)")
        em += max(squad_exact(g, pred) for g in golds)
        f1 += max(squad_f1(g, pred) for g in golds)
    n = len(predictions)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}


def squad_v2_raw_scores(gold_answers: Sequence[Sequence[str]],
                        predictions: Sequence[str]) -> Tuple[List[float], List[float], List[bool]]:
    """Per-question EM and F1 (0/1 scale) and has-answer flags, as the v2.0 script computes them.

    Gold answers that normalise to "" are dropped; a question left with none is unanswerable
    and its only gold answer is "" (so only an empty prediction scores).
    """
    _check_squad_inputs(gold_answers, predictions)
    exact, f1, has_ans = [], [], []
    for golds, pred in zip(gold_answers, predictions):
        golds = [g for g in golds if normalize_answer(g)] or [""]
        exact.append(float(max(squad_exact(g, pred) for g in golds)))
        f1.append(max(squad_f1(g, pred) for g in golds))
        has_ans.append(golds != [""])
    return exact, f1, has_ans


def find_best_threshold(scores: Sequence[float], null_scores: Sequence[float],
                        has_answer: Sequence[bool], predictions: Sequence[str]) -> Tuple[float, float]:
    """The official v2.0 `find_best_thresh`: the null-score threshold that maximises a score.

    `scores` are per-question EM or F1 (0/1 scale) of the non-null `predictions`; `null_scores`
    are the null-odds (BERT: score(null) - best non-null score); a question is predicted
    unanswerable when its null score > threshold. Starting from "all unanswerable", questions
    are switched to answered in increasing null-score order. Returns (best score in percent,
    threshold). Like the official script, the threshold starts at 0.0, so when answering nothing
    is best the returned threshold is 0.0 rather than below the smallest null score.
    """
    if not (len(scores) == len(null_scores) == len(has_answer) == len(predictions)):
        raise ValueError("scores, null_scores, has_answer and predictions must be the same length")
    if not scores:
        raise ValueError("cannot choose a threshold over zero questions")
    cur = best = float(sum(1 for h in has_answer if not h))
    best_thresh = 0.0
    for i in sorted(range(len(scores)), key=lambda j: null_scores[j]):
        if has_answer[i]:
            diff = scores[i]
        else:
            diff = -1.0 if predictions[i] else 0.0
        cur += diff
        if cur > best:
            best, best_thresh = cur, float(null_scores[i])
    return 100.0 * best / len(scores), best_thresh


def apply_null_threshold(predictions: Sequence[str], null_scores: Sequence[float],
                         threshold: float) -> List[str]:
    """Replace a prediction with "" (no answer) where its null score exceeds the threshold."""
    return ["" if s > threshold else p for p, s in zip(predictions, null_scores)]


def squad_v2(gold_answers: Sequence[Sequence[str]], predictions: Sequence[str],
             null_scores: Optional[Sequence[float]] = None,
             threshold: float = 0.0) -> Metrics:
    """SQuAD v2.0 EM / F1 in percent with HasAns / NoAns breakdowns (official key names).

    `predictions` are final answers ("" = unanswerable) unless `null_scores` is given: then they
    are the best non-null answers, `threshold` turns them into final answers, and `best_exact`,
    `best_f1` and their thresholds (see `find_best_threshold`) are added.
    """
    _check_squad_inputs(gold_answers, predictions)
    final = (list(predictions) if null_scores is None
             else apply_null_threshold(predictions, null_scores, threshold))
    exact, f1, has_ans = squad_v2_raw_scores(gold_answers, final)
    n = len(final)
    out: Metrics = {"exact": 100.0 * sum(exact) / n, "f1": 100.0 * sum(f1) / n, "total": float(n)}
    for name, keep in (("HasAns", True), ("NoAns", False)):
        idx = [i for i, h in enumerate(has_ans) if h == keep]
        if idx:
            out[f"{name}_exact"] = 100.0 * sum(exact[i] for i in idx) / len(idx)
            out[f"{name}_f1"] = 100.0 * sum(f1[i] for i in idx) / len(idx)
            out[f"{name}_total"] = float(len(idx))
    if null_scores is not None:
        raw_exact, raw_f1, _ = squad_v2_raw_scores(gold_answers, predictions)
        out["best_exact"], out["best_exact_thresh"] = find_best_threshold(
            raw_exact, null_scores, has_ans, predictions)
        out["best_f1"], out["best_f1_thresh"] = find_best_threshold(
            raw_f1, null_scores, has_ans, predictions)
    return out


# --------------------------------------------------------------------------------------------
# Entity-level NER (conlleval semantics; IOB1 and IOB2)
# --------------------------------------------------------------------------------------------

def _split_tag(tag: str) -> Tuple[str, str]:
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BI":
        return tag[0], tag[2:]
    raise ValueError(f"tag {tag!r} is not 'O', 'B-<type>' or 'I-<type>'")


def iob_chunks(tags: Sequence[str]) -> List[Tuple[str, int, int]]:
    """Chunks (type, start, end exclusive) of one sentence, with conlleval's rules.

    A chunk starts at B-X, or at I-X after O or after a different type; it ends before O, B-*
    or a different type. This reads IOB1 (B- only separates adjacent same-type chunks) and IOB2
    (every chunk starts with B-) alike, so one function serves both schemes.
    """
    chunks = []
    start, cur_type = None, ""
    for i, tag in enumerate(tags):
        prefix, typ = _split_tag(tag)
        begins = prefix == "B" or (prefix == "I" and typ != cur_type)
        if start is not None and (prefix == "O" or begins):
            chunks.append((cur_type, start, i))
            start, cur_type = None, ""
        if begins:
            start, cur_type = i, typ
    if start is not None:
        chunks.append((cur_type, start, len(tags)))
    return chunks


def iob1_to_iob2(tags: Sequence[str]) -> List[str]:
    """Rewrite IOB1 tags so that every chunk begins with B- (IOB2); IOB2 input is unchanged."""
    out = ["O"] * len(tags)
    for typ, start, end in iob_chunks(tags):
        out[start] = f"B-{typ}"
        for i in range(start + 1, end):
            out[i] = f"I-{typ}"
    return out


def ner_f1(labels: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> Metrics:
    """Entity-level precision / recall / F1 over sentences of tags (conlleval), plus per type.

    A predicted chunk counts only if type, start and end all match a gold chunk. Also returns
    token accuracy and `f1_<TYPE>` for every type seen in gold or predictions.
    """
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} gold sentences but {len(predictions)} predicted")
    if not labels:
        raise ValueError("cannot compute a metric over zero sentences")
    correct: Dict[str, int] = collections.Counter()
    n_gold: Dict[str, int] = collections.Counter()
    n_pred: Dict[str, int] = collections.Counter()
    tok_correct = tok_total = 0
    for i, (gold, pred) in enumerate(zip(labels, predictions)):
        if len(gold) != len(pred):
            raise ValueError(f"sentence {i}: {len(gold)} gold tags but {len(pred)} predicted")
        gold_chunks, pred_chunks = set(iob_chunks(gold)), set(iob_chunks(pred))
        for typ, _, _ in gold_chunks:
            n_gold[typ] += 1
        for typ, _, _ in pred_chunks:
            n_pred[typ] += 1
        for typ, _, _ in gold_chunks & pred_chunks:
            correct[typ] += 1
        tok_correct += sum(g == p for g, p in zip(gold, pred))
        tok_total += len(gold)

    def prf(c: int, g: int, p: int) -> Tuple[float, float, float]:
        precision = c / p if p else 0.0
        recall = c / g if g else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return precision, recall, f1

    precision, recall, f1 = prf(sum(correct.values()), sum(n_gold.values()), sum(n_pred.values()))
    out: Metrics = {"precision": precision, "recall": recall, "f1": f1,
                    "accuracy": tok_correct / tok_total if tok_total else 0.0}
    for typ in sorted(set(n_gold) | set(n_pred)):
        out[f"f1_{typ}"] = prf(correct[typ], n_gold[typ], n_pred[typ])[2]
    return out


def from_mapping(fn, gold: Mapping[str, object], predictions: Mapping[str, object]) -> Metrics:
    """Apply a `(labels, predictions)` metric to two dicts keyed by example id (gold's order).

    Raises ValueError naming up to five ids that have no prediction.
    """
    missing = [k for k in gold if k not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} ids have no prediction, e.g. {missing[:5]}")
    keys = list(gold)
    return fn([gold[k] for k in keys], [predictions[k] for k in keys])
