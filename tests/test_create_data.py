"""Pretraining data creation: record format, BERT instance rules, masking statistics,
determinism across workers, resume, atomic shards, GPT windows, errors."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from pretraining import create_data
from pretraining.create_data import DataConfig, create_pretraining_data, mask_instances
from pretraining.example_encoding import encode_examples

SEQ, PREDICTIONS = 64, 10


def bert_spec(seq=SEQ, predictions=PREDICTIONS):
    ints = lambda n: tf.io.FixedLenFeature([n], tf.int64)
    return {"input_ids": ints(seq), "input_mask": ints(seq), "segment_ids": ints(seq),
            "masked_lm_positions": ints(predictions), "masked_lm_ids": ints(predictions),
            "masked_lm_weights": tf.io.FixedLenFeature([predictions], tf.float32),
            "next_sentence_labels": ints(1)}


def read_records(output_dir, spec):
    files = sorted(glob.glob(os.path.join(output_dir, "*.tfrecord")))
    data = tf.data.TFRecordDataset(files).batch(100_000).map(
        lambda r: tf.io.parse_example(r, spec))
    return {k: v.numpy() for k, v in next(iter(data)).items()}


def test_fast_encoder_matches_protobuf():
    rng = np.random.default_rng(0)
    ints = {"a": rng.integers(0, 2 ** 40, (50, 7)), "b": rng.integers(0, 3, (50, 1))}
    floats = {"w": rng.random((50, 3)).astype(np.float32)}
    fast = encode_examples(ints, floats)
    for i, record in enumerate(fast):
        parsed = tf.train.Example.FromString(record)
        assert list(parsed.features.feature["a"].int64_list.value) == ints["a"][i].tolist()
        assert list(parsed.features.feature["b"].int64_list.value) == ints["b"][i].tolist()
        np.testing.assert_array_equal(parsed.features.feature["w"].float_list.value,
                                      floats["w"][i])
    with pytest.raises(ValueError, match="non-negative"):
        encode_examples({"a": np.array([[-1]])})


@pytest.fixture(scope="module")
def bert_config(bert_vocab_file):
    return DataConfig(vocab_file=bert_vocab_file,
                      max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS, dupe_factor=2,
                      chunk_bytes=64 << 10)


@pytest.fixture(scope="module")
def wiki_text(wiki_corpus):
    """The first 40 WikiText-2 articles as a corpus file."""
    return wiki_corpus(40)


@pytest.fixture(scope="module")
def wiki_records(tmp_path_factory, wiki_text, bert_config):
    out = tmp_path_factory.mktemp("records")
    totals = create_pretraining_data([str(wiki_text)], str(out), bert_config, num_workers=1,
                                     log=lambda m: None)
    return out, totals, read_records(out, bert_spec())


def test_bert_records_layout(wiki_records, bert_config):
    _, totals, r = wiki_records
    assert totals["instances"] == len(r["input_ids"]) > 500
    from tfmodels.tokenizers.wordpiece import WordPieceTokenizer
    tok = WordPieceTokenizer(bert_config.vocab_file)
    lengths = r["input_mask"].sum(1)
    assert (r["input_ids"][:, 0] == tok.cls_id).all()
    rows = np.arange(len(lengths))
    assert (r["input_ids"][rows, lengths - 1] == tok.sep_id).all()
    assert (r["input_ids"] == tok.sep_id).sum(1).tolist() == [2] * len(lengths)
    assert ((r["input_ids"] != 0) == (r["input_mask"] == 1)).all()
    # Segment 1 runs from after the first [SEP] to the end of the real tokens.
    first_sep = np.argmax(r["input_ids"] == tok.sep_id, axis=1)
    expected = (np.arange(SEQ)[None] > first_sep[:, None]) & (r["input_mask"] == 1)
    np.testing.assert_array_equal(r["segment_ids"], expected)
    # NSP: random half the time, plus always when a chunk has a single sentence (as in
    # google-research/bert), so a little over half.
    assert 0.45 < r["next_sentence_labels"].mean() < 0.7
    # Masked positions: real, never [CLS]/[SEP]; ~15% of tokens, at most the maximum.
    weights = r["masked_lm_weights"] > 0
    positions = r["masked_lm_positions"]
    assert weights.sum(1).max() <= PREDICTIONS and (weights.sum(1) >= 1).all()
    row_idx = np.nonzero(weights)[0]
    pos = positions[weights]
    assert (pos < lengths[row_idx]).all() and (pos > 0).all()
    assert not np.isin(r["input_ids"][row_idx, pos], [tok.cls_id, tok.sep_id]).any()
    rate = weights.sum() / (lengths - 3).sum()
    assert 0.12 < rate < 0.16
    # 80% of the targets show [MASK] in the input.
    assert 0.75 < np.mean(r["input_ids"][row_idx, pos] == tok.mask_id) < 0.85


def test_mask_statistics_and_targets():
    rng = np.random.default_rng(1)
    n, seq = 4000, 40
    ids = rng.integers(10, 1000, (n, seq))
    ids[:, 0], ids[:, -1] = 1, 2
    special = (ids == 1) | (ids == 2)
    config = DataConfig(max_predictions_per_seq=8, masked_lm_prob=0.15)
    out = mask_instances(ids, np.full(n, seq), special, None, config, 1000, 3, rng)
    chosen = out["masked_lm_weights"] > 0
    rows = np.nonzero(chosen)[0]
    pos = out["masked_lm_positions"][chosen]
    np.testing.assert_array_equal(out["masked_lm_ids"][chosen], ids[rows, pos])
    assert not special[rows, pos].any()
    assert (chosen.sum(1) == 6).all()  # round(38 * 0.15) = 6
    now = out["input_ids"][rows, pos]
    assert 0.78 < np.mean(now == 3) < 0.82
    assert 0.08 < np.mean(now == ids[rows, pos]) < 0.12  # unchanged (+ rare random hits)
    unchanged = np.ones_like(ids, bool)
    unchanged[rows, pos] = False
    assert (out["input_ids"][unchanged] == ids[unchanged]).all()


@pytest.mark.parametrize("mask_token_rate, random_token_rate", [
    (1.0, 0.0), (0.0, 0.0), (0.0, 1.0), (0.8, 0.0)])
def test_masking_mixes(mask_token_rate, random_token_rate):
    rng = np.random.default_rng(2)
    n, seq, mask_id = 2000, 40, 3
    ids = rng.integers(10, 1000, (n, seq))
    special = np.zeros_like(ids, bool)
    config = DataConfig(max_predictions_per_seq=8, mask_token_rate=mask_token_rate,
                        random_token_rate=random_token_rate)
    out = mask_instances(ids, np.full(n, seq), special, None, config, 1000, mask_id, rng)
    chosen = out["masked_lm_weights"] > 0
    rows = np.nonzero(chosen)[0]
    pos = out["masked_lm_positions"][chosen]
    now, original = out["input_ids"][rows, pos], ids[rows, pos]
    np.testing.assert_array_equal(out["masked_lm_ids"][chosen], original)
    if mask_token_rate == 1.0:
        assert (now == mask_id).all()
    elif random_token_rate == 1.0:
        # Random tokens come from the whole vocabulary (as in google-research/bert), so
        # [MASK] or the original token turn up only by chance, 1 / vocab each.
        assert np.mean(now == mask_id) < 0.005 and np.mean(now == original) < 0.005
    elif mask_token_rate == 0.0:
        np.testing.assert_array_equal(now, original)
    else:  # 80% [MASK], 20% unchanged
        assert 0.78 < np.mean(now == mask_id) < 0.82
        assert ((now == mask_id) | (now == original)).all()


def test_masking_rates_are_checked():
    with pytest.raises(ValueError) as error:
        DataConfig(mask_token_rate=-0.5, random_token_rate=1.5)
    assert "mask_token_rate must be in [0, 1], got -0.5" in str(error.value)
    assert "random_token_rate must be in [0, 1], got 1.5" in str(error.value)
    with pytest.raises(ValueError, match=r"mask_token_rate \+ random_token_rate must be <= 1"):
        DataConfig(mask_token_rate=0.9, random_token_rate=0.2)
    DataConfig(mask_token_rate=0.8, random_token_rate=0.2)  # the sum may be exactly 1
    # The binary exposes both as flags (generated from DataConfig).
    from absl import flags
    from tfmodels.config_flags import dataclass_from_flags, define_flags_from_dataclass
    values = flags.FlagValues()
    define_flags_from_dataclass(DataConfig, flag_values=values)
    values(["create_pretraining_data", "--mask_token_rate=1.0", "--random_token_rate=0"])
    config = dataclass_from_flags(DataConfig, flag_values=values)
    assert (config.mask_token_rate, config.random_token_rate) == (1.0, 0.0)


def test_whole_word_masking(bert_config, tmp_path):
    from tfmodels.tokenizers.wordpiece import WordPieceTokenizer
    tok = WordPieceTokenizer(bert_config.vocab_file)
    text = tmp_path / "t.txt"
    lines = ["the embeddings of unbelievable transformers", "are remarkable embeddings indeed"]
    text.write_text(("\n".join(lines) + "\n\n") * 40, encoding="utf-8")
    cfg = DataConfig(**{**bert_config.__dict__, "whole_word_mask": True, "dupe_factor": 3})
    create_pretraining_data([str(text)], str(tmp_path / "out"), cfg, log=lambda m: None)
    r = read_records(tmp_path / "out", bert_spec())
    cont = np.array([t.startswith("##") for t in tok.vocab])
    # Recover the original tokens: masked positions hold their targets.
    original = r["input_ids"].copy()
    for i in range(len(original)):
        w = r["masked_lm_weights"][i] > 0
        original[i, r["masked_lm_positions"][i][w]] = r["masked_lm_ids"][i][w]
    for i in range(len(original)):
        masked = set(r["masked_lm_positions"][i][r["masked_lm_weights"][i] > 0].tolist())
        for p in masked:
            if cont[original[i, p]]:
                assert p - 1 in masked  # a '##' piece is masked only with its word's start
            if p + 1 < SEQ and cont[original[i, p + 1]]:
                assert p + 1 in masked


def test_deterministic_across_workers_and_resumable(wiki_text, bert_config, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    create_pretraining_data([str(wiki_text)], str(one), bert_config, num_workers=1,
                            log=lambda m: None)
    create_pretraining_data([str(wiki_text)], str(two), bert_config, num_workers=2,
                            log=lambda m: None)
    shards = sorted(os.listdir(one))
    assert len(shards) > 2 and shards == sorted(os.listdir(two))
    for name in shards:
        if name.endswith(".tfrecord"):
            assert (one / name).read_bytes() == (two / name).read_bytes()
    victim = sorted(one.glob("*.tfrecord"))[1]
    before = victim.read_bytes()
    victim.unlink()
    logs = []
    totals = create_pretraining_data([str(wiki_text)], str(one), bert_config, log=logs.append)
    assert totals["skipped"] == totals["shards"] - 1 and victim.read_bytes() == before
    assert any("resuming" in line for line in logs)
    other = DataConfig(**{**bert_config.__dict__, "dupe_factor": 3})
    with pytest.raises(ValueError, match="dupe_factor"):
        create_pretraining_data([str(wiki_text)], str(one), other, log=lambda m: None)


def test_failure_leaves_no_partial_shard(wiki_text, bert_config, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = create_data.encode_examples

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(create_data, "encode_examples", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        create_pretraining_data([str(wiki_text)], str(tmp_path), bert_config,
                                log=lambda m: None)
    files = os.listdir(tmp_path)
    assert len([f for f in files if f.endswith(".tfrecord")]) == 1
    assert not [f for f in files if f.endswith(".tmp")]


def test_gpt_windows(shared_data, tmp_path):
    text = tmp_path / "docs.txt"
    text.write_text("first document line one .\nline two .\n\nsecond document .\n\n" * 30,
                    encoding="utf-8")
    folder = shared_data / "gpt1_openai"
    cfg = DataConfig(mode="gpt", bpe_encoder_file=str(folder / "encoder_bpe_40000.json"),
                     bpe_merges_file=str(folder / "vocab_40000.bpe"), n_ctx=16)
    totals = create_pretraining_data([str(text)], str(tmp_path / "out"), cfg, log=lambda m: None)
    r = read_records(tmp_path / "out", {"input_ids": tf.io.FixedLenFeature([16], tf.int64),
                                        **TEXT_IDS})
    assert totals["instances"] == len(r["input_ids"]) >= 10
    # pass_major shards hold the windows shuffled; text_span gives each one's place.
    windows = r["text_span"][:, 0]
    assert not (np.diff(windows) > 0).all()
    np.testing.assert_array_equal(np.sort(windows), np.arange(len(windows)))
    np.testing.assert_array_equal(r["text_span"][:, 1], windows + 1)
    in_order = np.argsort(windows)
    stream = r["input_ids"][in_order].reshape(-1)
    assert (stream == 40479).sum() >= 10  # the delimiter separates documents
    from tfmodels.tokenizers.gpt_bpe import GptBpeTokenizer
    tok = GptBpeTokenizer(cfg.bpe_encoder_file, cfg.bpe_merges_file)
    assert tok.decode(stream[:12].tolist()).startswith(
        "first document line one . line two . _delimiter_ second document")
    # doc_id: the document the window starts in; two per repetition of the text.
    doc_ids = r["doc_id"][in_order, 0]
    starts = np.concatenate([[0], np.nonzero(stream[:-1] == 40479)[0] + 1])
    expected = np.searchsorted(starts, np.arange(len(windows)) * 16, side="right") - 1
    np.testing.assert_array_equal(doc_ids, expected)
    assert doc_ids.max() < totals["documents"] == 60


TEXT_IDS = {"doc_id": tf.io.FixedLenFeature([1], tf.int64),
            "text_span": tf.io.FixedLenFeature([2], tf.int64)}


def shard_spans(path):
    spec = {"text_span": TEXT_IDS["text_span"]}
    data = tf.data.TFRecordDataset(str(path)).batch(100_000).map(
        lambda r: tf.io.parse_example(r, spec))
    return next(iter(data))["text_span"].numpy()


def first_repeat(spans):
    """(index of the first record holding a sentence seen before, sentences seen before it,
    sentences in the shard)."""
    seen = set()
    for index, (first, end) in enumerate(spans):
        sentences = set(range(first, end))
        if sentences & seen:
            break
        seen |= sentences
    everything = set().union(*(set(range(a, b)) for a, b in spans))
    return index, seen, everything


def test_pass_major_shards_hold_every_sentence_once_before_any_twice(
        wiki_records, wiki_text, bert_config, tmp_path):
    out, totals, _ = wiki_records
    r = read_records(out, TEXT_IDS)
    shards = sorted(out.glob("*.tfrecord"))
    for shard in shards:
        spans = shard_spans(shard)
        index, seen, everything = first_repeat(spans)
        assert seen == everything and 0.3 < index / len(spans) < 0.7  # dupe_factor 2
    # Text ids: corpus-wide, counted on across shards; almost every sentence is in a
    # record (google-research/bert drops a pair whose A or B is empty).
    covered = set().union(*(set(range(a, b)) for a, b in r["text_span"]))
    assert max(covered) < totals["sentences"] and len(covered) > 0.98 * totals["sentences"]
    assert r["doc_id"].min() == 0 and r["doc_id"].max() == totals["documents"] - 1 == 39
    # The layout before issue 43 (all passes shuffled together) repeats texts early, and
    # is a recorded setting: a folder made with it is not resumed with the new one.
    mixed = DataConfig(**{**bert_config.__dict__, "record_order": "chunk_mixed"})
    create_pretraining_data([str(wiki_text)], str(tmp_path), mixed, log=lambda m: None)
    spans = shard_spans(sorted(tmp_path.glob("*.tfrecord"))[0])
    index, seen, everything = first_repeat(spans)
    assert index < 0.2 * len(spans) and len(seen) < 0.5 * len(everything)
    with pytest.raises(ValueError, match="record_order was 'chunk_mixed', now 'pass_major'"):
        create_pretraining_data([str(wiki_text)], str(tmp_path), bert_config, log=lambda m: None)


def test_pass_sequence_keeps_every_prefix_within_its_passes():
    """The first k passes of a shard hold at least k / dupe_factor of its records, so a
    reader at that share has not started pass k + 1; and no more than largest-first needs."""
    rng = np.random.default_rng(0)
    assert create_data.pass_sequence([515, 505, 705, 496, 625]) == [4, 0, 2, 3, 1]
    for _ in range(200):
        sizes = rng.integers(0, 50, rng.integers(1, 11)).tolist()
        order = create_data.pass_sequence(sizes)
        assert sorted(order) == list(range(len(sizes)))
        held = np.cumsum([sizes[p] for p in order])
        bound = np.arange(1, len(sizes) + 1) * sum(sizes) / len(sizes)
        assert (held >= bound - 1e-9).all()
        assert (held <= np.cumsum(sorted(sizes, reverse=True))).all()


def synthetic_documents():
    """Token ids that name their place: document d, sentence s, token k -> 10000 d + 100 s
    + k + 1; lengths 3..40, one sentence longer than an instance."""
    rng = np.random.default_rng(0)
    documents = []
    for d in range(12):
        lengths = rng.integers(3, 40, rng.integers(1, 9))
        if d == 5:
            lengths[0] = 75  # longer than a 64-token instance's 62 tokens
        documents.append([(10000 * d + 100 * s + np.arange(n) + 1).tolist()
                          for s, n in enumerate(lengths)])
    return documents


@pytest.mark.parametrize("packing", ["full_sentences", "doc_sentences"])
def test_packed_instances(packing):
    config = DataConfig(max_seq_length=SEQ, packing=packing)
    documents = synthetic_documents()
    sep = 0  # no text token is 0
    instances = list(create_data.packed_instances(documents, config, sep))
    budget = SEQ - 2
    text = [t for doc in documents for s in doc for t in s]
    # Every token once, in order; separators only between documents, never first or last.
    joined = [t for tokens, _, _ in instances for t in tokens if t != sep]
    assert joined == text
    for tokens, first_doc, _ in instances:
        assert len(tokens) <= budget and tokens[0] != sep and tokens[-1] != sep
        assert tokens[0] // 10000 == first_doc
        for i, t in enumerate(tokens):
            if t == sep:  # the document changes here, and only here
                assert tokens[i + 1] // 10000 == tokens[i - 1] // 10000 + 1
            elif i and tokens[i - 1] != sep:
                assert t // 10000 == tokens[i - 1] // 10000
    lengths = np.array([len(tokens) for tokens, _, _ in instances])
    if packing == "full_sentences":
        # Filled: only the chunk's last is short, or one that had room for a [SEP] but
        # not for a token after it.
        assert (lengths[:-1] >= budget - 1).all() and (lengths == budget).mean() > 0.8
        assert sum(sep in tokens for tokens, _, _ in instances) >= 8
    else:
        assert all(sep not in tokens for tokens, _, _ in instances)
        ends = {len(instances) - 1} | {i for i in range(len(instances) - 1)
                                       if instances[i + 1][1] != instances[i][1]}
        assert all(lengths[i] == budget for i in range(len(instances)) if i not in ends)
    # Spans: each sentence counted once, in the instance its first token is in.
    starts = {s[0]: n for n, s in enumerate(s for doc in documents for s in doc)}
    counted = [n for _, _, (first, end) in instances for n in range(first, end)]
    assert counted == list(range(len(starts)))
    for tokens, _, (first, end) in instances:
        assert {starts[t] for t in tokens if t in starts} == set(range(first, end))


def test_full_sentences_records_fill_the_length_and_have_no_nsp(wiki_text, bert_config,
                                                                 tmp_path):
    config = DataConfig(**{**bert_config.__dict__, "packing": "full_sentences"})
    totals = create_pretraining_data([str(wiki_text)], str(tmp_path), config, log=lambda m: None)
    spec = {k: v for k, v in bert_spec().items() if k != "next_sentence_labels"}
    r = read_records(tmp_path, {**spec, **TEXT_IDS})
    lengths = r["input_mask"].sum(1)
    assert totals["instances"] == len(lengths) and lengths.mean() / SEQ > 0.98
    assert (r["segment_ids"] == 0).all()
    assert (r["masked_lm_weights"].sum(1).mean()) > 0.95 * round((SEQ - 2) * 0.15)
    files = sorted(tmp_path.glob("*.tfrecord"))
    example = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(str(files[0])))
                                          ).numpy())
    assert "next_sentence_labels" not in example.features.feature
    from pretraining.input_pipeline import bert_pretraining_dataset
    pattern = str(tmp_path / "*.tfrecord")
    batch = next(iter(bert_pretraining_dataset(pattern, 8, SEQ, PREDICTIONS, use_nsp=False,
                                               seed=0)))
    assert batch["input_ids"].shape == (8, SEQ)
    with pytest.raises(ValueError, match="no next_sentence_labels.*--nouse_nsp"):
        bert_pretraining_dataset(pattern, 8, SEQ, PREDICTIONS)
    with pytest.raises(ValueError, match="packing must be one of"):
        DataConfig(packing="sentences")


def test_errors_name_the_problem(bert_config, tmp_path):
    with pytest.raises(ValueError, match="matches no file"):
        create_pretraining_data([str(tmp_path / "none*.txt")], str(tmp_path / "o"), bert_config)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good line\n\xff\xfe bad bytes\n")
    with pytest.raises(ValueError, match=r"bad\.txt: invalid UTF-8.*line 2"):
        create_pretraining_data([str(bad)], str(tmp_path / "o2"), bert_config,
                                log=lambda m: None)
    with pytest.raises(ValueError, match="does not exist"):
        create_pretraining_data([str(bad)], str(tmp_path / "o3"),
                                DataConfig(vocab_file=str(tmp_path / "missing.txt")))
