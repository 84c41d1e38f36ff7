"""Serving latency of an exported BERT classifier: raw text vs ids vs the Keras model.

  python -m tools.benchmark_serving --model_config=bert_base --seq_length=128 \
      --batch_sizes=1,32 --iterations=50,20

Exports a randomly initialised SST-2 classifier (finetune.export, the real uncased WordPiece
vocabulary), loads the SavedModel back with `tf.saved_model.load` and times, per batch size,
  serving_default   raw strings in: in-graph tokenisation + packing + model + decoding
  serving_ids       the encoded ids in: model + decoding (the stock-TF-Serving signature)
  keras             the same model object called as `model(inputs)` inside a tf.function
on texts long enough to fill seq_length. The three are timed round-robin (one call each per
iteration) so machine noise hits them alike; the table gives p50 / p99 latency, examples per
second and p50 relative to Keras (the ratio is what compares across machines; with 20
iterations p99 is the slowest call).
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tempfile
import time
from typing import Callable, Dict, List

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from finetune import export
from finetune.examples import TextExample
from finetune.features import encode_examples
from finetune.models import build_task_model
from finetune.tasks import get_task
from tfmodels import configs
from tfmodels.bert import BertEncoder
from tfmodels.cli import run_binary
from tfmodels.tokenizers.wordpiece import WordPieceTokenizer

FLAGS = flags.FLAGS
flags.DEFINE_string("model_config", "bert_base", "Named BERT config (random weights).")
flags.DEFINE_integer("seq_length", 128, "Tokens per sequence.")
flags.DEFINE_list("batch_sizes", ["1", "32"], "Batch sizes to time.")
flags.DEFINE_list("iterations", ["50", "20"], "Timed calls per batch size (after 3 warm-up).")
flags.DEFINE_string("vocab_file", "../shared/data/bert_vocab/bert-base-uncased-vocab.txt",
                    "WordPiece vocabulary.")
flags.DEFINE_integer("words_per_text", 200, "Words per synthetic review (> seq_length pieces).")


def synthetic_texts(tokenizer: WordPieceTokenizer, count: int, words: int, seed: int = 0
                    ) -> List[str]:
    """Sentences of random whole-word vocabulary entries (so every text fills the window)."""
    vocab = [t for t in tokenizer.vocab if t.isalpha() and t.isascii() and len(t) > 2]
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(vocab, words)) + "." for _ in range(count)]


def percentile_ms(times: List[float], q: float) -> float:
    return float(np.percentile(np.array(times) * 1e3, q))


def time_round_robin(calls: Dict[str, Callable[[], object]], iterations: int,
                     warmup: int = 3) -> Dict[str, List[float]]:
    """Seconds per call of each callable, interleaved."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in calls}
    for _ in range(iterations):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def main(argv):
    del argv
    seq = FLAGS.seq_length
    tokenizer = WordPieceTokenizer(FLAGS.vocab_file)
    task = get_task("sst2")
    keras.utils.set_random_seed(0)
    cfg = configs.get_config(FLAGS.model_config, vocab_size=tokenizer.vocab_size)
    model = build_task_model(task, BertEncoder(cfg))
    with tempfile.TemporaryDirectory() as base:
        path = export.export_saved_model(model, task, tokenizer, base, "sst2", seq)
        loaded = tf.saved_model.load(path)
        text_fn, ids_fn = loaded.signatures["serving_default"], loaded.signatures["serving_ids"]
        keras_fn = tf.function(lambda inputs: model(inputs, training=False)["logits"])

        rows = []
        for batch, iterations in zip(map(int, FLAGS.batch_sizes), map(int, FLAGS.iterations)):
            texts = synthetic_texts(tokenizer, batch, FLAGS.words_per_text, seed=batch)
            ids = {k: tf.constant(v) for k, v in encode_examples(
                [TextExample(str(i), t) for i, t in enumerate(texts)], "classification", "bert",
                tokenizer, seq, label_names=task.label_names).inputs().items()}
            text = tf.constant(texts)
            calls = {
                "serving_default (raw text)": lambda: text_fn(text=text)["probabilities"].numpy(),
                "serving_ids": lambda: ids_fn(**ids)["probabilities"].numpy(),
                "keras model(inputs) in tf.function": lambda: keras_fn(ids).numpy(),
            }
            # Same predictions first: the three paths are the same model.
            reference = calls["keras model(inputs) in tf.function"]()
            np.testing.assert_allclose(tf.nn.softmax(reference).numpy(),
                                       calls["serving_default (raw text)"](), atol=1e-4)
            times = time_round_robin(calls, iterations)
            keras_p50 = percentile_ms(times["keras model(inputs) in tf.function"], 50)
            for name, t in times.items():
                p50 = percentile_ms(t, 50)
                rows.append((name, batch, iterations, p50, percentile_ms(t, 99),
                             batch / (p50 / 1e3), p50 / keras_p50))

    print(f"\nServing latency, {FLAGS.model_config} SST-2 classifier, seq_length {seq}, "
          f"CPU ({os.cpu_count()} cores), random weights\n")
    print("| path | batch | iterations | p50 ms | p99 ms | examples/s | p50 / keras |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, batch, iterations, p50, p99, rate, ratio in rows:
        print(f"| {name} | {batch} | {iterations} | {p50:.1f} | {p99:.1f} | {rate:.1f} | "
              f"{ratio:.2f} |")


def run():
    run_binary(main)


if __name__ == "__main__":
    run()
