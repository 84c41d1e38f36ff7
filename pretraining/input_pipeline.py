"""Pretraining TFRecords -> batches for BERT and GPT-1, with tf.data.

Reads the records that `pretraining/create_data.py` writes (google-research/bert's feature
names) and yields dicts of int32 tensors (float32 `masked_lm_weights`) with fully static
shapes, the inputs `BertPretrainer` and `GptLanguageModel` take.

Pipeline order, and why:

  1. files        sorted file list (`records_in`), so every worker and every run starts
                  from the same list.
  2. shard        by FILE, per input pipeline (`input_context`), before anything is read:
                  each worker opens only its own files instead of reading everything and
                  throwing (n-1)/n of it away. With fewer files than pipelines we fall back to
                  sharding records after the pacing.
  3. pace         every file at once, each repeated on its own, file f taking
                  (records in f) of every (records in all) turns, evenly spread
                  (`paced_choices`; the first turns drawn with the seed). Files of any
                  size then advance at the same pace, within a few records, so any prefix
                  of the run is a near-uniform sample of the corpus.
                  The records are read from a manifest.json beside the shards, or by
                  walking the record headers.
                  Before issue 43 the file list was shuffled and `cycle_length` 8 files
                  were read to their end: a 16,000-step run of 32 read 40% of
                  wikipedia20m's documents, each some 4.7 times (BUILD_NOTES). With
                  `create_data`'s pass_major shards (one dupe pass of a chunk, shuffled,
                  then the next, ...), reading at an even pace sees every text once
                  before any twice (tools/data_coverage measures it).
                  Cost: one open reader per file (`READER_BUFFER_BYTES` of buffer each;
                  BUILD_NOTES gives the RSS for 143 shards).
  4. shuffle      records (seeded, `shuffle_buffer`): mixes the records drawn.
  5. batch        `drop_remainder=True` always: TPU/XLA need static shapes, and a short
                  last batch would retrace the jit-compiled step.
  6. parse        the whole batch at once with `tf.io.parse_example` (one op per batch is
                  several times faster than `parse_single_example` per record), then cast
                  int64 -> int32.
  7. re-mask      optional dynamic masking (`DynamicMasking`): recover the original tokens
                  and draw a fresh MLM mask with tf-text, in-graph, on the whole batch.
  8. prefetch     overlap input with the training step.

Evaluation (`is_training=False`) skips 3 and 4: files in order, no repeat, one pass.

`text_ids=True` adds each record's `doc_id` [batch] and `text_span` [batch, 2] (written by
`create_data` since issue 43) to the batches, for tools/data_coverage: the same order as
training, with the ids that say which text each record holds.

Determinism and resuming: with a `seed`, two fresh datasets give identical batches. A job
resumes its input in one of two ways: `tf.train.Checkpoint(iterator=iter(dataset))` saves
the position (each reader's offset, the pacing's turns, the shuffle buffer's
`shuffle_buffer` serialized records) of a plain dataset's iterator; the iterators of
`distribute_dataset` are not trackable, so there a resumed job rebuilds the seeded dataset
with `skip_batches=step`, which reads the batches already consumed without parsing them.
Dynamic masking is the exception: tf-text draws masks from stateful random ops, partly inside a
parallel while loop, so the masks are not reproducible even with a seed, and their state is
not saved in iterator checkpoints. The records under the masks (which examples, in which
order) are still deterministic and resume exactly.

Errors: `records_in` raises ValueError naming a pattern that matches no record file (it
leaves out manifests, progress files and *.tmp). When eager, each file's first record is read
at construction time and checked against the requested lengths, so a `seq_length` /
`max_predictions` mismatch is a ValueError naming the file. `check_record_files` (called by
the trainer before step 1) refuses empty and truncated files by name (against the sizes in
manifest.json, or by walking the record headers) and sets smaller than one batch. A file
corrupted inside raises `tf.errors.DataLossError` while iterating ("corrupted record at N");
tf.data cannot say which file, so `find_corrupt_records(file_patterns)` names it (the trainer
does this and re-raises).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from pretraining.create_data import masking_rate_problems
from pretraining.masking import mask_packed_inputs
from tfmodels.tokenizers.wordpiece import read_vocab_file

AUTOTUNE = tf.data.AUTOTUNE
Features = Dict[str, tf.Tensor]
Patterns = Union[str, Sequence[str]]


# Files that sit beside the shards of pretraining/create_data.py and are not records.
NOT_RECORD_SUFFIXES = (".json", ".jsonl", ".tmp")


def records_in(file_patterns: Patterns) -> List[str]:
    """Expands glob patterns (local or gs://) into a sorted, de-duplicated list of record
    files: folders, hidden files (.lock), manifests and progress files (*.json, *.jsonl) and
    half-written files (*.tmp) are left out, so `records/bert128/*` reads the shards only.

    Raises ValueError naming the first pattern that matches no record file.
    """
    if isinstance(file_patterns, str):
        file_patterns = [file_patterns]
    if not file_patterns:
        raise ValueError("no record file patterns given")
    files = set()
    for pattern in file_patterns:
        matched = tf.io.gfile.glob(pattern)
        if not matched:
            raise ValueError(f"record file pattern {pattern!r} matches no file")
        # Hidden files (the folder lock's .lock) are not shards; tf.io.gfile.glob, unlike
        # the shell, matches them with `*`.
        records = [path for path in matched if not path.endswith(NOT_RECORD_SUFFIXES)
                   and not os.path.basename(path).startswith(".")
                   and not tf.io.gfile.isdir(path)]
        if not records:
            raise ValueError(f"record file pattern {pattern!r} matches no record file (only "
                             f"{', '.join(sorted(matched)[:3])}); name the shards, e.g. "
                             f"'<folder>/*.tfrecord'")
        files.update(records)
    return sorted(files)


def _manifest_shards(folder: str, cache: Dict[str, Dict[str, Dict]]) -> Dict[str, Dict]:
    """{shard file name: manifest entry (records, bytes)} of `folder`'s manifest.json."""
    if folder not in cache:
        cache[folder] = {}
        path = os.path.join(folder, "manifest.json")
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                try:
                    shards = json.load(f).get("shards", [])
                except ValueError:
                    raise ValueError(f"{path}: not valid JSON") from None
            cache[folder] = {s["file"]: s for s in shards if isinstance(s, dict)}
    return cache[folder]


def walk_record_headers(path: str) -> Tuple[int, int]:
    """(records, bytes they span) found by following the TFRecord length headers without
    reading the payloads; bytes < file size means the file is cut short (a shard cut inside
    a record header reads, in tf.data, as a shorter shard without any error)."""
    size = tf.io.gfile.stat(path).length
    count = position = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while position < size:
            header = f.read(12)  # uint64 length + uint32 CRC of the length
            if len(header) < 12:
                break
            length = struct.unpack("<Q", header[:8])[0]
            end = position + 12 + length + 4  # payload + its CRC
            if end > size:
                break
            f.seek(end)
            position, count = end, count + 1
    return count, position


def check_record_files(file_patterns: Patterns, min_records: int = 1,
                       what: str = "input_files", batch: str = "batch") -> List[str]:
    """The record files of `file_patterns`, after checking each one before training starts.

    A shard listed in its folder's manifest.json (pretraining/create_data.py) must have the
    byte size the manifest records (cheap: no reading); any other file has its record
    headers walked. Empty and truncated files are refused by name, and so is a set holding
    fewer than `min_records` records (a global batch: fewer would never fill one; `batch`
    names it in the message).
    """
    files = records_in(file_patterns)
    manifests: Dict[str, Dict[str, Dict]] = {}
    problems, total = [], 0
    for path in files:
        size = tf.io.gfile.stat(path).length
        listed = _manifest_shards(os.path.dirname(path), manifests).get(os.path.basename(path))
        if size == 0:
            problems.append(f"{path} is empty (0 bytes)")
        elif listed is not None:
            if size != listed["bytes"]:
                problems.append(f"{path} has {size} bytes, its manifest.json says "
                                f"{listed['bytes']} ({listed['records']} records): truncated "
                                f"or overwritten")
            total += listed["records"]
        else:
            records, spanned = walk_record_headers(path)
            if spanned != size:
                problems.append(f"{path} is truncated: {records} complete records end at byte "
                                f"{spanned} of {size}")
            total += records
    if problems:
        raise ValueError(f"{what}: {len(problems)} of {len(files)} record files cannot be "
                         f"used: " + "; ".join(problems[:5])
                         + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))
    if total < min_records:
        raise ValueError(f"{what}: {total} records in {len(files)} file(s) "
                         f"({', '.join(files[:3])}{' ...' if len(files) > 3 else ''}), fewer "
                         f"than one {batch} of {min_records}")
    return files


def find_corrupt_records(file_patterns: Patterns) -> Dict[str, str]:
    """{file: 'record N: error'} for every file that cannot be read to the end, or that ends
    inside a record (cut short in a record header, which tf.data reads as a shorter file).

    tf.data's DataLossError ("corrupted record at <byte offset>") does not name the file;
    call this when it is raised (it reads every file once, so only then).
    """
    problems = {}
    for path in records_in(file_patterns):
        count = spanned = 0
        try:
            for record in tf.data.TFRecordDataset(path):  # one at a time, to count good ones
                count += 1
                spanned += 16 + len(record.numpy())  # length, its CRC, payload, its CRC
        except tf.errors.DataLossError as e:
            problems[path] = f"record {count}: {_error_text(e)}"
            continue
        size = tf.io.gfile.stat(path).length
        if spanned != size:
            problems[path] = (f"record {count}: truncated, the file ends inside a record "
                              f"header ({count} records end at byte {spanned} of {size})")
    return problems


def _error_text(error: tf.errors.OpError) -> str:
    """The reason in a tf error message, without the op and function-node decorations."""
    text = error.message.split("}} ")[-1]
    return re.sub(r"\s*\[Op:.*$", "", text, flags=re.S).strip()


# ----------------------------------------------------------------------------------------
# Record specs


def bert_feature_spec(seq_length: int, max_predictions: int,
                      use_nsp: bool = True) -> Dict[str, tf.io.FixedLenFeature]:
    """google-research/bert's pretraining features, as `create_data` writes them."""
    ints = lambda n: tf.io.FixedLenFeature([n], tf.int64)  # noqa: E731
    spec = {"input_ids": ints(seq_length), "input_mask": ints(seq_length),
            "segment_ids": ints(seq_length), "masked_lm_positions": ints(max_predictions),
            "masked_lm_ids": ints(max_predictions),
            "masked_lm_weights": tf.io.FixedLenFeature([max_predictions], tf.float32)}
    if use_nsp:
        spec["next_sentence_labels"] = ints(1)
    return spec


def gpt_feature_spec(seq_length: int) -> Dict[str, tf.io.FixedLenFeature]:
    return {"input_ids": tf.io.FixedLenFeature([seq_length], tf.int64)}


def text_id_spec() -> Dict[str, tf.io.FixedLenFeature]:
    """Which text a record holds (create_data, since issue 43): the corpus index of the
    document it starts in, and the [first, end) corpus indexes of its sentences (BERT) or
    its window (GPT)."""
    return {"doc_id": tf.io.FixedLenFeature([1], tf.int64),
            "text_span": tf.io.FixedLenFeature([2], tf.int64)}


# Features whose absence (alone) has a known cause, and what to do about it.
MISSING_FEATURE_HINTS = {
    ("next_sentence_labels",): "records made with --packing=full_sentences or doc_sentences "
                            "have no NSP labels: pretrain them with --nouse_nsp",
    ("doc_id", "text_span"): "records made before issue 43 carry no text ids: recreate them with "
              "create_pretraining_data",
}


def _check_first_record(files: Sequence[str], spec: Dict[str, tf.io.FixedLenFeature]) -> None:
    """Reads each file's first record and compares its feature lengths with `spec` (eager
    only).

    Turns the usual configuration mistake (records made at another seq_length) into an
    error that names the file and both lengths, before a training job starts.
    """
    if not tf.executing_eagerly():
        return  # e.g. a dataset_fn traced by ParameterServerStrategy
    for path in files:  # one record per file: mixed shards are a common mistake too
        try:
            record = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
        except tf.errors.DataLossError as e:
            raise ValueError(f"{path}: not a readable TFRecord file ({_error_text(e)})"
                             ) from None
        if record is None:
            continue
        example = tf.train.Example.FromString(record.numpy())
        found = {}
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            found[name] = len(getattr(feature, kind).value) if kind else 0
        wrong = {name: found.get(name) for name, f in spec.items()
                 if found.get(name) != f.shape[0]}
        for names, hint in MISSING_FEATURE_HINTS.items():
            if wrong and set(wrong) <= set(names) and all(v is None for v in wrong.values()):
                raise ValueError(f"{path}: records have no {' / '.join(sorted(wrong))} "
                                 f"feature; {hint}")
        if wrong:
            expected = {name: spec[name].shape[0] for name in wrong}
            raise ValueError(f"{path}: records do not match the requested shapes: feature "
                             f"lengths {wrong} in the file, expected {expected} (None: "
                             f"missing). Were they made with another max_seq_length / "
                             f"max_predictions_per_seq / mode?")


# ----------------------------------------------------------------------------------------
# Dynamic masking


def _prediction_hits(features: Features, seq_length: int) -> tf.Tensor:
    """int32 [batch, predictions, seq]: one-hot positions of the real (weight > 0)
    predictions. One-hot rather than a scatter: no duplicate indices from the padding
    predictions (all at position 0), and static shapes for XLA."""
    return (tf.one_hot(tf.cast(features["masked_lm_positions"], tf.int32), seq_length,
                       dtype=tf.int32)
            * tf.cast(features["masked_lm_weights"] > 0, tf.int32)[:, :, None])


def original_input_ids(features: Features) -> tf.Tensor:
    """Undoes the static mask: `masked_lm_ids` scattered back into `input_ids`.

    Exact, because the targets are the original tokens. Padding predictions (weight 0,
    position 0) are ignored. int [batch, seq] -> int32 [batch, seq].
    """
    ids = tf.cast(features["input_ids"], tf.int32)
    hits = _prediction_hits(features, ids.shape[1])
    targets = tf.cast(features["masked_lm_ids"], tf.int32)[:, :, None]
    return tf.where(tf.reduce_max(hits, axis=1) > 0, tf.reduce_sum(hits * targets, axis=1),
                    ids)


@dataclasses.dataclass(frozen=True)
class DynamicMasking:
    """In-graph MLM re-masking each time an example is read (a fresh mask every epoch).

    mask_token_rate / random_token_rate: the replacement mix of the selected tokens (the rest
      keep theirs); the paper's Appendix C.2 mixes are listed in pretraining.create_data.
    continuation_mask: bool [vocab] marking '##' pieces; given, whole words are masked.
    """
    vocab_size: int
    mask_id: int
    cls_id: int
    sep_id: int
    pad_id: int = 0
    selection_rate: float = 0.15
    mask_token_rate: float = 0.8
    random_token_rate: float = 0.1
    continuation_mask: Optional[Any] = dataclasses.field(default=None, compare=False,
                                                         repr=False)

    def __post_init__(self):
        problems = masking_rate_problems(self.mask_token_rate, self.random_token_rate)
        if problems:
            raise ValueError("bad dynamic masking: " + "; ".join(problems))

    @classmethod
    def from_vocab_file(cls, vocab_file: str, whole_word: bool = False,
                        **rates: float) -> "DynamicMasking":
        """Special-token ids (and the '##' mask for whole words) from a WordPiece vocab."""
        vocab = read_vocab_file(vocab_file)
        ids = {token: i for i, token in enumerate(vocab)}
        continuation = (np.array([t.startswith("##") for t in vocab]) if whole_word else None)
        return cls(vocab_size=len(vocab), mask_id=ids["[MASK]"], cls_id=ids["[CLS]"],
                   sep_id=ids["[SEP]"], pad_id=ids["[PAD]"], continuation_mask=continuation,
                   **rates)

    def __call__(self, features: Features, max_predictions: int) -> Features:
        """Re-masks a parsed batch; same keys, shapes and dtypes as the input."""
        unmasked = {k: v for k, v in features.items() if not k.startswith("masked_lm_")}
        unmasked["input_ids"] = original_input_ids(features)
        continuation = (None if self.continuation_mask is None
                        else tf.convert_to_tensor(self.continuation_mask, tf.bool))
        out = mask_packed_inputs(
            unmasked, self.vocab_size, self.mask_id, [self.cls_id, self.sep_id, self.pad_id],
            max_predictions, selection_rate=self.selection_rate,
            mask_token_rate=self.mask_token_rate, random_token_rate=self.random_token_rate,
            continuation_mask=continuation)
        # tf-text's ragged ops lose the static batch size; restore the input's shapes.
        return {k: tf.ensure_shape(tf.cast(out[k], v.dtype), v.shape)
                for k, v in features.items()}


# ----------------------------------------------------------------------------------------
# The shared part: files -> serialized records -> parsed batches


def _pipelines(input_context: Optional[tf.distribute.InputContext]) -> Tuple[int, int]:
    if input_context is None or input_context.num_input_pipelines <= 1:
        return 1, 0
    return input_context.num_input_pipelines, input_context.input_pipeline_id


def record_counts(files: Sequence[str]) -> List[int]:
    """Records per file: from the folder's manifest.json where it lists the file (no
    reading), else by walking the record headers."""
    manifests: Dict[str, Dict[str, Dict]] = {}
    counts = []
    for path in files:
        listed = _manifest_shards(os.path.dirname(path), manifests).get(os.path.basename(path))
        counts.append(listed["records"] if listed is not None else walk_record_headers(path)[0])
    return counts


# Per open file: every shard is open at once while training (module notes, step 3), so the
# read buffer is kept small; 64 KB still reads ~100 records per refill at length 128.
READER_BUFFER_BYTES = 64 << 10


def paced_choices(counts: np.ndarray, seed: Optional[int],
                  block: int = 1024) -> tf.data.Dataset:
    """An endless dataset of file indexes in which file f comes up counts[f] times in every
    sum(counts) (stride scheduling): each file is read at the pace of its size, within a
    few records at any point of the run (one of its own turns, plus up to one turn ahead
    for each other file, weighted by its share). Each file's first turn is drawn at random
    (seeded) within its first stride, which also decides ties.

    Random draws with the same weights (`sample_from_datasets`) drift: after 512k records
    of wikipedia20m's 143 training shards (dupe 5) they left the shards between 1.72 and
    1.97 dupe passes read (three seeds), where the even pace is 1.82.

    The turns come `block` at a time (the block earliest of every file's next `block`
    turns), which is the same order as one at a time and keeps the per-record cost off
    the input's critical path (one at a time, the pipeline read 4.6k records/s)."""
    strides = counts.sum() / np.asarray(counts, np.float64)
    start = np.random.default_rng(seed).random(len(strides)) * strides
    files = len(strides)
    strides = tf.constant(strides, tf.float64)
    steps = tf.range(block, dtype=tf.float64)

    def next_block(turns: tf.Tensor, _) -> Tuple[tf.Tensor, tf.Tensor]:
        upcoming = tf.reshape(turns[:, None] + steps[None, :] * strides[:, None], [-1])
        _, earliest = tf.math.top_k(-upcoming, k=block, sorted=True)
        chosen = tf.cast(earliest // block, tf.int64)
        taken = tf.math.bincount(tf.cast(chosen, tf.int32), minlength=files,
                                 maxlength=files, dtype=tf.float64)
        return turns + taken * strides, chosen

    return (tf.data.Dataset.from_tensors(0).repeat()
            .scan(tf.constant(start, tf.float64), next_block).unbatch())


def _serialized_records(files: List[str], is_training: bool,
                        input_context: Optional[tf.distribute.InputContext],
                        seed: Optional[int], shuffle_buffer: int) -> tf.data.Dataset:
    """Steps 1-4 of the module docstring: a dataset of serialized tf.Examples."""
    pipelines, pipeline_id = _pipelines(input_context)
    shard_records = pipelines > len(files)
    if not shard_records:
        files = files[pipeline_id::pipelines]  # the same split as Dataset.shard
    if is_training:
        counts = np.array(record_counts(files), np.float64)
        readers = [tf.data.TFRecordDataset(path, buffer_size=READER_BUFFER_BYTES).repeat()
                   for path, count in zip(files, counts) if count]
        if not readers:
            raise ValueError(f"no records in {len(files)} file(s): {', '.join(files[:3])}")
        dataset = (readers[0] if len(readers) == 1 else
                   tf.data.Dataset.choose_from_datasets(
                       readers, paced_choices(counts[counts > 0], seed)))
    else:
        dataset = tf.data.TFRecordDataset(files)  # one after the other, in order
    if shard_records:
        # Fewer files than pipelines: every pipeline reads all files and keeps every n-th
        # record. With a seed all pipelines see the same order, so the shards are disjoint;
        # without one they are independent random subsets.
        dataset = dataset.shard(pipelines, pipeline_id)
    if is_training:
        # A different seed from the files' first turns, so the two draws are unrelated.
        dataset = dataset.shuffle(shuffle_buffer, seed=None if seed is None else seed + 1,
                                  reshuffle_each_iteration=True)
    return dataset


def _parsed_batches(dataset: tf.data.Dataset, batch_size: int,
                    spec: Dict[str, tf.io.FixedLenFeature], skip_batches: int = 0,
                    postprocess: Optional[Callable[[Features], Features]] = None
                    ) -> tf.data.Dataset:
    """Steps 5-6: static batches parsed in one op, int64 -> int32; the first
    `skip_batches` batches are dropped before parsing (read, never parsed)."""
    def parse(records: tf.Tensor) -> Features:
        features = tf.io.parse_example(records, spec)
        features = {k: tf.cast(v, tf.int32) if v.dtype == tf.int64 else v
                    for k, v in features.items()}
        return postprocess(features) if postprocess else features

    dataset = dataset.batch(batch_size, drop_remainder=True)
    if skip_batches:
        dataset = dataset.skip(skip_batches)
    return dataset.map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)


def _options(seed: Optional[int]) -> tf.data.Options:
    options = tf.data.Options()
    if seed is not None:
        options.deterministic = True
    return options


def _check_sizes(batch_size: int, skip_batches: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if skip_batches < 0:
        raise ValueError(f"skip_batches must be >= 0, got {skip_batches}")


# ----------------------------------------------------------------------------------------
# Public datasets


def bert_pretraining_dataset(file_patterns: Patterns, batch_size: int, seq_length: int,
                             max_predictions: int, *, is_training: bool = True,
                             input_context: Optional[tf.distribute.InputContext] = None,
                             seed: Optional[int] = None, shuffle_buffer: int = 10000,
                             dynamic_masking: Optional[DynamicMasking] = None,
                             use_nsp: bool = True, skip_batches: int = 0,
                             unmasked: bool = False, text_ids: bool = False
                             ) -> tf.data.Dataset:
    """BERT pretraining batches (MLM + NSP) from `create_data` records.

    batch_size: PER-REPLICA batch size (`input_context.get_per_replica_batch_size`).
    Yields int32 `input_ids`, `input_mask`, `segment_ids` [batch, seq_length],
    `masked_lm_positions`, `masked_lm_ids` [batch, max_predictions], float32
    `masked_lm_weights` [batch, max_predictions] and, with `use_nsp`, int32
    `next_sentence_labels` [batch].
    dynamic_masking: re-mask in-graph each time a record is read instead of using the
    record's static mask.
    skip_batches: drop the first batches (read but not parsed or masked): with a seed, how a
    resumed job continues where it stopped without an iterator checkpoint.
    unmasked: yield the original text instead (static masks undone with `original_input_ids`,
    no `masked_lm_*` features): the input of a left-to-right LM on the same records.
    text_ids: also yield int32 `doc_id` [batch] and `text_span` [batch, 2] (module notes).
    """
    _check_sizes(batch_size, skip_batches)
    if unmasked and dynamic_masking is not None:
        raise ValueError("unmasked yields the original text; dynamic_masking would re-mask it")
    files = records_in(file_patterns)
    spec = {**bert_feature_spec(seq_length, max_predictions, use_nsp),
            **(text_id_spec() if text_ids else {})}
    _check_first_record(files, spec)

    def finish(features: Features) -> Features:
        if text_ids:
            features["doc_id"] = tf.squeeze(features["doc_id"], -1)
        if use_nsp:
            features["next_sentence_labels"] = tf.squeeze(features["next_sentence_labels"], -1)
        if unmasked:
            features["input_ids"] = original_input_ids(features)
            features = {k: v for k, v in features.items() if not k.startswith("masked_lm_")}
        return features

    dataset = _serialized_records(files, is_training, input_context, seed, shuffle_buffer)
    dataset = _parsed_batches(dataset, batch_size, spec, skip_batches, finish)
    if dynamic_masking is not None:
        dataset = dataset.map(lambda features: dynamic_masking(features, max_predictions),
                              num_parallel_calls=AUTOTUNE, deterministic=True)
        # tf-text's random ops are stateful, and tf.data refuses to checkpoint an iterator
        # holding state it cannot save ("RandomShuffle is stateful"). Ignoring it is the
        # intended behaviour: records resume exactly, masks are fresh draws.
        options = tf.data.Options()
        options.experimental_external_state_policy = (
            tf.data.experimental.ExternalStatePolicy.IGNORE)
        dataset = dataset.with_options(options)
    return dataset.prefetch(AUTOTUNE).with_options(_options(seed))


def gpt_pretraining_dataset(file_patterns: Patterns, batch_size: int, seq_length: int, *,
                            is_training: bool = True,
                            input_context: Optional[tf.distribute.InputContext] = None,
                            seed: Optional[int] = None, shuffle_buffer: int = 10000,
                            skip_batches: int = 0, text_ids: bool = False) -> tf.data.Dataset:
    """GPT language-model batches: int32 `input_ids` [batch, seq_length] (contiguous token
    windows; the model shifts them for next-token targets).

    batch_size: PER-REPLICA batch size (`input_context.get_per_replica_batch_size`).
    skip_batches: drop the first batches (read but not parsed), as for BERT.
    text_ids: also yield `doc_id` and `text_span` (module notes), as for BERT.
    """
    _check_sizes(batch_size, skip_batches)
    files = records_in(file_patterns)
    spec = {**gpt_feature_spec(seq_length), **(text_id_spec() if text_ids else {})}
    _check_first_record(files, spec)

    def finish(features: Features) -> Features:
        if text_ids:
            features["doc_id"] = tf.squeeze(features["doc_id"], -1)
        return features

    dataset = _serialized_records(files, is_training, input_context, seed, shuffle_buffer)
    dataset = _parsed_batches(dataset, batch_size, spec, skip_batches, finish)
    return dataset.prefetch(AUTOTUNE).with_options(_options(seed))


def distribute_dataset(strategy: tf.distribute.Strategy,
                       dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
                       options: Optional[tf.distribute.InputOptions] = None):
    """A distributed dataset: `dataset_fn` is called once per input pipeline (worker).

    dataset_fn(input_context) must pass `input_context` on (for file sharding) and batch
    with the PER-REPLICA size, `input_context.get_per_replica_batch_size(global_batch_size)`,
    e.g.

        distribute_dataset(strategy, lambda ctx: bert_pretraining_dataset(
            files, ctx.get_per_replica_batch_size(256), 128, 20, input_context=ctx, seed=1))

    Each replica then gets batches of the per-replica size, and one step consumes the
    global batch.
    """
    return strategy.distribute_datasets_from_function(dataset_fn, options)
