"""The task registry (every paper task, consistent specs, split resolution) and the prediction
writers (leaderboard names and formats, atomic replacement)."""
import json
import os

import pytest

from finetune import kinds, predictions, tasks
from finetune.examples import TokenExample

ALL_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "mnli_mismatched", "qnli", "rte", "wnli",
             "snli", "scitail", "squad_v1", "squad_v2", "swag", "race", "story_cloze", "conll2003")


def test_registry_has_every_task_with_a_consistent_spec():
    assert set(tasks.TASKS) == set(ALL_TASKS)
    for name in ALL_TASKS:
        spec = tasks.get_task(name)
        assert spec.name == name and spec.kind.name in kinds.names()
        assert (spec.kind.name in ("classification", "token_classification")) == bool(spec.label_names)
        assert (spec.kind.name == "multiple_choice") == (spec.num_choices > 0)
        assert "train" in spec.files
    # The main metric is one of the numbers the metric returns, checked on a tiny perfect case.
    cases = {
        "classification": ([0, 1, 1], [0, 1, 1]),
        "multiple_choice": ([0, 1, 1], [0, 1, 1]),
        "regression": ([0.5, 2.0, 4.0], [0.4, 2.5, 3.0]),
        "span": ([["Denver"], ["a cat"]], ["Denver", "cat"]),
        "token_classification": ([["B-PER", "O"]], [["B-PER", "O"]]),
    }
    for name in ALL_TASKS:
        spec = tasks.get_task(name)
        result = spec.metric(*cases[spec.kind.name])
        assert spec.main_metric in result, name
    assert tasks.get_task("cola").main_metric == "mcc" and tasks.get_task("mrpc").main_metric == "f1"
    assert tasks.get_task("mnli").files["dev"] == "dev_matched.tsv"
    assert tasks.get_task("mnli_mismatched").files["dev"] == "dev_mismatched.tsv"
    assert tasks.get_task("swag").num_choices == 4 and tasks.get_task("story_cloze").num_choices == 2
    assert tasks.get_task("stsb").num_labels == 1 and tasks.get_task("mnli").num_labels == 3
    assert tasks.get_task("conll2003").num_labels == 9


def test_unknown_task_and_split_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'glue'.*cola.*story_cloze"):
        tasks.get_task("glue")
    with pytest.raises(ValueError, match="no 'dev' split; known splits"):
        tasks.get_task("story_cloze").read(str(tmp_path), "dev")
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        tasks.get_task("rte").read(str(tmp_path), "dev")
    with pytest.raises(ValueError, match="kind 'ranking'"):
        tasks.TaskSpec(name="x", kind="ranking", read=None, metric=None, main_metric="m", files={})


# ------------------------------------------------------------------ prediction writers

def test_glue_leaderboard_files(tmp_path):
    path = predictions.write_glue_predictions("rte", [0, 1, 1], str(tmp_path))
    assert os.path.basename(path) == "RTE.tsv"
    assert open(path).read() == "index\tprediction\n0\tentailment\n1\tnot_entailment\n2\tnot_entailment\n"
    path = predictions.write_glue_predictions("cola", [1, 0], str(tmp_path))
    assert os.path.basename(path) == "CoLA.tsv" and open(path).read() == "index\tprediction\n0\t1\n1\t0\n"
    path = predictions.write_glue_predictions("stsb", [3.14159, -0.2, 5.7], str(tmp_path))
    assert os.path.basename(path) == "STS-B.tsv"
    assert open(path).read() == "index\tprediction\n0\t3.142\n1\t0.000\n2\t5.000\n"
    path = predictions.write_glue_predictions("mnli_mismatched", ["neutral", 2], str(tmp_path), indices=[7, 9])
    assert os.path.basename(path) == "MNLI-mm.tsv"
    assert open(path).read() == "index\tprediction\n7\tneutral\n9\tcontradiction\n"
    names = {predictions.GLUE_SUBMISSION_FILES[t] for t in ("sst2", "mnli", "qqp", "mrpc", "qnli", "wnli")}
    assert names == {"SST-2.tsv", "MNLI-m.tsv", "QQP.tsv", "MRPC.tsv", "QNLI.tsv", "WNLI.tsv"}
    with pytest.raises(ValueError, match="class id 3"):
        predictions.write_glue_predictions("rte", [3], str(tmp_path))
    with pytest.raises(ValueError, match="not a GLUE leaderboard task"):
        predictions.write_glue_predictions("snli", [0], str(tmp_path))


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "RTE.tsv"
    path.write_text("old\n")
    with pytest.raises(ValueError):
        predictions.write_glue_predictions("rte", [0, "maybe"], str(tmp_path))
    assert path.read_text() == "old\n"

    def disk_full(fd):
        raise OSError("disk full")

    monkeypatch.setattr(predictions.os, "fsync", disk_full)    # fails after writing the temp file
    with pytest.raises(OSError, match="disk full"):
        predictions.write_glue_predictions("rte", [0, 1], str(tmp_path))
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["RTE.tsv"]                 # no temp file left behind


def test_squad_choice_and_ner_writers(tmp_path):
    written = predictions.write_squad_predictions(
        str(tmp_path / "predictions.json"), {"q1": "Denver Broncos", "q2": ""}, null_odds={"q1": -3.5, "q2": 2.0})
    assert json.load(open(written["predictions"])) == {"q1": "Denver Broncos", "q2": ""}
    assert written["null_odds"] == str(tmp_path / "predictions_null_odds.json")
    assert json.load(open(written["null_odds"])) == {"q1": -3.5, "q2": 2.0}
    with pytest.raises(ValueError, match="different question ids"):
        predictions.write_squad_predictions(str(tmp_path / "p.json"), {"q1": "x"}, null_odds={"q2": 0.0})

    path = predictions.write_choice_predictions(str(tmp_path / "swag.jsonl"), ["a", "b"], [2, 0],
                                                probabilities=[[0.1, 0.2, 0.6, 0.1], [1, 0, 0, 0]], labels=[2, None])
    lines = [json.loads(line) for line in open(path)]
    assert lines[0] == {"guid": "a", "prediction": 2, "probabilities": [0.1, 0.2, 0.6, 0.1], "label": 2}
    assert lines[1]["label"] is None

    examples = [TokenExample("s1", ("EU", "rejects"), ("B-ORG", "O")), TokenExample("s2", ("Peter",), None)]
    preds = [["B-ORG", "O"], ["B-PER"]]
    path = predictions.write_ner_conll(str(tmp_path / "ner.txt"), examples, preds)
    assert open(path).read() == "EU B-ORG B-ORG\nrejects O O\n\nPeter B-PER\n\n"
    path = predictions.write_ner_jsonl(str(tmp_path / "ner.jsonl"), examples, preds)
    first = json.loads(open(path).readline())
    assert first == {"guid": "s1", "words": ["EU", "rejects"], "predictions": ["B-ORG", "O"], "tags": ["B-ORG", "O"]}
    with pytest.raises(ValueError, match="s2: 1 words but 2 predicted"):
        predictions.write_ner_conll(str(tmp_path / "x.txt"), examples, [["O", "O"], ["O", "O"]])
