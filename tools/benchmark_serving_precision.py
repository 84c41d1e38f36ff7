r"""A fine-tuned classifier exported in float32 and with `--serving_precision=bfloat16`, side by
side on real sentences: latency (interleaved, one process) and how far bf16's outputs are from
float32's (issue 44).

  python -m tools.benchmark_serving_precision --model=runs/sst2/model.keras \
      --texts=../shared/data/glue/SST-2/test.tsv --iterations=30 \
      --vocab_file=../shared/data/bert_vocab/bert-base-uncased-vocab.txt

Exports `--model` twice with finetune.export (float32, then bfloat16 compute with float32
outputs) into a temp folder, loads both back and
  - runs serving_default (raw text in) on every sentence of `--texts` (the `sentence` column of
    a GLUE TSV) in batches of 32: max |difference| of the class probabilities, and the share of
    sentences whose predicted label agrees;
  - times serving_default at batch 1 (a real short sentence) and batch 32 (32 real sentences),
    the two exports round-robin, p50 and the bf16 / float32 ratio.
It prints the CPU and what --mixed_precision=auto would choose here.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import csv
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import flags

from finetune import export
from tfmodels.cli import run_binary
from tfmodels.precision import cpu_description, resolve_precision

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags, defined when it runs (tfmodels.cli.run_binary), not on import."""
    flags.DEFINE_string("model", None,
                        "A fine-tuned classification model.keras (with results.json).")
    flags.DEFINE_string("texts", "../shared/data/glue/SST-2/test.tsv",
                        "A GLUE TSV with a `sentence` column: the real sentences compared.")
    flags.DEFINE_string("vocab_file", "", "WordPiece vocab ('' = the fine-tuning run's).")
    flags.DEFINE_integer("max_texts", 0, "Compare on the first N sentences (0 = all).")
    flags.DEFINE_integer("iterations", 30, "Timed calls per batch size and export.")
    flags.mark_flag_as_required("model")


def read_sentences(path: str):
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    sentences = [row["sentence"] for row in rows]
    return sentences[:FLAGS.max_texts] if FLAGS.max_texts else sentences


def main(argv):
    del argv
    print(f"CPU: {cpu_description()}")
    print(f"--mixed_precision=auto here: {resolve_precision('auto', False).describe()}")
    sentences = read_sentences(FLAGS.texts)
    with tempfile.TemporaryDirectory() as base:
        signatures = {}
        for precision in ("float32", "bfloat16"):
            path = export.export_from_source(export.Source(FLAGS.model, vocab_file=FLAGS.vocab_file), base,
                                             f"model_{precision}", precision=precision)
            signatures[precision] = tf.saved_model.load(path).signatures["serving_default"]
        probabilities = {p: [] for p in signatures}
        for start in range(0, len(sentences), 32):
            text = tf.constant(sentences[start:start + 32])
            for precision, fn in signatures.items():
                probabilities[precision].append(fn(text=text)["probabilities"].numpy())
        f32, bf16 = (np.concatenate(probabilities[p]) for p in ("float32", "bfloat16"))
        difference = np.abs(f32 - bf16)
        agree = float((f32.argmax(-1) == bf16.argmax(-1)).mean())
        print(f"\n{len(sentences)} real sentences ({FLAGS.texts}): max |p_bf16 - p_float32| "
              f"{difference.max():.4f}, mean {difference.mean():.5f}; labels agree on "
              f"{agree:.2%} ({int(round((1 - agree) * len(sentences)))} differ)")
        short = min(sentences[:200], key=len)
        requests = {1: tf.constant([short]), 32: tf.constant(sentences[:32])}
        print("\n| batch | float32 p50 ms | bfloat16 p50 ms | bf16 / float32 |")
        print("|---|---|---|---|")
        for batch, text in requests.items():
            times = {p: [] for p in signatures}
            for fn in signatures.values():  # warm up both (width-specific kernels)
                for _ in range(3):
                    fn(text=text)["probabilities"].numpy()
            for _ in range(FLAGS.iterations):
                for precision, fn in signatures.items():
                    began = time.perf_counter()
                    fn(text=text)["probabilities"].numpy()
                    times[precision].append(time.perf_counter() - began)
            p50 = {p: 1000 * float(np.median(t)) for p, t in times.items()}
            print(f"| {batch} | {p50['float32']:.1f} | {p50['bfloat16']:.1f} | "
                  f"{p50['bfloat16'] / p50['float32']:.2f} |")


if __name__ == "__main__":
    run_binary(main, define_flags)
