"""BERT input-pipeline throughput against what a bert_base training step consumes.

  python -m tools.benchmark_input_pipeline                 # pipelines + bert_base step
  python -m tools.benchmark_input_pipeline --skip_model    # pipelines only (seconds)

Makes BERT records (max_seq_length 128, 20 predictions, the uncased vocabulary) from the
WikiText-2 text in ../shared/data/corpus, as tools/benchmark_data_creation.py does, in a
temporary folder; then measures the examples/second `bert_pretraining_dataset` delivers with
the records' static masks, with dynamic masking and with whole-word dynamic masking (after a
warm-up that fills the shuffle buffer), and the examples/second one bert_base training step
consumes at the same batch and length (tools/benchmark_training.make_steppers: forward,
backward, AdamW, XLA). The ratio pipeline / step should be at least 10x, so input never
limits training, also when both share the CPU.
"""
import os
import tempfile
import time
from typing import Optional

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf
from absl import flags

from pretraining.create_data import DataConfig, create_pretraining_data
from pretraining.input_pipeline import DynamicMasking, bert_pretraining_dataset
from pretraining.corpora import wikitext_documents, write_documents
from tfmodels.cli import run_binary
# Its flags are reused here (absl flags are global): --batch_size, --seq_length,
# --predictions, --bert_config, --steps and --jit_compile.
from tools import benchmark_training
from tools.benchmark_training import make_batch, make_steppers

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags, defined when it runs (tfmodels.cli.run_binary), not on import."""
    benchmark_training.define_flags()
    flags.DEFINE_string("shared_data", "../shared/data", "Folder of the real third-party data.")
    flags.DEFINE_integer("repeats", 1, "Copies of WikiText-2 valid to turn into records.")
    flags.DEFINE_integer("num_workers", 2, "Data-creation worker processes.")
    flags.DEFINE_integer("dupe_factor", 2, "Masked copies of the text (~2.6k instances each).")
    flags.DEFINE_integer("examples", 4000, "Examples timed per pipeline, after warm-up.")
    flags.DEFINE_integer("warmup_examples", 1000, "Examples read before timing.")
    flags.DEFINE_integer("shuffle_buffer", 10000, "Record shuffle buffer.")
    flags.DEFINE_bool("skip_model", False, "Only measure the pipelines.")
    flags.DEFINE_bool("jit_compile", True, "Time the training step with XLA.")
    FLAGS.set_default("steps", 3)    # bert_base steps take seconds each on CPU


def make_records(workdir: str) -> str:
    corpus = os.path.join(workdir, "wiki.txt")
    write_documents(corpus, wikitext_documents(
        os.path.join(FLAGS.shared_data, "corpus/wikitext2-valid.tokens.txt")), FLAGS.repeats)
    config = DataConfig(vocab_file=vocab_file(), max_seq_length=FLAGS.seq_length,
                        max_predictions_per_seq=FLAGS.predictions,
                        dupe_factor=FLAGS.dupe_factor, chunk_bytes=128 << 10)
    out = os.path.join(workdir, "records")
    totals = create_pretraining_data([corpus], out, config, num_workers=FLAGS.num_workers,
                                     log=lambda m: None)
    print(f"{totals['instances']:,} instances in {totals['shards']} shards")
    return os.path.join(out, "*.tfrecord")


def vocab_file() -> str:
    return os.path.join(FLAGS.shared_data, "bert_vocab/bert-base-uncased-vocab.txt")


def pipeline_rate(records: str, masking: Optional[DynamicMasking]) -> float:
    """Examples/second delivered by a training dataset, after warm-up."""
    dataset = bert_pretraining_dataset(
        [records], FLAGS.batch_size, FLAGS.seq_length, FLAGS.predictions, seed=0,
        shuffle_buffer=FLAGS.shuffle_buffer, dynamic_masking=masking)
    iterator = iter(dataset)
    for _ in range(max(1, FLAGS.warmup_examples // FLAGS.batch_size)):
        next(iterator)
    batches = max(1, FLAGS.examples // FLAGS.batch_size)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)  # eager tensors: the batch is fully materialised on return
    return batches * FLAGS.batch_size / (time.perf_counter() - start)


def step_rate() -> float:
    """Examples/second one training step of the named BERT consumes."""
    from tfmodels import configs
    from tfmodels.bert import BertPretrainer
    from tfmodels.losses import bert_pretraining_loss
    cfg = configs.get_config(FLAGS.bert_config)
    batch = make_batch(cfg.vocab_size, FLAGS.batch_size, FLAGS.seq_length, FLAGS.predictions)
    run = make_steppers(BertPretrainer(cfg), bert_pretraining_loss, batch,
                        [FLAGS.jit_compile])[FLAGS.jit_compile]
    seconds = run(FLAGS.steps)
    return FLAGS.batch_size / seconds


def main(argv):
    del argv
    tf.get_logger().setLevel("ERROR")
    variants = [("static masks (from the records)", None),
                ("dynamic masking", DynamicMasking.from_vocab_file(vocab_file())),
                ("dynamic whole-word masking",
                 DynamicMasking.from_vocab_file(vocab_file(), whole_word=True))]
    with tempfile.TemporaryDirectory() as workdir:
        records = make_records(workdir)
        rates = [(name, pipeline_rate(records, masking)) for name, masking in variants]
    consumed = None if FLAGS.skip_model else step_rate()
    print(f"\nbatch {FLAGS.batch_size} x {FLAGS.seq_length} tokens, {FLAGS.predictions} "
          f"predictions, {os.cpu_count()} CPU cores; training step: {FLAGS.bert_config}, "
          f"jit_compile={FLAGS.jit_compile}, {FLAGS.steps} timed steps\n")
    print(f"| input | examples/s | vs {FLAGS.bert_config} step |")
    print("|---|---|---|")
    for name, rate in rates:
        ratio = f"{rate / consumed:,.0f}x" if consumed else "(--skip_model)"
        print(f"| pipeline: {name} | {rate:,.0f} | {ratio} |")
    if consumed:
        print(f"| {FLAGS.bert_config} training step consumes | {consumed:,.1f} | 1x |")


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
