"""The README's main job: the project end to end on the demo corpus it ships.

  bert-gpt-main-job --output_dir=runs/main_job --steps=30

1. Learns a WordPiece vocabulary and BPE merges from `tools/demo_data/corpus.txt`.
2. Tokenises a sample with both tokenizers (the same code that runs in graphs and exports).
3. Builds sentence-pair examples with next-sentence labels, packs them into
   `[CLS] A [SEP] B [SEP]`, applies dynamic MLM masking in tf.data, and trains a small BERT
   (MLM + NSP) for `--steps` steps.
4. Packs the BPE stream into contiguous windows and trains a small GPT (causal LM).
Losses are printed as training goes; both must fall.
"""
from __future__ import annotations

import os
import pathlib
import random
from typing import Dict, List

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import tensorflow as tf
from absl import app, flags

from pretraining.masking import mask_packed_inputs
from tfmodels import configs
from tfmodels.bert import BertPretrainer
from tfmodels.gpt import GptLanguageModel
from tfmodels.losses import bert_pretraining_loss, gpt_pretraining_loss
from tfmodels.optimization import create_optimizer
from tfmodels.tokenizers.bpe_vocab import learn_bpe_merges, write_bpe_files
from tfmodels.tokenizers.gpt_bpe import GptBpeTokenizer
from tfmodels.tokenizers.wordpiece import WordPieceTokenizer
from tfmodels.tokenizers.wordpiece_vocab import learn_wordpiece_vocab, write_vocab_file
from tfmodels.training import TrainStep

DEMO_CORPUS = pathlib.Path(__file__).resolve().parent / "demo_data" / "corpus.txt"

FLAGS = flags.FLAGS
flags.DEFINE_string("corpus", str(DEMO_CORPUS), "One sentence per line, blank line between "
                    "documents.")
flags.DEFINE_string("output_dir", "runs/main_job", "Where vocabularies are written.")
flags.DEFINE_integer("steps", 100, "Training steps per model.")
flags.DEFINE_integer("seed", 0, "Random seed.")


def read_documents(path: str) -> List[List[str]]:
    """Documents as lists of sentences (google-research/bert's pretraining text format)."""
    documents, current = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                current.append(line)
            elif current:
                documents.append(current)
                current = []
    if current:
        documents.append(current)
    if not documents:
        raise ValueError(f"{path} holds no text")
    return documents


def sentence_pairs(documents: List[List[str]], rng: random.Random):
    """(A, B, label) for consecutive sentences: label 0 IsNext, or 1 with B from another
    document (NotNext), half of the time each, as in BERT's NSP task."""
    firsts, seconds, labels = [], [], []
    for d, sentences in enumerate(documents):
        for i in range(len(sentences) - 1):
            if rng.random() < 0.5:
                other = rng.choice([j for j in range(len(documents)) if j != d])
                firsts.append(sentences[i])
                seconds.append(rng.choice(documents[other]))
                labels.append(1)
            else:
                firsts.append(sentences[i])
                seconds.append(sentences[i + 1])
                labels.append(0)
    return firsts, seconds, labels


def train(model, loss_fn, dataset: tf.data.Dataset, steps: int, learning_rate: float,
          log_keys: List[str]) -> List[Dict[str, float]]:
    optimizer = create_optimizer(learning_rate, total_steps=steps, warmup_steps=steps // 10)
    step_fn = TrainStep(model, optimizer, loss_fn, jit_compile=True, clip_norm=1.0)
    history = []
    for step, batch in enumerate(dataset.take(steps), 1):
        metrics = {k: float(v) for k, v in step_fn(batch).items()}
        history.append(metrics)
        if step == 1 or step % 10 == 0 or step == steps:
            print(f"  step {step:4d}  " + "  ".join(f"{k} {metrics[k]:.3f}" for k in log_keys),
                  flush=True)
    return history


def run_bert(documents, output_dir: pathlib.Path, steps: int, seed: int):
    print("== BERT: WordPiece vocabulary, MLM + NSP pretraining")
    lines = [s for doc in documents for s in doc]
    vocab_file = output_dir / "vocab.txt"
    write_vocab_file(learn_wordpiece_vocab(lines, vocab_size=600), str(vocab_file))
    tokenizer = WordPieceTokenizer(str(vocab_file))
    sample = lines[0]
    pieces = [tokenizer.id_to_token(i) for i in tokenizer.tokenize([sample])[0].numpy()]
    print(f"  vocabulary: {tokenizer.vocab_size} tokens -> {vocab_file}")
    print(f"  {sample!r}\n  -> {pieces}")

    firsts, seconds, labels = sentence_pairs(documents, random.Random(seed))
    packed = tokenizer.encode(firsts, seconds, seq_length=64)
    features = {**packed, "next_sentence_labels": tf.constant(labels, tf.int32)}
    dataset = (tf.data.Dataset.from_tensor_slices(features).repeat()
               .shuffle(256, seed=seed).batch(16, drop_remainder=True)
               .map(lambda b: mask_packed_inputs(
                   b, tokenizer.vocab_size, tokenizer.mask_id,
                   [tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id], max_predictions=10,
                   continuation_mask=tokenizer.continuation_mask)))
    model = BertPretrainer(configs.get_config(
        "bert_tiny", vocab_size=tokenizer.vocab_size, max_positions=64))
    print(f"  bert_tiny-sized model: {model.count_params():,} parameters, "
          f"{len(firsts)} sentence pairs")
    return train(model, bert_pretraining_loss, dataset, steps, 1e-3,
                 ["loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"])


def run_gpt(documents, output_dir: pathlib.Path, steps: int, seed: int):
    print("== GPT: BPE merges, causal language-model pretraining")
    lines = [s for doc in documents for s in doc]
    merges, encoder = learn_bpe_merges(lines, num_merges=500)
    bpe_dir = output_dir / "bpe"
    write_bpe_files(merges, encoder, str(bpe_dir / "encoder_bpe.json"),
                    str(bpe_dir / "vocab.bpe"))
    tokenizer = GptBpeTokenizer(str(bpe_dir / "encoder_bpe.json"), str(bpe_dir / "vocab.bpe"))
    ids = tokenizer.encode([lines[0]])[0]
    print(f"  vocabulary: {tokenizer.vocab_size} tokens ({len(merges)} merges + added tokens)")
    print(f"  {lines[0]!r}\n  -> {[tokenizer.decoder[i] for i in ids]}")
    # Documents joined into one stream with the delimiter token between them, cut into
    # contiguous windows (GPT-1's pretraining input).
    stream: List[int] = []
    for doc in documents:
        for sentence_ids in tokenizer.encode(doc):
            stream.extend(sentence_ids)
        stream.append(tokenizer.delimiter_id)
    window = 32
    windows = np.array([stream[i:i + window] for i in range(0, len(stream) - window, window // 2)],
                       dtype=np.int32)
    dataset = (tf.data.Dataset.from_tensor_slices({"input_ids": windows}).repeat()
               .shuffle(256, seed=seed).batch(16, drop_remainder=True))
    model = GptLanguageModel(configs.get_config(
        "gpt_test", vocab_size=tokenizer.vocab_size, max_positions=window, hidden_size=64,
        num_heads=4, intermediate_size=256))
    print(f"  small GPT: {model.count_params():,} parameters, {len(windows)} windows of {window}")
    return train(model, gpt_pretraining_loss, dataset, steps, 2e-3,
                 ["loss", "perplexity", "lm_accuracy"])


def main(argv):
    del argv
    tf.keras.utils.set_random_seed(FLAGS.seed)
    output_dir = pathlib.Path(FLAGS.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    documents = read_documents(FLAGS.corpus)
    print(f"corpus: {FLAGS.corpus}: {len(documents)} documents, "
          f"{sum(map(len, documents))} sentences")
    results = {"bert": run_bert(documents, output_dir, FLAGS.steps, FLAGS.seed),
               "gpt": run_gpt(documents, output_dir, FLAGS.steps, FLAGS.seed)}
    print("== summary (mean of the first / last 5 steps)")
    for name, history in results.items():
        first = np.mean([h["loss"] for h in history[:5]])
        last = np.mean([h["loss"] for h in history[-5:]])
        print(f"  {name}: loss {first:.3f} -> {last:.3f}")
        if not last < first:
            raise SystemExit(f"{name} loss did not fall ({first:.3f} -> {last:.3f})")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
