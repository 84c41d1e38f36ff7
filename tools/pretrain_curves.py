"""Shows that pretraining learns on real text: held-out MLM / NSP accuracy of bert_mini and
held-out perplexity of a small GPT versus steps, as a markdown table and PNG plots.

  pip install matplotlib   # for the plots (the table is printed without it)
  python -m tools.pretrain_curves --bert_steps=600 --gpt_steps=600 --report_dir=docs/reports

Data (../shared/data/corpus): BERT gets WikiText-2 validation as google-research/bert
documents (articles, one sentence per line) with the uncased vocabulary; GPT gets Tiny
Shakespeare as plain text with the original GPT-1 BPE. The last shard of each is held out for
evaluation. Everything runs through the real binaries' library functions
(create_pretraining_data, run_pretraining), so this is also an end-to-end check of them.
Reruns reuse the records and resume finished runs (delete --work_dir to start over).
"""
import json
import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import flags

from pretraining.create_data import DataConfig, create_pretraining_data
from pretraining.trainer import PretrainConfig, run_pretraining
from tfmodels.cli import run_binary

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags, defined when it runs (tfmodels.cli.run_binary), not on import."""
    flags.DEFINE_string("shared_data", "../shared/data", "Folder of the real third-party data.")
    flags.DEFINE_string("work_dir", "runs/pretrain_curves", "Records and model folders.")
    flags.DEFINE_string("report_dir", "docs/reports", "Where the table and plots are written.")
    flags.DEFINE_integer("bert_steps", 600, "bert_mini training steps.")
    flags.DEFINE_integer("gpt_steps", 600, "Small GPT training steps.")
    flags.DEFINE_float("bert_learning_rate", 1e-3, "bert_mini peak learning rate.")
    flags.DEFINE_float("gpt_learning_rate", 2.5e-3, "Small GPT peak learning rate.")
    flags.DEFINE_integer("eval_every", 50, "Steps between held-out evaluations.")
    flags.DEFINE_integer("seed", 1, "Random seed.")


def make_records(mode: str, work: pathlib.Path, shared: pathlib.Path) -> tuple:
    """(train glob, eval glob): every shard but the last for training, the last held out."""
    out = work / f"records_{mode}"
    if mode == "bert":
        from pretraining.corpora import wikitext_documents, write_documents
        corpus = work / "wikitext2_valid_documents.txt"
        write_documents(str(corpus), wikitext_documents(
            str(shared / "corpus/wikitext2-valid.tokens.txt")), 1)
        config = DataConfig(vocab_file=str(shared / "bert_vocab/bert-base-uncased-vocab.txt"),
                            max_seq_length=128, max_predictions_per_seq=20, dupe_factor=5,
                            chunk_bytes=128 << 10)
    else:
        corpus = shared / "corpus/tinyshakespeare.txt"
        gpt = shared / "gpt1_openai"
        config = DataConfig(mode="gpt", input_format="plain", n_ctx=128,
                            bpe_encoder_file=str(gpt / "encoder_bpe_40000.json"),
                            bpe_merges_file=str(gpt / "vocab_40000.bpe"),
                            chunk_bytes=128 << 10)
    create_pretraining_data([str(corpus)], str(out), config, num_workers=2,
                            log=lambda m: None)
    shards = sorted(str(p) for p in out.glob("*.tfrecord"))
    return tuple(shards[:-1]), (shards[-1],)


def evaluations(model_dir: pathlib.Path):
    rows = {}
    for line in open(model_dir / "metrics.jsonl", encoding="utf-8"):
        row = json.loads(line)
        if any(k.startswith("eval_") for k in row):
            rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]


def plot(curves, path: pathlib.Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6))
    for axis, (title, ylabel, series) in zip(axes, curves):
        for label, (steps, values) in series.items():
            axis.plot(steps, values, marker="o", markersize=3, label=label)
        axis.set_title(title)
        axis.set_xlabel("training step")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def main(argv):
    del argv
    shared, work = pathlib.Path(FLAGS.shared_data), pathlib.Path(FLAGS.work_dir)
    report = pathlib.Path(FLAGS.report_dir)
    work.mkdir(parents=True, exist_ok=True)
    report.mkdir(parents=True, exist_ok=True)
    common = dict(eval_every=FLAGS.eval_every, eval_batches=20, checkpoint_every=200,
                  log_every=50, seed=FLAGS.seed, jit_compile=True)
    bert_train, bert_eval = make_records("bert", work, shared)
    run_pretraining(PretrainConfig(
        model="bert", model_config="bert_mini", input_files=bert_train,
        eval_input_files=bert_eval, seq_length=128, max_predictions_per_seq=20,
        global_batch_size=32, train_steps=FLAGS.bert_steps, warmup_steps=FLAGS.bert_steps // 10,
        learning_rate=FLAGS.bert_learning_rate, model_dir=str(work / "bert_mini"), **common))
    gpt_train, gpt_eval = make_records("gpt", work, shared)
    run_pretraining(PretrainConfig(
        model="gpt", model_config="gpt_small", input_files=gpt_train,
        eval_input_files=gpt_eval, seq_length=128, global_batch_size=16,
        train_steps=FLAGS.gpt_steps, warmup_steps=FLAGS.gpt_steps // 10,
        learning_rate=FLAGS.gpt_learning_rate,
        model_dir=str(work / "gpt_small"), **common))

    bert_rows, gpt_rows = evaluations(work / "bert_mini"), evaluations(work / "gpt_small")
    lines = ["# Pretraining curves on real text (held-out shard)", "",
             f"bert_mini on WikiText-2 valid (uncased WordPiece, length 128, batch 32, peak lr "
             f"{FLAGS.bert_learning_rate:g}, linear decay); small GPT (4 x 256) on Tiny "
             f"Shakespeare (GPT-1 BPE, length 128, batch 16, peak lr "
             f"{FLAGS.gpt_learning_rate:g}, cosine decay); 10% warmup; held-out metrics are "
             f"the mean over 20 batches of the last shard; one seed ({FLAGS.seed}). "
             f"Regenerate: `python -m tools.pretrain_curves --bert_steps={FLAGS.bert_steps} "
             f"--gpt_steps={FLAGS.gpt_steps}`.", "",
             "| step | BERT eval MLM loss | MLM accuracy | NSP accuracy | GPT eval LM loss | "
             "perplexity |", "|---|---|---|---|---|---|"]
    gpt_by_step = {row["step"]: row for row in gpt_rows}
    for row in bert_rows:
        g = gpt_by_step.get(row["step"], {})
        lines.append(
            f"| {row['step']} | {row['eval_mlm_loss']:.3f} | {row['eval_mlm_accuracy']:.3f} | "
            f"{row['eval_nsp_accuracy']:.3f} | {g.get('eval_lm_loss', float('nan')):.3f} | "
            f"{g.get('eval_perplexity', float('nan')):.1f} |")
    steps = lambda rows: [r["step"] for r in rows]
    plotted = plot([
        ("bert_mini, held-out MLM / NSP", "accuracy", {
            "MLM accuracy": (steps(bert_rows), [r["eval_mlm_accuracy"] for r in bert_rows]),
            "NSP accuracy": (steps(bert_rows), [r["eval_nsp_accuracy"] for r in bert_rows])}),
        ("small GPT, held-out perplexity", "perplexity", {
            "perplexity": (steps(gpt_rows), [r["eval_perplexity"] for r in gpt_rows])}),
    ], report / "pretrain_curves.png")
    if plotted:
        lines += ["", "![curves](pretrain_curves.png)"]
    (report / "pretrain_curves.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
