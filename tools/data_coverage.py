"""How much of the corpus a pretraining run reads: replays its input order without training.

  python -m tools.data_coverage --model=bert --input_files='records/bert128/*.tfrecord' \
      --global_batch_size=32 --train_steps=16000 --seed=1

Takes the pretraining binary's flags (`pretraining.run_pretraining`; --model_dir is not
needed) and builds the batches exactly as the trainer does, through the same function
(`pretraining.trainer.dataset_function`, one input pipeline): same files, seed, shuffle
buffer and batch, for `--steps` steps (0: --train_steps) of --global_batch_size records.
Which text each record holds comes from the records themselves: `create_data` writes a
`doc_id` (corpus index of the document the record's text starts in) and a `text_span`
([first, end) corpus indexes of its sentences for BERT, of its window for GPT) into every
record since issue 43; older records have none and are refused by name.

Prints, for the replayed order and for a uniform shuffle of the same records (simulated:
the same number of records drawn from a random permutation of all of them, one permutation
per epoch), the share of documents, records and sentences (windows) seen, the mean times a
seen sentence was read and the most times any was read. The last line is

  coverage: steps N records R docs_seen X.XX max_repeats K

Dynamic masking does not change which records are read and is left out of the replay.
Multi-worker runs read a different order per worker: this replays one pipeline.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, Iterable, List

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
from absl import flags

from tfmodels.cli import run_binary
from tfmodels.config_flags import dataclass_from_flags, define_flags_from_dataclass

FLAGS = flags.FLAGS


@dataclasses.dataclass
class CorpusIds:
    """The text ids of every record in the training files, in file order."""
    doc_ids: np.ndarray      # [records]
    spans: np.ndarray        # [records, 2]

    @property
    def units(self) -> np.ndarray:
        """bool [max unit + 1]: the sentences (windows) some record holds."""
        return unit_counts(self.spans, self.size) > 0

    @property
    def size(self) -> int:
        return int(self.spans[:, 1].max()) + 1 if len(self.spans) else 0


def unit_counts(spans: np.ndarray, size: int) -> np.ndarray:
    """How many of the records' [first, end) spans cover each unit 0..size-1."""
    changes = np.zeros(size + 1, np.int64)
    np.add.at(changes, spans[:, 0], 1)
    np.add.at(changes, spans[:, 1], -1)
    return np.cumsum(changes)[:size]


def corpus_text_ids(files: List[str], batch: int = 8192) -> CorpusIds:
    """Reads `doc_id` and `text_span` of every record of `files` (in order, one pass)."""
    import tensorflow as tf
    from pretraining.input_pipeline import _check_first_record, text_id_spec
    spec = text_id_spec()
    _check_first_record(files, spec)
    doc_ids, spans = [], []
    for parsed in tf.data.TFRecordDataset(files).batch(batch).map(
            lambda records: tf.io.parse_example(records, spec),
            num_parallel_calls=tf.data.AUTOTUNE):
        doc_ids.append(parsed["doc_id"].numpy()[:, 0])
        spans.append(parsed["text_span"].numpy())
    return CorpusIds(np.concatenate(doc_ids), np.concatenate(spans))


def coverage(doc_ids: np.ndarray, spans: np.ndarray, record_keys: np.ndarray,
             corpus: CorpusIds) -> Dict[str, float]:
    """What the records read (their doc ids, spans and a key per distinct record, in read
    order) cover of `corpus`."""
    units = corpus.units
    counts = unit_counts(spans, corpus.size)[units]
    seen = counts > 0
    return {"records": len(doc_ids),
            "records_seen": len(np.unique(record_keys)) / len(corpus.doc_ids),
            "docs_seen": len(np.unique(doc_ids)) / len(np.unique(corpus.doc_ids)),
            "units_seen": float(seen.mean()),
            "mean_repeats": float(counts[seen].mean()) if seen.any() else 0.0,
            "max_repeats": int(counts.max()) if len(counts) else 0,
            # Sentence (window) reads over sentences: how many passes over the text.
            "passes": float(counts.sum() / units.sum())}


def uniform_coverage(corpus: CorpusIds, records: int, seed: int = 0) -> Dict[str, float]:
    """`coverage` of `records` records read in a uniformly shuffled order: a random
    permutation of all the records per epoch."""
    rng = np.random.default_rng(seed)
    n = len(corpus.doc_ids)
    order = np.concatenate([rng.permutation(n) for _ in range(-(-records // n))])[:records]
    return coverage(corpus.doc_ids[order], corpus.spans[order], order, corpus)


def replayed_batches(config, steps: int) -> Iterable[Dict[str, np.ndarray]]:
    """The first `steps` global batches of a pretraining run's training input, with their
    text ids: `doc_id`, `text_span` and `key` (a hash of each record's ids and span, so a
    dupe under another mask is another record)."""
    import tensorflow as tf
    from pretraining import trainer
    replay = dataclasses.replace(config, dynamic_masking=False, mask_token_rate=0.8,
                                 random_token_rate=0.1)
    micro = config.global_batch_size // config.gradient_accumulation_steps
    dataset = trainer.dataset_function(replay, micro, training=True, text_ids=True)(
        tf.distribute.InputContext())
    micro_batches = steps * config.gradient_accumulation_steps
    for batch in dataset.take(micro_batches):
        ids = batch["input_ids"].numpy()
        span = batch["text_span"].numpy()
        rows = np.concatenate([ids, span], axis=1).astype(np.int32)
        yield {"doc_id": batch["doc_id"].numpy(), "text_span": span,
               "key": np.array([hash(row.tobytes()) for row in rows], np.int64)}


def measure(config, steps: int, log=print) -> Dict[str, Dict[str, float]]:
    """{"replayed": coverage of the run's first `steps` steps, "uniform": a uniform
    shuffle's of as many records, "corpus": sizes}."""
    from pretraining.input_pipeline import records_in
    files = records_in(list(config.input_files))
    log(f"reading the text ids of {len(files)} record files")
    corpus = corpus_text_ids(files)
    log(f"replaying {steps} steps of {config.global_batch_size} records")
    batches = list(replayed_batches(config, steps))
    if len(batches) < steps * config.gradient_accumulation_steps:
        raise ValueError(f"the input gave {len(batches)} batches, fewer than {steps} steps")
    replayed = coverage(np.concatenate([b["doc_id"] for b in batches]),
                        np.concatenate([b["text_span"] for b in batches]),
                        np.concatenate([b["key"] for b in batches]), corpus)
    return {"replayed": replayed,
            "uniform": uniform_coverage(corpus, replayed["records"], seed=config.seed),
            "corpus": {"files": len(files), "records": len(corpus.doc_ids),
                       "documents": len(np.unique(corpus.doc_ids)),
                       "units": int(corpus.units.sum())}}


ROWS = (("records read", "records", "{:,}"),
        ("share of the records seen", "records_seen", "{:.3f}"),
        ("share of the documents seen", "docs_seen", "{:.3f}"),
        ("share of the {unit}s seen", "units_seen", "{:.3f}"),
        ("passes over the text", "passes", "{:.2f}"),
        ("mean reads of a seen {unit}", "mean_repeats", "{:.2f}"),
        ("most reads of one {unit}", "max_repeats", "{:d}"))


def render(result: Dict[str, Dict[str, float]], steps: int, unit: str) -> str:
    corpus, replayed, uniform = result["corpus"], result["replayed"], result["uniform"]
    lines = [f"corpus: {corpus['files']} files, {corpus['records']:,} records, "
             f"{corpus['documents']:,} documents, {corpus['units']:,} {unit}s",
             f"{'':30s} {'this run':>12s} {'uniform':>12s}"]
    for label, key, form in ROWS:
        lines.append(f"{label.format(unit=unit):30s} {form.format(replayed[key]):>12s} "
                     f"{form.format(uniform[key]):>12s}")
    lines.append(f"docs_seen / uniform's: {replayed['docs_seen'] / uniform['docs_seen']:.3f}")
    lines.append(f"coverage: steps {steps} records {replayed['records']} docs_seen "
                 f"{replayed['docs_seen']:.2f} max_repeats {replayed['max_repeats']}")
    return "\n".join(lines)


def define_flags():
    from pretraining.trainer import PretrainConfig
    define_flags_from_dataclass(PretrainConfig)
    flags.DEFINE_integer("steps", 0, "Steps to replay (0: --train_steps).")


def main(argv):
    del argv
    from pretraining.trainer import PretrainConfig
    from tfmodels.architectures import input_format
    # The replay writes nothing: a model_dir is not needed.
    config = dataclass_from_flags(PretrainConfig, model_dir=FLAGS.model_dir or "(unused)")
    steps = FLAGS.steps or config.train_steps
    if steps < 1:
        raise ValueError(f"--steps must be positive, got {steps}")
    result = measure(config, steps, log=lambda m: print(m, flush=True))
    unit = "window" if input_format(config.model) == "gpt" else "sentence"
    print(render(result, steps, unit))


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
