"""Pretraining input pipelines: shapes and dtypes, determinism, iterator checkpoints,
per-worker file sharding, MirroredStrategy, dynamic masking, errors.

BERT records come from real WikiText-2 text through `create_pretraining_data`; GPT records
are synthetic windows whose values name their file and row, so sharding and ordering can be
checked exactly.
"""
import numpy as np
import pytest
import tensorflow as tf

from pretraining.create_data import DataConfig, create_pretraining_data
from pretraining.example_encoding import encode_examples
from pretraining.input_pipeline import (
    DynamicMasking, bert_pretraining_dataset, distribute_dataset, find_corrupt_records,
    gpt_pretraining_dataset, original_input_ids, records_in)
from tfmodels.tokenizers.wordpiece import read_vocab_file

SEQ, PREDICTIONS, BATCH = 64, 10, 16
GPT_FILES, GPT_ROWS = 4, 40


def as_numpy(batch):
    return {k: v.numpy() for k, v in batch.items()}


def take(dataset, n):
    return [as_numpy(b) for b in dataset.take(n)]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def vocab_file(bert_vocab_file):
    return bert_vocab_file


@pytest.fixture(scope="module")
def wiki_text(wiki_corpus):
    return wiki_corpus(16)


def make_bert_records(tmp_path_factory, wiki_text, vocab_file, **overrides):
    out = tmp_path_factory.mktemp("bert_records")
    config = DataConfig(vocab_file=vocab_file, max_seq_length=SEQ,
                        max_predictions_per_seq=PREDICTIONS, dupe_factor=1,
                        chunk_bytes=24 << 10, **overrides)
    create_pretraining_data([str(wiki_text)], str(out), config, log=lambda m: None)
    return str(out / "*.tfrecord")


@pytest.fixture(scope="module")
def bert_records(tmp_path_factory, wiki_text, vocab_file):
    """Several shards, a few hundred instances, static 80/10/10 masks."""
    return make_bert_records(tmp_path_factory, wiki_text, vocab_file)


@pytest.fixture(scope="module")
def unmasked_bert_records(tmp_path_factory, wiki_text, vocab_file):
    """The same instances in the same order (same seed), but every selected token is left
    unchanged, so `input_ids` are the original text."""
    return make_bert_records(tmp_path_factory, wiki_text, vocab_file, mask_token_rate=0.0,
                             random_token_rate=0.0)


@pytest.fixture(scope="module")
def gpt_records(tmp_path_factory):
    """GPT_FILES files of GPT_ROWS windows; every value of row r of file f is 1000 f + r."""
    return write_gpt_records(tmp_path_factory.mktemp("gpt_records"), [GPT_ROWS] * GPT_FILES)


def write_gpt_records(out, rows_per_file):
    """gpt-<f>.tfrecord files of the given numbers of windows; every value of row r of file f
    is 1000 f + r. Returns their glob."""
    for f, rows in enumerate(rows_per_file):
        values = (1000 * f + np.arange(rows))[:, None].repeat(SEQ, 1)
        with tf.io.TFRecordWriter(str(out / f"gpt-{f}.tfrecord")) as writer:
            for record in encode_examples({"input_ids": values}):
                writer.write(record)
    return str(out / "gpt-*.tfrecord")


def test_bert_batches_are_static_int32(bert_records):
    files = records_in([bert_records])
    assert len(files) >= 3 and files == sorted(files)
    dataset = bert_pretraining_dataset([bert_records], BATCH, SEQ, PREDICTIONS, seed=1)
    spec = dataset.element_spec
    expected = {"input_ids": (BATCH, SEQ), "input_mask": (BATCH, SEQ),
                "segment_ids": (BATCH, SEQ), "masked_lm_positions": (BATCH, PREDICTIONS),
                "masked_lm_ids": (BATCH, PREDICTIONS), "masked_lm_weights": (BATCH, PREDICTIONS),
                "next_sentence_labels": (BATCH,)}
    assert {k: tuple(v.shape) for k, v in spec.items()} == expected
    assert all(v.dtype == (tf.float32 if k == "masked_lm_weights" else tf.int32)
               for k, v in spec.items())
    batch = take(dataset, 1)[0]
    assert ((batch["input_ids"] != 0) == (batch["input_mask"] == 1)).all()
    assert set(batch["next_sentence_labels"].tolist()) <= {0, 1}
    assert (batch["masked_lm_weights"].sum(1) >= 1).all()
    no_nsp = bert_pretraining_dataset([bert_records], BATCH, SEQ, PREDICTIONS, use_nsp=False)
    assert "next_sentence_labels" not in no_nsp.element_spec


def test_gpt_eval_reads_every_record_once_in_file_order(gpt_records):
    dataset = gpt_pretraining_dataset([gpt_records], 8, SEQ, is_training=False)
    assert dataset.element_spec["input_ids"].shape == (8, SEQ)
    assert dataset.element_spec["input_ids"].dtype == tf.int32
    rows = np.concatenate([b["input_ids"] for b in take(dataset, -1)])
    expected = (1000 * np.arange(GPT_FILES)[:, None] + np.arange(GPT_ROWS)).reshape(-1)
    np.testing.assert_array_equal(rows[:, 0], expected)
    assert (rows == rows[:, :1]).all()
    # drop_remainder: a batch that does not divide the data leaves out the short last batch.
    partial = gpt_pretraining_dataset([gpt_records], 7, SEQ, is_training=False)
    assert sum(1 for _ in partial) == GPT_FILES * GPT_ROWS // 7


def test_seeded_training_data_is_deterministic(bert_records):
    make = lambda seed: bert_pretraining_dataset([bert_records], BATCH, SEQ, PREDICTIONS,  # noqa
                                                 seed=seed, shuffle_buffer=200)
    first = take(make(5), 30)  # past one epoch: the repeat and reshuffle are covered too
    assert_same_batches(first, take(make(5), 30))
    other = take(make(6), 1)[0]
    assert not np.array_equal(first[0]["input_ids"], other["input_ids"])


def test_iterator_checkpoint_resumes_exactly(bert_records, tmp_path):
    make = lambda: bert_pretraining_dataset([bert_records], BATCH, SEQ, PREDICTIONS,  # noqa
                                            seed=3, shuffle_buffer=200)
    uninterrupted = iter(make())
    [next(uninterrupted) for _ in range(4)]
    path = tf.train.Checkpoint(iterator=uninterrupted).save(str(tmp_path / "ckpt"))
    expected = [as_numpy(next(uninterrupted)) for _ in range(6)]
    restored = iter(make())
    tf.train.Checkpoint(iterator=restored).restore(path).assert_consumed()
    assert_same_batches(expected, [as_numpy(next(restored)) for _ in range(6)])


def test_skip_batches_continues_the_seeded_stream(bert_records, gpt_records):
    bert = lambda skip: bert_pretraining_dataset(  # noqa: E731
        [bert_records], BATCH, SEQ, PREDICTIONS, seed=4, shuffle_buffer=200, skip_batches=skip)
    assert_same_batches(take(bert(0), 12)[7:], take(bert(7), 5))
    gpt = lambda skip: gpt_pretraining_dataset(  # noqa: E731
        [gpt_records], 4, SEQ, seed=4, skip_batches=skip)
    assert_same_batches(take(gpt(0), 60)[50:], take(gpt(50), 10))


def file_of(rows):
    return set((rows[:, 0] // 1000).tolist())


@pytest.mark.parametrize("is_training", [False, True])
def test_workers_read_disjoint_files(gpt_records, is_training):
    seen = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker,
                                             num_replicas_in_sync=2)
        dataset = gpt_pretraining_dataset([gpt_records], 4, SEQ, is_training=is_training,
                                          input_context=context, seed=0)
        rows = np.concatenate([b["input_ids"] for b in take(dataset, 20)])
        seen.append(file_of(rows))
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(GPT_FILES))


def test_fewer_files_than_workers_shards_records(gpt_records):
    one_file = gpt_records.replace("gpt-*", "gpt-0")
    rows = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker,
                                             num_replicas_in_sync=2)
        dataset = gpt_pretraining_dataset([one_file], 4, SEQ, is_training=False,
                                          input_context=context)
        rows.append(set(np.concatenate([b["input_ids"][:, 0] for b in take(dataset, -1)])))
    assert not rows[0] & rows[1] and len(rows[0] | rows[1]) == GPT_ROWS


def test_distribute_dataset_gives_per_replica_batches(bert_records, mirrored_strategy):
    strategy = mirrored_strategy
    global_batch = 8

    def dataset_fn(context):
        return bert_pretraining_dataset([bert_records], context.get_per_replica_batch_size(
            global_batch), SEQ, PREDICTIONS, input_context=context, seed=2)

    batch = next(iter(distribute_dataset(strategy, dataset_fn)))
    ids = strategy.experimental_local_results(batch["input_ids"])
    labels = strategy.experimental_local_results(batch["next_sentence_labels"])
    assert [tuple(t.shape) for t in ids] == [(4, SEQ), (4, SEQ)]
    assert [tuple(t.shape) for t in labels] == [(4,), (4,)]
    assert not np.array_equal(ids[0].numpy(), ids[1].numpy())


@pytest.fixture(scope="module")
def masking(vocab_file):
    return DynamicMasking.from_vocab_file(vocab_file)


def test_dynamic_masking_config_from_vocab(vocab_file, masking):
    assert (masking.vocab_size, masking.mask_id, masking.cls_id, masking.sep_id,
            masking.pad_id) == (30522, 103, 101, 102, 0)
    assert masking.continuation_mask is None
    whole = DynamicMasking.from_vocab_file(vocab_file, whole_word=True, selection_rate=0.2)
    assert whole.continuation_mask.dtype == bool and whole.continuation_mask.sum() > 5000
    assert whole.selection_rate == 0.2


def test_unmasking_recovers_the_original_text(bert_records, unmasked_bert_records):
    static = take(bert_pretraining_dataset([bert_records], BATCH, SEQ, PREDICTIONS,
                                           is_training=False), 8)
    plain = take(bert_pretraining_dataset([unmasked_bert_records], BATCH, SEQ, PREDICTIONS,
                                          is_training=False), 8)
    for masked, original in zip(static, plain):
        np.testing.assert_array_equal(masked["masked_lm_positions"],
                                      original["masked_lm_positions"])
        assert (masked["input_ids"] != original["input_ids"]).any()
        np.testing.assert_array_equal(original_input_ids(masked).numpy(), original["input_ids"])


def predicted_positions(batch, row):
    return set(batch["masked_lm_positions"][row][batch["masked_lm_weights"][row] > 0].tolist())


def check_dynamic_batch(batch, original, masking):
    """Targets are the original tokens; only predicted positions differ from the text;
    [CLS] / [SEP] / padding are never predicted."""
    weights = batch["masked_lm_weights"] > 0
    rows, cols = np.nonzero(weights)
    positions = batch["masked_lm_positions"][rows, cols]
    np.testing.assert_array_equal(batch["masked_lm_ids"][rows, cols], original[rows, positions])
    assert not np.isin(original[rows, positions],
                       [masking.cls_id, masking.sep_id, masking.pad_id]).any()
    untouched = batch["input_ids"].copy()
    untouched[rows, positions] = original[rows, positions]
    np.testing.assert_array_equal(untouched, original)


def test_dynamic_masking_statistics_and_fresh_masks(bert_records, unmasked_bert_records,
                                                    masking):
    make = lambda: bert_pretraining_dataset(  # noqa: E731
        [bert_records], BATCH, SEQ, PREDICTIONS, is_training=False, dynamic_masking=masking)
    static = bert_pretraining_dataset([bert_records], BATCH, SEQ, PREDICTIONS,
                                      is_training=False)
    assert make().element_spec == static.element_spec
    plain = take(bert_pretraining_dataset([unmasked_bert_records], BATCH, SEQ, PREDICTIONS,
                                          is_training=False), -1)
    # Two epochs of one dataset (as training repeats it): even with a global seed set by
    # another test, the second pass must draw new masks.
    both = take(make().repeat(2), -1)
    epochs = [both[:len(both) // 2], both[len(both) // 2:]]
    selected = real = as_mask = changed_rows = 0
    for first, second, original in zip(*epochs, plain):
        for batch in (first, second):
            np.testing.assert_array_equal(original_input_ids(batch).numpy(),
                                          original["input_ids"])
            check_dynamic_batch(batch, original["input_ids"], masking)
            for key in ("input_mask", "segment_ids", "next_sentence_labels"):
                np.testing.assert_array_equal(batch[key], original[key])
        weights = first["masked_lm_weights"] > 0
        selected += weights.sum()
        real += first["input_mask"].sum() - 3 * BATCH  # [CLS] and two [SEP] per row
        as_mask += (first["input_ids"][np.nonzero(weights)[0],
                                       first["masked_lm_positions"][weights]]
                    == masking.mask_id).sum()
        changed_rows += sum(predicted_positions(first, i) != predicted_positions(second, i)
                            for i in range(BATCH))
    # 15% of the real non-special tokens, rounded up per row (tf-text), at most 10 per row.
    assert 0.14 < selected / real < 0.18
    assert 0.75 < as_mask / selected < 0.85
    # A fresh mask each epoch.
    assert changed_rows > 0.9 * BATCH * len(plain)


@pytest.mark.parametrize("mask_token_rate, random_token_rate", [
    (1.0, 0.0), (0.0, 0.0), (0.0, 1.0)])
def test_dynamic_masking_mixes(bert_records, unmasked_bert_records, vocab_file,
                               mask_token_rate, random_token_rate):
    masking = DynamicMasking.from_vocab_file(vocab_file, mask_token_rate=mask_token_rate,
                                             random_token_rate=random_token_rate)
    dataset = bert_pretraining_dataset([bert_records], BATCH, SEQ, PREDICTIONS,
                                       is_training=False, dynamic_masking=masking)
    plain = bert_pretraining_dataset([unmasked_bert_records], BATCH, SEQ, PREDICTIONS,
                                     is_training=False)
    shown, original = [], []
    for batch, text in zip(take(dataset, 4), take(plain, 4)):
        check_dynamic_batch(batch, text["input_ids"], masking)
        weights = batch["masked_lm_weights"] > 0
        rows = np.nonzero(weights)[0]
        shown.append(batch["input_ids"][rows, batch["masked_lm_positions"][weights]])
        original.append(batch["masked_lm_ids"][weights])
    shown, original = np.concatenate(shown), np.concatenate(original)
    assert len(shown) > 200
    if mask_token_rate == 1.0:
        assert (shown == masking.mask_id).all()
    elif random_token_rate == 1.0:
        # Random ids come from the whole vocabulary: [MASK] or the same id only by chance.
        assert np.mean(shown == masking.mask_id) < 0.005
        assert np.mean(shown == original) < 0.005
    else:
        np.testing.assert_array_equal(shown, original)


def test_dynamic_masking_rates_are_checked(vocab_file):
    with pytest.raises(ValueError, match=r"mask_token_rate \+ random_token_rate must be <= 1"):
        DynamicMasking.from_vocab_file(vocab_file, mask_token_rate=0.9, random_token_rate=0.2)
    with pytest.raises(ValueError, match=r"random_token_rate must be in \[0, 1\]"):
        DynamicMasking(30522, 103, 101, 102, random_token_rate=-0.1)


def test_unmasked_yields_the_original_text(bert_records, unmasked_bert_records, masking):
    text = take(bert_pretraining_dataset([bert_records], BATCH, SEQ, PREDICTIONS,
                                         is_training=False, unmasked=True, use_nsp=False), 4)
    plain = take(bert_pretraining_dataset([unmasked_bert_records], BATCH, SEQ, PREDICTIONS,
                                          is_training=False, use_nsp=False), 4)
    for batch, original in zip(text, plain):
        assert set(batch) == {"input_ids", "input_mask", "segment_ids"}
        for key in batch:
            np.testing.assert_array_equal(batch[key], original[key])
    with pytest.raises(ValueError, match="dynamic_masking would re-mask"):
        bert_pretraining_dataset([bert_records], BATCH, SEQ, PREDICTIONS, unmasked=True,
                                 dynamic_masking=masking)


def test_whole_word_dynamic_masking(bert_records, unmasked_bert_records, vocab_file):
    masking = DynamicMasking.from_vocab_file(vocab_file, whole_word=True)
    continuation = np.array([t.startswith("##") for t in read_vocab_file(vocab_file)])
    dataset = bert_pretraining_dataset([bert_records], BATCH, SEQ, PREDICTIONS,
                                       is_training=False, dynamic_masking=masking)
    plain = bert_pretraining_dataset([unmasked_bert_records], BATCH, SEQ, PREDICTIONS,
                                     is_training=False)
    pieces_checked = 0
    for batch, original in zip(take(dataset, -1), take(plain, -1)):
        ids = original["input_ids"]
        check_dynamic_batch(batch, ids, masking)
        for row in range(BATCH):
            chosen = predicted_positions(batch, row)
            for position in chosen:
                if continuation[ids[row, position]]:
                    pieces_checked += 1
                    assert position - 1 in chosen, (row, position, sorted(chosen))
    assert pieces_checked > 50


def test_pattern_matching_nothing_is_named(tmp_path, bert_records):
    missing = str(tmp_path / "nothing-*.tfrecord")
    with pytest.raises(ValueError, match="nothing-"):
        records_in([bert_records, missing])
    with pytest.raises(ValueError, match="matches no file"):
        bert_pretraining_dataset([missing], BATCH, SEQ, PREDICTIONS)


def test_wrong_lengths_are_an_error_not_garbage(bert_records, gpt_records, tmp_path):
    # Checked on the first record when the dataset is made: names the file and lengths.
    with pytest.raises(ValueError, match=r"input_ids.: 64.*expected.*input_ids.: 128"):
        bert_pretraining_dataset([bert_records], BATCH, 128, PREDICTIONS)
    with pytest.raises(ValueError, match="masked_lm_positions"):
        bert_pretraining_dataset([bert_records], BATCH, SEQ, 20)
    with pytest.raises(ValueError, match="input_mask.: None"):  # GPT records, BERT reader
        bert_pretraining_dataset([gpt_records], BATCH, SEQ, PREDICTIONS)
    # A later file of another length (shards of two settings mixed) is named too: every
    # file's first record is checked.
    with tf.io.TFRecordWriter(str(tmp_path / "gpt-9.tfrecord")) as writer:
        for record in encode_examples({"input_ids": np.ones((8, 2 * SEQ), np.int64)}):
            writer.write(record)
    files = records_in([gpt_records]) + [str(tmp_path / "gpt-9.tfrecord")]
    with pytest.raises(ValueError, match=r"gpt-9.tfrecord: records do not match.*input_ids"):
        gpt_pretraining_dataset(files, 8, SEQ, is_training=False)


def test_corrupt_files_raise_and_can_be_located(gpt_records, tmp_path):
    good = records_in([gpt_records])[0]
    data = open(good, "rb").read()
    garbage = tmp_path / "a-garbage.tfrecord"
    garbage.write_bytes(b"this is not a TFRecord file\n" * 20)
    with pytest.raises(ValueError, match="a-garbage.tfrecord: not a readable TFRecord"):
        gpt_pretraining_dataset([str(garbage)], 4, SEQ)
    truncated = tmp_path / "b-truncated.tfrecord"
    truncated.write_bytes(data[:len(data) // 2 + 50])  # cut inside record GPT_ROWS / 2
    dataset = gpt_pretraining_dataset([str(truncated)], 4, SEQ, is_training=False)
    with pytest.raises(tf.errors.DataLossError, match="truncated record"):
        for _ in dataset:
            pass
    problems = find_corrupt_records([good, str(tmp_path / "*.tfrecord")])
    assert sorted(problems) == [str(garbage), str(truncated)]
    assert problems[str(truncated)].startswith(f"record {GPT_ROWS // 2}: truncated")


@pytest.fixture(scope="module")
def uneven_gpt_records(tmp_path_factory):
    """Files of 20, 40, 80 and 160 windows in order; every value of row r of file f is
    1000 f + r."""
    return write_gpt_records(tmp_path_factory.mktemp("uneven_gpt_records"), (20, 40, 80, 160))


def test_training_reads_every_file_at_the_same_pace(uneven_gpt_records):
    """Any prefix of a run is a near-uniform sample: half the records read means about half
    of every file, whatever its size (the 8-file interleave before issue 43 read files in
    turn, so a small file was read to its end while a large one was at its start)."""
    dataset = gpt_pretraining_dataset([uneven_gpt_records], 5, SEQ, seed=7, shuffle_buffer=1)
    first = np.concatenate([b["input_ids"][:, 0] for b in take(dataset, 30)])  # 150 of 300
    sizes = np.array([20, 40, 80, 160])
    files, rows = first // 1000, first % 1000
    share = np.bincount(files, minlength=4) / sizes
    assert (np.abs(share - 0.5) < 0.2).all(), share
    assert (rows < sizes[files]).all() and len(set(first.tolist())) == len(first)
    # The same pace holds at every point of the run, not only on average at its end.
    quarter = np.bincount(files[:75], minlength=4) / sizes
    assert (np.abs(quarter - 0.25) < 0.15).all(), quarter


def test_text_ids_come_with_the_batches(bert_records):
    plain = take(bert_pretraining_dataset([bert_records], BATCH, SEQ, PREDICTIONS, seed=2), 3)
    dataset = bert_pretraining_dataset([bert_records], BATCH, SEQ, PREDICTIONS, seed=2,
                                       text_ids=True)
    assert tuple(dataset.element_spec["doc_id"].shape) == (BATCH,)
    assert tuple(dataset.element_spec["text_span"].shape) == (BATCH, 2)
    with_ids = take(dataset, 3)
    for a, b in zip(plain, with_ids):  # the same records, in the same order
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        assert (b["text_span"][:, 0] < b["text_span"][:, 1]).all()


def test_paced_choices_in_blocks_are_the_stride_schedule():
    """File f comes up counts[f] times in every sum(counts) turns, evenly spread: the blocked
    computation gives the order of the one-at-a-time stride schedule it stands for."""
    from pretraining.input_pipeline import paced_choices
    counts = np.array([20, 40, 80, 160, 7, 1000], np.float64)
    blocked = np.array(list(paced_choices(counts, 3, block=16).take(3000).as_numpy_iterator()))
    strides = counts.sum() / counts
    turns = np.random.default_rng(3).random(len(counts)) * strides
    one_at_a_time = []
    for _ in range(3000):
        chosen = int(np.argmin(turns))
        one_at_a_time.append(chosen)
        turns[chosen] += strides[chosen]
    np.testing.assert_array_equal(blocked, one_at_a_time)
    np.testing.assert_array_equal(np.bincount(blocked[:1307]), counts)
    # At every point each file is within a few records of its share: one turn of its own,
    # plus the other files' turns running up to one ahead each.
    share = counts / counts.sum()
    for end in range(1, 3000, 37):
        off = np.abs(np.bincount(blocked[:end], minlength=len(counts)) - end * share)
        assert (off <= 1 + len(counts) * share).all(), (end, off)
