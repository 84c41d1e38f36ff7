"""tools/data_coverage: replays the pretraining input order and measures what it covers."""
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from pretraining.create_data import DataConfig, create_pretraining_data
from pretraining.trainer import PretrainConfig
from tools import data_coverage
from tools.data_coverage import CorpusIds, coverage, uniform_coverage

SEQ, PREDICTIONS = 64, 10
PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_module(module, *args):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True)


def test_coverage_counts_documents_sentences_and_repeats():
    # Three documents: sentences 0-3, 4-5, 6-9; six records, one of them read twice.
    corpus = CorpusIds(np.array([0, 0, 1, 2, 2, 2]),
                       np.array([[0, 2], [2, 4], [4, 6], [6, 8], [8, 9], [9, 10]]))
    read = [0, 2, 2, 4]
    result = coverage(corpus.doc_ids[read], corpus.spans[read], np.array(read), corpus)
    assert result["records"] == 4 and result["records_seen"] == pytest.approx(3 / 6)
    assert result["docs_seen"] == 1.0
    assert result["units_seen"] == pytest.approx(5 / 10)  # sentences 0, 1, 4, 5, 8
    assert result["max_repeats"] == 2 and result["mean_repeats"] == pytest.approx(7 / 5)
    assert result["passes"] == pytest.approx(7 / 10)
    # A uniform shuffle of every record once sees everything once; past one epoch, more.
    once = uniform_coverage(corpus, 6)
    assert (once["records_seen"], once["units_seen"], once["max_repeats"]) == (1.0, 1.0, 1)
    assert uniform_coverage(corpus, 9)["max_repeats"] == 2


@pytest.fixture(scope="module")
def records(tmp_path_factory, wiki_corpus, bert_vocab_file):
    """{record_order: shard pattern} for 24 WikiText-2 articles, dupe 2."""
    text = wiki_corpus(24)
    out = {}
    for order in ("pass_major", "chunk_mixed"):
        folder = tmp_path_factory.mktemp(order)
        config = DataConfig(vocab_file=bert_vocab_file, max_seq_length=SEQ,
                            max_predictions_per_seq=PREDICTIONS, dupe_factor=2,
                            chunk_bytes=24 << 10, record_order=order)
        create_pretraining_data([str(text)], str(folder), config, log=lambda m: None)
        out[order] = str(folder / "*.tfrecord")
    return out


def replay(pattern, steps, **overrides):
    config = PretrainConfig(model="bert", input_files=(pattern,), model_dir="unused",
                            seq_length=SEQ, max_predictions_per_seq=PREDICTIONS,
                            global_batch_size=16, seed=3, shuffle_buffer=50, **overrides)
    return data_coverage.measure(config, steps, log=lambda m: None)


def test_pass_major_records_are_read_once_before_twice(records):
    new = replay(records["pass_major"], 85)
    corpus = new["corpus"]
    # Under half the records: within each shard's first pass, which holds at least half.
    assert new["replayed"]["records"] == 1360 < corpus["records"] / 2
    # Read at an even pace, pass-major shards give almost every sentence once: more of the
    # text than a uniform shuffle of the records, which reads dupes of what it has seen.
    assert new["replayed"]["mean_repeats"] < 1.03 and new["replayed"]["max_repeats"] <= 2
    assert new["replayed"]["units_seen"] > new["uniform"]["units_seen"] + 0.1
    assert new["replayed"]["docs_seen"] >= 0.95 * new["uniform"]["docs_seen"]
    old = replay(records["chunk_mixed"], 85)
    assert old["replayed"]["mean_repeats"] > 1.15
    # Gradient accumulation reads the same records in the same order.
    accumulated = replay(records["pass_major"], 85, gradient_accumulation_steps=4)
    assert accumulated["replayed"] == new["replayed"]


def test_binary_prints_the_coverage_line(records, tmp_path):
    result = run_module("tools.data_coverage", "--model=bert",
                        f"--input_files={records['pass_major']}", f"--seq_length={SEQ}",
                        f"--max_predictions_per_seq={PREDICTIONS}", "--global_batch_size=8",
                        "--steps=20", "--seed=1")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"coverage: steps 20 records 160 docs_seen \d\.\d\d max_repeats \d+",
                        lines[-1]), lines[-1]
    assert any(line.startswith("share of the sentences seen") for line in lines)
    unnamed = tmp_path / "old.tfrecord"  # records made before issue 43 carry no text ids
    from pretraining.example_encoding import encode_examples
    import tensorflow as tf
    with tf.io.TFRecordWriter(str(unnamed)) as writer:
        for record in encode_examples({"input_ids": np.ones((40, SEQ), np.int64)}):
            writer.write(record)
    old = run_module("tools.data_coverage", "--model=gpt", f"--input_files={unnamed}",
                     f"--seq_length={SEQ}", "--global_batch_size=8", "--steps=2")
    assert old.returncode == 2 and "no doc_id / text_span feature" in old.stderr
