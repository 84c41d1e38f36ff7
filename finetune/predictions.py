"""Prediction writers: GLUE leaderboard TSVs, SQuAD JSON, multiple-choice and NER files.

Every file is written atomically (tfmodels.files: a temp file in the same folder, then
os.replace), so an interrupted run never leaves a half-written submission where a good one
used to be.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Union

from finetune.examples import TokenExample
from tfmodels.files import atomic_write_text  # noqa: F401  (also imported from here)

# Task name -> the file name the GLUE leaderboard expects inside the submission zip.
GLUE_SUBMISSION_FILES: Dict[str, str] = {
    "cola": "CoLA.tsv", "sst2": "SST-2.tsv", "mrpc": "MRPC.tsv", "qqp": "QQP.tsv",
    "stsb": "STS-B.tsv", "mnli": "MNLI-m.tsv", "mnli_mismatched": "MNLI-mm.tsv",
    "qnli": "QNLI.tsv", "rte": "RTE.tsv", "wnli": "WNLI.tsv",
}
STSB_RANGE = (0.0, 5.0)


def write_jsonl(path: str, records: Iterable[Mapping[str, Any]]) -> str:
    """One JSON object per line (UTF-8, non-ASCII kept)."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def write_glue_predictions(task: str, predictions: Sequence[Union[int, float, str]], output_dir: str,
                           indices: Optional[Sequence[Any]] = None) -> str:
    """Write `<output_dir>/<Leaderboard name>.tsv` with header `index\\tprediction`.

    Classification predictions are class ids (or label names) and are written as the task's
    label names ("entailment", ...; 0/1 for CoLA, SST-2, MRPC, QQP, WNLI). STS-B predictions are
    floats, clipped to [0, 5] and written with 3 decimals. `indices` default to 0..n-1, the
    order of the GLUE test files. Returns the path written.
    """
    if task not in GLUE_SUBMISSION_FILES:
        raise ValueError(f"{task!r} is not a GLUE leaderboard task; known: {sorted(GLUE_SUBMISSION_FILES)}")
    from finetune.tasks import get_task  # here: the task registry imports the kinds, which use this module
    spec = get_task(task)
    indices = list(range(len(predictions))) if indices is None else list(indices)
    if len(indices) != len(predictions):
        raise ValueError(f"{len(indices)} indices but {len(predictions)} predictions")
    lines = ["index\tprediction"]
    for idx, pred in zip(indices, predictions):
        if not spec.label_names:  # STS-B: a score, not a class
            value = float(pred)
            if math.isnan(value):
                raise ValueError(f"{task}: prediction for index {idx} is NaN")
            value = min(max(value, STSB_RANGE[0]), STSB_RANGE[1])
            lines.append(f"{idx}\t{value:.3f}")
        else:
            lines.append(f"{idx}\t{_label_name(spec.label_names, pred, task, idx)}")
    return atomic_write_text(os.path.join(output_dir, GLUE_SUBMISSION_FILES[task]), "\n".join(lines) + "\n")


def _label_name(names: Sequence[str], pred: Union[int, str], task: str, idx: Any) -> str:
    if isinstance(pred, str):
        if pred not in names:
            raise ValueError(f"{task}: prediction {pred!r} for index {idx} is not a label {list(names)}")
        return pred
    i = int(pred)
    if not 0 <= i < len(names):
        raise ValueError(f"{task}: class id {i} for index {idx} outside 0..{len(names) - 1}")
    return names[i]


def write_squad_predictions(path: str, predictions: Mapping[str, str],
                            null_odds: Optional[Mapping[str, float]] = None,
                            null_odds_path: Optional[str] = None) -> Dict[str, str]:
    """SQuAD `predictions.json` ({qid: answer text}; v2.0: "" = no answer), and optionally the
    `null_odds.json` ({qid: null score}) that the official v2.0 script takes as --na-prob-file.

    Returns {"predictions": path, "null_odds": path} for what was written.
    """
    written = {"predictions": atomic_write_text(path, json.dumps(dict(predictions), indent=2, ensure_ascii=False))}
    if null_odds is not None:
        missing = set(predictions) ^ set(null_odds)
        if missing:
            raise ValueError(f"null_odds and predictions cover different question ids, e.g. {sorted(missing)[:5]}")
        if null_odds_path is None:
            root, _ = os.path.splitext(path)
            null_odds_path = root + "_null_odds.json"
        written["null_odds"] = atomic_write_text(
            null_odds_path, json.dumps({k: float(v) for k, v in null_odds.items()}, indent=2))
    return written


def write_choice_predictions(path: str, guids: Sequence[str], predictions: Sequence[int],
                             probabilities: Optional[Sequence[Sequence[float]]] = None,
                             labels: Optional[Sequence[Optional[int]]] = None) -> str:
    """JSONL, one line per example: guid, predicted choice, and optional probabilities / label."""
    n = len(guids)
    for name, seq in (("predictions", predictions), ("probabilities", probabilities), ("labels", labels)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{n} guids but {len(seq)} {name}")
    records = []
    for i, guid in enumerate(guids):
        rec: Dict[str, Any] = {"guid": guid, "prediction": int(predictions[i])}
        if probabilities is not None:
            rec["probabilities"] = [float(p) for p in probabilities[i]]
        if labels is not None:
            rec["label"] = None if labels[i] is None else int(labels[i])
        records.append(rec)
    return write_jsonl(path, records)


def _check_ner(examples: Sequence[TokenExample], predictions: Sequence[Sequence[str]]) -> None:
    if len(examples) != len(predictions):
        raise ValueError(f"{len(examples)} sentences but {len(predictions)} predicted tag sequences")
    for ex, pred in zip(examples, predictions):
        if len(pred) != len(ex.words):
            raise ValueError(f"{ex.guid}: {len(ex.words)} words but {len(pred)} predicted tags")


def write_ner_conll(path: str, examples: Sequence[TokenExample], predictions: Sequence[Sequence[str]]) -> str:
    """CoNLL text that conlleval reads: `word gold pred` per line (`word pred` when there is no
    gold), a blank line after each sentence."""
    _check_ner(examples, predictions)
    lines = []
    for ex, pred in zip(examples, predictions):
        for j, word in enumerate(ex.words):
            lines.append(f"{word} {ex.tags[j]} {pred[j]}" if ex.tags is not None else f"{word} {pred[j]}")
        lines.append("")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def write_ner_jsonl(path: str, examples: Sequence[TokenExample], predictions: Sequence[Sequence[str]]) -> str:
    """JSONL, one sentence per line: guid, words, predicted tags (and gold tags when known)."""
    _check_ner(examples, predictions)
    records = []
    for ex, pred in zip(examples, predictions):
        rec: Dict[str, Any] = {"guid": ex.guid, "words": list(ex.words), "predictions": list(pred)}
        if ex.tags is not None:
            rec["tags"] = list(ex.tags)
        records.append(rec)
    return write_jsonl(path, records)
