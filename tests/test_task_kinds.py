"""Task kinds are objects (finetune.kinds): the registry, and a kind the library does not know,
added in one file (tests/toy_kind.py) plus two registry entries, fine-tuned by the binary's
code, exported, reloaded in a fresh process and served."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from finetune import kinds, tasks
from finetune.config import FinetuneConfig
from finetune.readers.common import split_file
from finetune.trainer import run_finetune
from tests import toy_kind
from tests.support import QUIET, finetune_config


def test_every_registered_task_points_at_a_registered_kind_object():
    for spec in tasks.TASKS.values():
        assert isinstance(spec.kind, kinds.TaskKind)
        assert kinds.get_kind(spec.kind.name) is spec.kind
    assert tasks.TaskSpec(name="x", kind="span", read=None, metric=None, main_metric="f1",
                          files={}).kind is kinds.SPAN
    with pytest.raises(ValueError, match="unknown task kind 'ranking'; known kinds: "
                                         "classification, regression"):
        kinds.get_kind("ranking")


def test_a_kind_of_another_type_cannot_take_a_registered_name():
    class Impostor(kinds.TaskKind):
        name = "span"

    with pytest.raises(ValueError, match="'span' is already SpanKind"):
        kinds.register(Impostor())


@pytest.fixture
def toy_task(monkeypatch):
    """The toy kind and a task of it, registered for this test only."""
    monkeypatch.setattr(kinds, "_REGISTRY", dict(kinds._REGISTRY))
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
    kinds.register(toy_kind.COUNT)
    files = {"train": "counts.txt"}
    return tasks.register_task(tasks.TaskSpec(
        name="toy_count", kind="toy_count", metric=toy_kind.count_metrics, main_metric="exact",
        files=files,
        read=lambda data_dir, split: toy_kind.read_counts(
            split_file(data_dir, split, files, "toy_count"), split)))


SERVE = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the raw-text signature's kernels)
served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
counts = served(text=tf.constant(json.loads(sys.argv[2])))["count"].numpy()
print(json.dumps(counts.tolist()))
"""


def test_a_new_kind_in_one_file_fine_tunes_exports_and_serves(toy_task, bert_vocab_file,
                                                             tmp_path):
    data = tmp_path / "counts.txt"
    toy_kind.write_count_data(data)
    config = finetune_config(
        task="toy_count", model="bert", model_config="bert_test", vocab_file=bert_vocab_file,
        data_dir=str(data), output_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "exp"),
        seq_length=16, train_batch_size=8, eval_batch_size=4, epochs=2.0,
        learning_rates=(1e-3,), log_every=1000)
    results = run_finetune(config, log=QUIET)
    assert results["kind"] == "toy_count" and results["main_metric"] == "exact"
    assert set(results["selected_run"]["metrics"]) == {"exact", "mae"}

    # The kind's prediction file: one rate per held-out text.
    with open(tmp_path / "run" / "predictions" / "eval" / "predictions.jsonl") as f:
        written = [json.loads(line) for line in f]
    lines = data.read_text().split("\n")
    texts = [lines[int(r["guid"].rsplit(":", 1)[1]) - 1] for r in written]
    assert len(texts) == results["num_eval_examples"] > 0

    # Served from the SavedModel in a fresh process that never imports the toy kind.
    version = results["export"]
    assert os.path.dirname(version) == str(tmp_path / "exp" / "toy_count")
    served = subprocess.run(
        [sys.executable, "-c", SERVE, version, json.dumps(texts)], capture_output=True,
        text=True, cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=True)
    counts = json.loads(served.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(counts, [r["prediction"] for r in written], rtol=1e-4, atol=1e-5)
