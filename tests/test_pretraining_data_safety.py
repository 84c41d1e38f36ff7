"""Pretraining data is never silently lost, mixed or hung on (issue 15, cases 1-6, 8-10):
GPT windows across files, reruns into the same output folder (killed at random points too),
truncated and corrupt shards, tiny corpora, manifests among the shards, metrics after a
resume and a model_dir of another config."""
import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from pretraining import create_data
from pretraining.create_data import DataConfig, create_pretraining_data
from pretraining.example_encoding import encode_examples
from pretraining.input_pipeline import (check_record_files, find_corrupt_records,
                                        gpt_pretraining_dataset, records_in)
from pretraining.trainer import PretrainConfig, checkpoint_micro_steps, run_pretraining
from tests.support import PROJECT_ROOT, pretrain_config
from tfmodels.folder_lock import FolderLocked, exclusive_folder

N_CTX = 16


def quiet(message):
    del message


@pytest.fixture(scope="module")
def gpt_config(gpt_bpe_files):
    return DataConfig(mode="gpt", input_format="plain", n_ctx=N_CTX,
                      bpe_encoder_file=gpt_bpe_files["encoder"],
                      bpe_merges_file=gpt_bpe_files["merges"], chunk_bytes=200)


@pytest.fixture(scope="module")
def tokenizer(gpt_bpe):
    return gpt_bpe


def article(i):
    return (f"article {i} tells of the river and the town .\n"
            f"its second line has {i} more words in it .\n")


def write_articles(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        paths.append(folder / f"article_{i:02d}.txt")
        paths[-1].write_text(article(i), encoding="utf-8")
    return [str(p) for p in paths]


def read_windows(folder, with_doc_ids=False):
    """The windows in text order (shards hold them shuffled; text_span gives each one's
    corpus index), as one token stream; with_doc_ids: and each window's doc_id."""
    spec = {"input_ids": tf.io.FixedLenFeature([N_CTX], tf.int64),
            "doc_id": tf.io.FixedLenFeature([1], tf.int64),
            "text_span": tf.io.FixedLenFeature([2], tf.int64)}
    rows = [tf.io.parse_single_example(r, spec)
            for r in tf.data.TFRecordDataset(sorted(map(str, folder.glob("*.tfrecord"))))]
    index = np.array([row["text_span"].numpy()[0] for row in rows], np.int64)
    np.testing.assert_array_equal(np.sort(index), np.arange(len(rows)))
    order = np.argsort(index)
    windows = np.array([rows[i]["input_ids"].numpy() for i in order]).reshape(-1)
    if with_doc_ids:
        return windows, np.array([rows[i]["doc_id"].numpy()[0] for i in order])
    return windows


# ---- case 1: GPT windows run across files and chunks -----------------------------------------

def test_gpt_stream_runs_across_files_and_chunks(gpt_config, tokenizer, tmp_path):
    files = write_articles(tmp_path / "in", 20)
    (tmp_path / "in" / "empty.txt").write_text("\n\n", encoding="utf-8")
    files.append(str(tmp_path / "in" / "empty.txt"))
    # One long file too, cut into several chunks (chunk_bytes=200).
    long_file = tmp_path / "in" / "long.txt"
    long_file.write_text("\n".join(article(100 + i) for i in range(8)), encoding="utf-8")
    files.append(str(long_file))
    logs = []
    totals = create_pretraining_data(files, str(tmp_path / "out"), gpt_config, log=logs.append)
    assert len(create_data.split_into_chunks(str(long_file), 200)) > 2
    # The expected stream: every document's tokens, then the delimiter, in file order.
    expected = []
    for path in sorted(files[:20]) + [str(long_file)]:
        for doc in open(path, encoding="utf-8").read().split("\n\n"):
            lines = [line for line in doc.split("\n") if line.strip()]
            if lines:
                expected += [t for ids in tokenizer.encode(lines) for t in ids]
                expected.append(tokenizer.delimiter_id)
    windows, doc_ids = read_windows(tmp_path / "out", with_doc_ids=True)
    assert totals["instances"] == len(expected) // N_CTX == len(windows) // N_CTX
    # Each window names the document its first token is in, counted across files and chunks.
    owner = np.cumsum(np.array(expected) == tokenizer.delimiter_id) - (
        np.array(expected) == tokenizer.delimiter_id)
    np.testing.assert_array_equal(doc_ids, owner[:len(windows):N_CTX])
    assert totals["dropped_tokens"] == len(expected) % N_CTX < N_CTX
    assert windows.tolist() == expected[:len(windows)]
    assert any("warning" in line and "empty.txt" in line for line in logs)
    assert any(f"last {len(expected) % N_CTX} tokens" in line for line in logs)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["empty_inputs"] == [str(tmp_path / "in" / "empty.txt")]


def test_no_instance_at_all_is_an_error(gpt_config, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no pretraining instances from 1 input file"):
        create_pretraining_data([str(empty)], str(tmp_path / "a"), gpt_config, log=quiet)
    short = tmp_path / "short.txt"
    short.write_text("too short .\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokens, fewer than one n_ctx=16 window"):
        create_pretraining_data([str(short)], str(tmp_path / "b"), gpt_config, log=quiet)


# ---- cases 2 and 3: reruns into the same output folder ----------------------------------------

def fail_on_chunk(monkeypatch, n):
    calls = {"n": 0}
    real = create_data.encode_examples

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(create_data, "encode_examples", failing)


def test_partial_run_then_other_settings_or_inputs_is_refused(gpt_config, tmp_path,
                                                                monkeypatch):
    files = write_articles(tmp_path / "in", 12)
    out = str(tmp_path / "out")
    fail_on_chunk(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        create_pretraining_data(files, out, gpt_config, log=quiet)
    monkeypatch.undo()
    assert not os.path.exists(os.path.join(out, "manifest.json"))  # really died part way
    other = DataConfig(**{**gpt_config.__dict__, "n_ctx": 32})
    with pytest.raises(ValueError, match=r"other settings or inputs \(n_ctx was 16, now 32\)"):
        create_pretraining_data(files, out, other, log=quiet)
    with pytest.raises(ValueError, match=r"inputs of the earlier run missing now: .*article_11"):
        create_pretraining_data(files[:-1], out, gpt_config, log=quiet)
    extra = write_articles(tmp_path / "more", 1)
    with pytest.raises(ValueError, match=r"inputs not in the earlier run: .*more/article_00"):
        create_pretraining_data(files + extra, out, gpt_config, log=quiet)
    # Edited in place at the same size: recognised by content, not resumed with old shards.
    original = open(files[0], encoding="utf-8").read()
    edited = original.replace("a", "e", 1)
    assert edited != original and len(edited) == len(original)
    open(files[0], "w", encoding="utf-8").write(edited)
    with pytest.raises(ValueError, match=r"inputs changed since the earlier run: "
                                         r".*article_00.txt \(same size, other content: sha256"):
        create_pretraining_data(files, out, gpt_config, log=quiet)
    open(files[0], "w", encoding="utf-8").write(original)
    # A second process creating data into the same folder is refused, naming the holder.
    with exclusive_folder(out, "data creation"):
        with pytest.raises(FolderLocked, match=f"out is being written by pid {os.getpid()}"):
            create_pretraining_data(files, out, gpt_config, log=quiet)
    # The same settings resume, and the manifest totals the whole corpus.
    logs = []
    resumed = create_pretraining_data(files, out, gpt_config, log=logs.append)
    assert resumed["skipped"] > 0 and any("resuming" in line for line in logs)
    straight = create_pretraining_data(files, str(tmp_path / "straight"), gpt_config, log=quiet)
    for key in ("documents", "instances", "tokens", "shards", "dropped_tokens"):
        assert resumed[key] == straight[key], key
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["totals"]["instances"] == straight["instances"]
    assert len(manifest["shards"]) == straight["shards"]
    for shard in manifest["shards"]:
        path = tmp_path / "out" / shard["file"]
        assert shard["bytes"] == path.stat().st_size
        assert shard["records"] == sum(1 for _ in tf.data.TFRecordDataset(str(path)))
        assert shard["input"] in [os.path.abspath(f) for f in files]
    assert read_windows(tmp_path / "out").tolist() == read_windows(
        tmp_path / "straight").tolist()


def test_shards_without_a_settings_stamp_are_refused(gpt_config, tmp_path):
    files = write_articles(tmp_path / "in", 3)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old-00000.tfrecord").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no creation_settings.json"):
        create_pretraining_data(files, str(tmp_path / "out"), gpt_config, log=quiet)


def creation_command(files, out, n_ctx=N_CTX):
    gpt = PROJECT_ROOT.parent / "shared" / "data" / "gpt1_openai"
    return [sys.executable, "-m", "pretraining.create_pretraining_data", "--mode=gpt",
            "--input_format=plain", f"--input_files={','.join(files)}", f"--output_dir={out}",
            f"--bpe_encoder_file={gpt / 'encoder_bpe_40000.json'}",
            f"--bpe_merges_file={gpt / 'vocab_40000.bpe'}", f"--n_ctx={n_ctx}",
            "--chunk_bytes=200", "--num_workers=1"]


def subprocess_env():
    return {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_kill_9_at_random_points_then_rerun(gpt_config, tmp_path, shared_data):
    files = write_articles(tmp_path / "in", 30)
    straight = create_pretraining_data(files, str(tmp_path / "straight"), gpt_config,
                                       log=quiet)
    out = tmp_path / "killed"
    rng = random.Random(15)
    kills = 0
    # 30 chunks: the first run is killed after 5-20 of them, the resumed one after 1-4 more.
    for target in (rng.randint(5, 20), rng.randint(1, 4)):
        # Killed after a random number of finished chunks, plus a random few milliseconds
        # (inside the next shard's write, or between the rename and the progress line).
        process = subprocess.Popen(creation_command(files, out), cwd=PROJECT_ROOT,
                                   env=subprocess_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        for line in process.stdout:
            if line.startswith(f"[{target}/") or line.startswith("done"):
                time.sleep(rng.random() * 0.003)
                break
        if process.poll() is None:
            process.kill()
            kills += 1
        process.wait()
        process.stdout.close()
    assert kills == 2
    assert not (out / "manifest.json").exists()
    refused = subprocess.run(creation_command(files, out, n_ctx=32), cwd=PROJECT_ROOT,
                             env=subprocess_env(), capture_output=True, text=True)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "n_ctx was 16, now 32" in refused.stderr and "Traceback" not in refused.stderr
    totals = create_pretraining_data(files, str(out), gpt_config, log=quiet)
    for key in ("documents", "instances", "tokens", "shards", "dropped_tokens"):
        assert totals[key] == straight[key], key
    assert not list(out.glob("*.tmp"))
    for shard in (tmp_path / "straight").glob("*.tfrecord"):
        assert (out / shard.name).read_bytes() == shard.read_bytes()
    assert sorted(p.name for p in out.glob("*.tfrecord")) == sorted(
        p.name for p in (tmp_path / "straight").glob("*.tfrecord"))


# ---- cases 4, 6, 8, 9: the record files pretraining reads ------------------------------------

def write_gpt_shards(folder, rows_per_file, seq=N_CTX, vocab=100):
    """Shards of GPT windows (ids < vocab) with a manifest like create_data's."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for i, rows in enumerate(rows_per_file):
        path = folder / f"shard-{i:05d}.tfrecord"
        ids = (np.arange(rows * seq).reshape(rows, seq) + i) % vocab
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in (encode_examples({"input_ids": ids}) if rows else []):
                writer.write(record)
        shards.append({"file": path.name, "records": rows, "bytes": path.stat().st_size})
    (folder / "manifest.json").write_text(json.dumps({"shards": shards}))
    return [str(folder / s["file"]) for s in shards]


def test_manifest_and_temp_files_are_not_read_as_records(tmp_path):
    shards = write_gpt_shards(tmp_path / "records", [4, 4])
    (tmp_path / "records" / "shard-00002.tfrecord.tmp").write_bytes(b"half")
    (tmp_path / "records" / ".lock").write_bytes(b"")  # data creation's folder lock
    assert records_in([str(tmp_path / "records" / "*")]) == shards
    batches = list(gpt_pretraining_dataset(str(tmp_path / "records" / "*"), 4, N_CTX,
                                           is_training=False))
    assert len(batches) == 2
    with pytest.raises(ValueError, match=r"matches no record file \(only .*manifest.json"):
        records_in([str(tmp_path / "records" / "*.json")])


def test_shard_cut_inside_a_record_header_is_seen(tmp_path):
    shard = write_gpt_shards(tmp_path / "records", [10])[0]
    data = open(shard, "rb").read()
    record_bytes = len(data) // 10
    cut = tmp_path / "cut" / "cut-00000.tfrecord"
    cut.parent.mkdir()
    cut.write_bytes(data[:5 * record_bytes + 6])  # 6 bytes into record 5's length header
    # tf.data reads it as a 5-record file without a word ...
    assert sum(1 for _ in tf.data.TFRecordDataset(str(cut))) == 5
    # ... find_corrupt_records and the pre-training check do not.
    assert find_corrupt_records([str(cut)]) == {
        str(cut): f"record 5: truncated, the file ends inside a record header (5 records end "
                  f"at byte {5 * record_bytes} of {5 * record_bytes + 6})"}
    with pytest.raises(ValueError, match=rf"{cut} is truncated: 5 complete records end at byte"):
        check_record_files([str(cut)])
    # A shard its manifest lists is checked against the manifest's size.
    open(shard, "wb").write(data[:5 * record_bytes + 6])
    with pytest.raises(ValueError, match=rf"{shard} has {5 * record_bytes + 6} bytes, its "
                                         rf"manifest.json says {len(data)} \(10 records\)"):
        check_record_files([shard])


def gpt_pretrain_config(files, model_dir, **overrides):
    values = dict(model="gpt", model_config="gpt_test", input_files=tuple(files),
                  seq_length=N_CTX, global_batch_size=4, train_steps=2, warmup_steps=1,
                  learning_rate=1e-3, model_dir=str(model_dir), checkpoint_every=100,
                  log_every=1, shuffle_buffer=10)
    values.update(overrides)
    return pretrain_config(**values)


def test_empty_or_too_small_corpora_are_errors_not_hangs(tmp_path):
    empty = write_gpt_shards(tmp_path / "empty", [0, 0])
    with pytest.raises(ValueError, match=r"2 of 2 record files cannot be used: .*shard-00000"
                                         r"\.tfrecord is empty \(0 bytes\)"):
        run_pretraining(gpt_pretrain_config(empty, tmp_path / "m1"), log=quiet)
    small = write_gpt_shards(tmp_path / "small", [1, 2])
    with pytest.raises(ValueError, match=r"input_files: 3 records in 2 file\(s\) .* fewer than "
                                         r"one global batch \(--global_batch_size\) of 4"):
        run_pretraining(gpt_pretrain_config(small, tmp_path / "m2"), log=quiet)


def test_corrupt_shard_during_training_is_named(tmp_path):
    good = write_gpt_shards(tmp_path / "records", [6])[0]
    data = bytearray(open(good, "rb").read())
    data[len(data) // 2] ^= 0xFF  # a payload byte: same size, bad CRC
    open(good, "wb").write(bytes(data))
    with pytest.raises(ValueError, match=rf"corrupt record file in input_files: {good}: "
                                         rf"record \d: .*corrupted record"):
        run_pretraining(gpt_pretrain_config([good], tmp_path / "model"), log=quiet)
    assert not list((tmp_path / "model").glob("ckpt-*"))


# ---- cases 5 and 10: resuming a model_dir ------------------------------------------------------

def test_metrics_hold_each_step_once_after_resume(tmp_path):
    files = write_gpt_shards(tmp_path / "records", [8, 8])
    model_dir = tmp_path / "model"
    config = gpt_pretrain_config(files, model_dir, train_steps=6, checkpoint_every=4)
    run_pretraining(config, log=quiet)
    # As if killed after logging steps 5 and 6 but before their checkpoint was written.
    tf.compat.v1.train.update_checkpoint_state(str(model_dir), str(model_dir / "ckpt-4"))
    logs = []
    run_pretraining(config, log=logs.append)
    assert any("resumed from" in line and "micro-step 4" in line for line in logs)
    steps = [json.loads(line)["step"] for line in open(model_dir / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("accumulation, train_steps, expected", [(1, 7, [2, 4, 6, 7]),
                                                                  (2, 3, [4, 6])])
def test_checkpoint_micro_steps_are_the_checkpoints_a_run_saves(tmp_path, accumulation,
                                                                train_steps, expected):
    """The ablation workspace names a finished run's checkpoints from its settings alone (a run
    carried without weights): the rule must be the one the run saved and pruned by."""
    files = write_gpt_shards(tmp_path / "records", [8, 8])
    config = gpt_pretrain_config(files, tmp_path / "model", train_steps=train_steps,
                                 checkpoint_every=2, keep_checkpoints=3,
                                 gradient_accumulation_steps=accumulation)
    run_pretraining(config, log=quiet)
    state = tf.train.get_checkpoint_state(str(tmp_path / "model"))
    kept = [int(path.rsplit("-", 1)[1]) for path in state.all_model_checkpoint_paths]
    assert checkpoint_micro_steps(config) == expected and kept == expected[-3:]


def test_model_dir_of_another_config_names_both(tmp_path):
    files = write_gpt_shards(tmp_path / "records", [8])
    run_pretraining(gpt_pretrain_config(files, tmp_path / "model", train_steps=1), log=quiet)
    with pytest.raises(ValueError, match=r"holds a checkpoint .*ckpt-1.* of another model: "
                                         r"vocab_size 0 \(the model_config's\) there, 120 now"):
        run_pretraining(gpt_pretrain_config(files, tmp_path / "model", train_steps=2,
                                            vocab_size=120), log=quiet)
    # Without the config file (an older model_dir) the restore error still names the model.
    os.remove(tmp_path / "model" / "pretrain_config.json")
    with pytest.raises(ValueError, match=r"ckpt-1 in model_dir does not fit this model "
                                         r"\(gpt gpt_test\)"):
        run_pretraining(gpt_pretrain_config(files, tmp_path / "model", train_steps=2,
                                            vocab_size=120), log=quiet)


def test_unguarded_calling_script_fails_instead_of_hanging(gpt_bpe_files, tmp_path):
    """A script that calls create_pretraining_data with worker processes but without an
    `if __name__ == "__main__":` guard runs the call again when a spawned worker imports it.
    multiprocessing.Pool replaced each dying worker forever; now the run stops with an error
    that says what to do, and writes no shard."""
    files = write_articles(tmp_path / "in", 6)
    script = tmp_path / "make_records.py"
    script.write_text(
        "from pretraining.create_data import DataConfig, create_pretraining_data\n"
        f"config = DataConfig(mode='gpt', input_format='plain', n_ctx={N_CTX}, chunk_bytes=200,\n"
        f"                    bpe_encoder_file={gpt_bpe_files['encoder']!r},\n"
        f"                    bpe_merges_file={gpt_bpe_files['merges']!r})\n"
        f"create_pretraining_data({files!r}, {str(tmp_path / 'out')!r}, config, num_workers=2)\n",
        encoding="utf-8")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, env=subprocess_env(), cwd=tmp_path)
    assert run.returncode != 0
    # The traceback's last line names the fix. Not simply stderr's last line: the dying spawned
    # workers' resource_tracker may print a leaked-semaphore warning after it.
    error_lines = [line for line in run.stderr.splitlines() if line.startswith("RuntimeError: ")]
    assert error_lines, run.stderr
    assert 'if __name__ == "__main__":' in error_lines[-1]
    assert not list((tmp_path / "out").glob("*.tfrecord"))


def test_more_predictions_than_positions_is_refused_by_name():
    with pytest.raises(ValueError, match=r"max_predictions_per_seq must be in 1..max_seq_length "
                                         r"\(128\), got 200"):
        DataConfig(max_seq_length=128, max_predictions_per_seq=200)
    with pytest.raises(ValueError, match=r"max_predictions_per_seq must be in 1..seq_length"):
        pretrain_config(input_files=("x",), model_dir="m", seq_length=64,
                       max_predictions_per_seq=80)


def test_a_failed_checkpoint_write_leaves_no_partial_files(tmp_path, monkeypatch):
    """A full disk (here: a write that fails after creating ckpt-N_temp/) leaves the folder
    as it was before the save, and says which checkpoint is the last complete one."""
    from pretraining.trainer import save_checkpoint
    checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=3)
    save_checkpoint(manager, str(tmp_path), 1)
    before = sorted(os.listdir(tmp_path))

    def full_disk(prefix, options=None):
        os.makedirs(prefix + "_temp")
        (tmp_path / "ckpt-2_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
        (tmp_path / "ckpt-2.index").write_bytes(b"partial")
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write", full_disk)
    with pytest.raises(OSError, match=r"ckpt-2 failed \(No space left on device\).*last "
                                      r"complete checkpoint is .*ckpt-1"):
        save_checkpoint(manager, str(tmp_path), 2)
    assert sorted(os.listdir(tmp_path)) == before
