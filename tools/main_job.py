"""The README's main job: the whole story end to end on the demo data the project ships.

  bert-gpt-main-job --output_dir=runs/main_job

1. Learns a WordPiece vocabulary from `tools/demo_data/` (corpus and review sentences).
2. Writes BERT pretraining TFRecords from `corpus.txt` (sentence pairs, NSP, static masks).
3. Pretrains a bert_tiny-sized BERT (MLM + NSP) on them with the pretraining loop.
4. Fine-tunes it on `sentiment.tsv` (SST-2 layout) with the fine-tuning loop, evaluating on
   the held-back last 10% of the file.
5. Exports the classifier as a TF Serving SavedModel (raw text in, labels out).
6. Loads the export in a FRESH Python process (`tools.predict`) and prints its predictions
   for a few raw sentences.
7. GPT-1 leg: learns BPE merges, writes contiguous-window records, pretrains a small causal
   LM, exports it and generates a continuation from the export in a fresh process.
Every stage uses the same library functions as the project's binaries. It fails if a loss does
not fall or the exported classifier disagrees with the in-process one.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Dict, List

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
from absl import flags

from tfmodels.cli import run_binary

DEMO = pathlib.Path(__file__).resolve().parent / "demo_data"

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/main_job", "Where every stage writes.")
flags.DEFINE_integer("pretrain_steps", 300, "BERT pretraining steps.")
flags.DEFINE_integer("gpt_steps", 150, "GPT pretraining steps.")
flags.DEFINE_float("finetune_epochs", 10.0, "Fine-tuning epochs on the demo reviews.")
flags.DEFINE_integer("seed", 0, "Random seed.")

# New subjects with verdicts in the style of the demo reviews: the tiny model has seen
# 200 reviews, so it generalises over subjects, not over English.
SENTENCES = ["The harbour cafe was worth every penny.",
             "The night bus was a waste of time.",
             "The lighthouse tour left everyone smiling.",
             "The new library felt stale and tired."]
LABELS = {"0": "negative", "1": "positive"}


def read_lines(path: pathlib.Path) -> List[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def loss_fell(history: List[Dict[str, float]], key: str, name: str) -> str:
    first = float(np.mean([h[key] for h in history[:10]]))
    last = float(np.mean([h[key] for h in history[-10:]]))
    if not last < first:
        raise SystemExit(f"{name}: {key} did not fall ({first:.3f} -> {last:.3f})")
    return f"{key} {first:.3f} -> {last:.3f}"


def fresh_process(args: List[str], stdin: str) -> str:
    """Runs a project tool in a new interpreter (nothing shared with this process)."""
    result = subprocess.run([sys.executable, "-m", *args], input=stdin, capture_output=True,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode:
        raise SystemExit(f"{' '.join(args[:1])} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def in_process_probabilities(model_path: pathlib.Path, vocab_file: pathlib.Path) -> np.ndarray:
    """Class probabilities of SENTENCES from the fine-tuned Keras model and eager encoders."""
    import keras
    from finetune.examples import TextExample
    from finetune.features import encode_examples
    from finetune.tasks import get_task
    from tfmodels.tokenizers.wordpiece import WordPieceTokenizer
    model = keras.saving.load_model(str(model_path))
    encoded = encode_examples([TextExample(str(i), s) for i, s in enumerate(SENTENCES)],
                              "classification", "bert", WordPieceTokenizer(str(vocab_file)),
                              32, label_names=get_task("sst2").label_names)
    logits = model({k: np.asarray(v) for k, v in encoded.inputs().items()},
                   training=False)["logits"]
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))


def bert_story(out: pathlib.Path, seed: int) -> Dict[str, float]:
    from finetune.export import Source, export_from_source
    from finetune.trainer import FinetuneConfig, run_finetune
    from pretraining.create_data import DataConfig, create_pretraining_data
    from pretraining.trainer import PretrainConfig, run_pretraining
    from tfmodels.tokenizers.wordpiece_vocab import learn_wordpiece_vocab, write_vocab_file

    print("== 1. WordPiece vocabulary", flush=True)
    reviews = [line.split("\t")[0] for line in read_lines(DEMO / "sentiment.tsv")[1:]]
    vocab_file = out / "vocab.txt"
    vocab = learn_wordpiece_vocab(read_lines(DEMO / "corpus.txt") + reviews, vocab_size=800)
    write_vocab_file(vocab, str(vocab_file))
    print(f"  {len(vocab)} tokens -> {vocab_file}")

    print("== 2. BERT pretraining records", flush=True)
    records = out / "bert_records"
    create_pretraining_data([str(DEMO / "corpus.txt")], str(records), DataConfig(
        vocab_file=str(vocab_file), max_seq_length=64, max_predictions_per_seq=10,
        dupe_factor=20, short_seq_prob=0.2, random_seed=seed), log=lambda m: None)
    manifest = json.loads((records / "manifest.json").read_text())["totals"]
    print(f"  {manifest['instances']} instances, {manifest['tokens']} tokens")

    print("== 3. BERT pretraining (MLM + NSP)", flush=True)
    history = run_pretraining(PretrainConfig(
        model="bert", model_config="bert_tiny", vocab_size=len(vocab),
        input_files=(str(records / "*.tfrecord"),), seq_length=64, max_predictions_per_seq=10,
        global_batch_size=32, train_steps=FLAGS.pretrain_steps,
        warmup_steps=FLAGS.pretrain_steps // 10, learning_rate=2e-3,
        model_dir=str(out / "bert_pretrain"), checkpoint_every=100, log_every=100,
        jit_compile=True, seed=seed, shuffle_buffer=1000), log=lambda m: print("  " + m))
    pretrain_summary = loss_fell(history, "mlm_loss", "BERT pretraining")

    print("== 4. Fine-tuning on the demo reviews (held-out last 10%)", flush=True)
    results = run_finetune(FinetuneConfig(
        task="sst2", model="bert", init_checkpoint=str(out / "bert_pretrain"),
        vocab_file=str(vocab_file), data_dir=str(DEMO / "sentiment.tsv"),
        output_dir=str(out / "finetune"), overwrite_output_dir=True,  # a rerun redoes it
        seq_length=32, train_batch_size=16,
        epochs=FLAGS.finetune_epochs, learning_rates=(1e-3,), seeds=(seed,),
        log_every=1000), log=lambda m: print("  " + m))
    accuracy = float(results["runs"][0]["metrics"]["accuracy"])

    print("== 5. Export for TF Serving", flush=True)
    export_dir = export_from_source(Source(model_path=str(out / "finetune" / "model.keras")),
                                    str(out / "export"), "demo_sentiment")
    print(f"  {export_dir}")

    print("== 6. Predictions from the export, in a fresh process", flush=True)
    lines = fresh_process(["tools.predict", f"--saved_model={export_dir}"],
                          "\n".join(SENTENCES) + "\n").strip().splitlines()
    if len(lines) != len(SENTENCES):
        raise SystemExit(f"expected {len(SENTENCES)} predictions, got {len(lines)}")
    served = np.array([json.loads(line)["probabilities"] for line in lines])
    for sentence, line, p in zip(SENTENCES, lines, served):
        label = json.loads(line)["labels"]
        print(f"  {LABELS.get(label, label):>8}  p={p.max():.2f}  {sentence}")
    # The export tokenises in-graph; the training process used the eager encoders.
    difference = float(np.abs(served - in_process_probabilities(
        out / "finetune" / "model.keras", vocab_file)).max())
    print(f"  max |export - in-process Keras| probability difference: {difference:.1e}")
    if difference > 1e-4:
        raise SystemExit("the exported classifier disagrees with the in-process model")
    return {"pretraining": pretrain_summary, "held-out accuracy": f"{accuracy:.3f}"}


def gpt_story(out: pathlib.Path, seed: int) -> Dict[str, float]:
    from finetune.export import export_saved_model
    from pretraining.create_data import DataConfig, create_pretraining_data
    from pretraining.trainer import PretrainConfig, run_pretraining
    from tfmodels.tokenizers.bpe_vocab import learn_bpe_merges, write_bpe_files
    from tfmodels.tokenizers.gpt_bpe import GptBpeTokenizer
    import keras

    print("== 7. GPT: BPE merges, contiguous windows, causal-LM pretraining, export", flush=True)
    merges, encoder = learn_bpe_merges(read_lines(DEMO / "corpus.txt"), num_merges=500)
    bpe = out / "bpe"
    write_bpe_files(merges, encoder, str(bpe / "encoder_bpe.json"), str(bpe / "vocab.bpe"))
    tokenizer = GptBpeTokenizer(str(bpe / "encoder_bpe.json"), str(bpe / "vocab.bpe"))
    records = out / "gpt_records"
    create_pretraining_data([str(DEMO / "corpus.txt")], str(records), DataConfig(
        mode="gpt", n_ctx=32, bpe_encoder_file=str(bpe / "encoder_bpe.json"),
        bpe_merges_file=str(bpe / "vocab.bpe")), log=lambda m: None)
    history = run_pretraining(PretrainConfig(
        model="gpt", model_config="gpt_test", vocab_size=tokenizer.vocab_size,
        input_files=(str(records / "*.tfrecord"),), seq_length=32, global_batch_size=16,
        train_steps=FLAGS.gpt_steps, warmup_steps=FLAGS.gpt_steps // 10, learning_rate=3e-3,
        model_dir=str(out / "gpt_pretrain"), checkpoint_every=1000, log_every=50,
        jit_compile=True, seed=seed, shuffle_buffer=200), log=lambda m: print("  " + m))
    summary = loss_fell(history, "lm_loss", "GPT pretraining")
    model = keras.saving.load_model(str(out / "gpt_pretrain" / "pretrained.keras"))
    export_dir = export_saved_model(model, None, tokenizer, str(out / "export"), "demo_gpt_lm",
                                    seq_length=32)
    prompt = "The lighthouse keeper"
    generated = json.loads(fresh_process(
        ["tools.predict", f"--saved_model={export_dir}", "--signature=generate",
         "--max_new_tokens=8"], prompt + "\n").strip().splitlines()[0])
    print(f"  {prompt!r} -> {generated}")
    return {"GPT pretraining": summary}


def main(argv):
    del argv
    out = pathlib.Path(FLAGS.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {**bert_story(out, FLAGS.seed), **gpt_story(out, FLAGS.seed)}
    print("== summary")
    for name, value in summary.items():
        print(f"  {name}: {value}")


def run():
    run_binary(main)


if __name__ == "__main__":
    run()
