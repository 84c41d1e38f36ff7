"""tools.pretraining_peer: our MLM pretraining beside keras-hub's BertMaskedLM."""
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("keras_hub")

from pretraining.create_data import DataConfig, create_pretraining_data  # noqa: E402
from pretraining.input_pipeline import bert_pretraining_dataset  # noqa: E402
from tests.support import PROJECT_ROOT  # noqa: E402

SEQ, PREDICTIONS = 64, 10


def run_peer(*args):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", "tools.pretraining_peer", *args],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def records(tmp_path_factory, wiki_corpus, bert_vocab_file):
    folder = tmp_path_factory.mktemp("peer") / "bert"
    config = DataConfig(vocab_file=bert_vocab_file, max_seq_length=SEQ,
                        max_predictions_per_seq=PREDICTIONS, dupe_factor=1, chunk_bytes=16 << 10)
    create_pretraining_data([str(wiki_corpus(12))], str(folder), config, log=lambda m: None)
    return folder


def test_both_sides_start_from_the_same_weights(records):
    """The copy is what makes the comparison fair: before any step, both models give the
    same MLM logits (up to the head's GELU, exact in keras-hub, tanh form in ours)."""
    import keras

    from tfmodels import configs
    from tfmodels.bert import BertPretrainer
    from tools.pretraining_peer import KerasHubMlm, record_files
    train_files, _ = record_files(str(records), "")
    batch = next(iter(bert_pretraining_dataset(train_files, 4, SEQ, PREDICTIONS,
                                               is_training=False, use_nsp=False)))
    keras.utils.set_random_seed(0)
    ours = BertPretrainer(configs.get_config("bert_tiny", vocab_size=30522))
    peer = KerasHubMlm(ours.encoder, ours.mlm_head)
    mine = ours(batch, training=False)["mlm_logits"].numpy()
    theirs = peer(batch, training=False)["mlm_logits"].numpy()
    assert mine.shape == theirs.shape == (4, PREDICTIONS, 30522)
    np.testing.assert_allclose(theirs, mine, atol=2e-3)
    # Not vacuous: a fresh model of the same config gives other logits.
    other = BertPretrainer(configs.get_config("bert_tiny", vocab_size=30522))
    assert np.abs(other(batch, training=False)["mlm_logits"].numpy() - mine).max() > 0.05


def test_binary_trains_both_and_prints_the_gap(records):
    result = run_peer(f"--records={records}", "--steps=6", "--eval_every=3", "--eval_batches=2",
                      "--batch_size=8", "--nojit_compile")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    rows = [line for line in lines if line.startswith("| 3 |") or line.startswith("| 6 |")]
    assert len(rows) == 2, result.stdout
    ours_loss, hub_loss = (float(x) for x in rows[-1].split("|")[2:4])
    assert 5.0 < ours_loss < 11.0 and abs(ours_loss - hub_loss) < 0.1, rows
    last = lines[-1]
    assert last.startswith("peer: ours mlm_acc ") and " keras_hub " in last and "gap" in last


def test_binary_names_a_missing_records_folder(tmp_path):
    result = run_peer(f"--records={tmp_path}")
    assert result.returncode == 2
    assert str(tmp_path) in result.stderr and "no *.tfrecord" in result.stderr
    assert "Traceback" not in result.stderr
