r"""What fine-tuning's divergence checks cost (issue 40): the training step with and without
them, interleaved in one process, for the real MiniLM (SST-2 rows, length buckets) and a
random bert_base (length 128).

  python -m tools.benchmark_divergence_checks [--models=minilm,bert_base] [--steps=20]

"With" is what finetune.driver runs: TrainStep(report_grad_norm=True) (the global norm comes
from the clipping that runs anyway) and DivergenceWatch.update on every step (a few tensor ops,
no host sync). "Without" is TrainStep(report_grad_norm=False) and no watch. Rounds alternate
the arms (A B A B ...) so the machine's load hits both alike; the table gives each arm's median
s/step, their ratio, and the watch's own cost per call measured alone. Bar: <= 2% slower.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Dict, List

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import flags

from tfmodels.cli import run_binary

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_list("models", ["minilm", "bert_base"], "minilm and / or bert_base.")
    flags.DEFINE_integer("steps", 20, "Timed steps per arm per round.")
    flags.DEFINE_integer("rounds", 3, "Rounds; each runs both arms.")
    flags.DEFINE_integer("batch_size", 32, "Rows per step (bert_base: 8).")


def _setup(model_name: str, batch_size: int):
    """(task model, task spec, features) on real SST-2 rows the project ships."""
    import pathlib

    from finetune import TextClassifier
    from tfmodels.checkpoints.hf_bert import minilm_folder
    rows = [line.rstrip("\n").split("\t") for line in open(
        pathlib.Path(__file__).resolve().parent / "demo_data" / "sst2_sample.tsv")][1:]
    texts, labels = [t for t, _ in rows[:1024]], [int(y) for _, y in rows[:1024]]
    if model_name == "minilm":
        clf = TextClassifier.from_checkpoint(minilm_folder(), num_classes=2, seq_length=64)
    else:
        import keras

        from tfmodels.bert import BertEncoder
        folder = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / "benchmark_divergence_bert"
        folder.mkdir(exist_ok=True)
        vocab = os.path.join(minilm_folder(), "vocab.txt")
        if not (folder / "encoder.keras").exists():
            keras.utils.set_random_seed(0)
            BertEncoder("bert_base").save(folder / "encoder.keras")
        clf = TextClassifier.from_checkpoint(str(folder / "encoder.keras"), num_classes=2,
                                             seq_length=128, vocab_file=vocab)
        texts = [" ".join([t] * 8) for t in texts]  # long rows: steps at length 128
    _, features = clf.encode(texts, labels)
    return clf.task_model, clf.task_spec, features


def _arm_steps(task_model, spec, features, batch_size: int, checked: bool):
    """A callable running n steps of one arm, and the watch it updates (None without)."""
    import tensorflow as tf

    from finetune import batching
    from finetune.driver import DivergenceWatch
    from finetune.losses import task_loss
    from finetune.models import backbone_architecture
    from tfmodels.optimization import create_optimizer
    from tfmodels.training import TrainStep
    strategy = tf.distribute.get_strategy()
    optimizer = create_optimizer(1e-5, total_steps=100000, warmup_steps=10, weight_decay=0.01)
    loss_fn = task_loss(spec, backbone_architecture(task_model), 0.0)
    batches = strategy.experimental_distribute_dataset(batching.train_dataset(
        {**features.inputs(), **features.labels()}, batch_size, 0, False))
    step = TrainStep(task_model, optimizer, loss_fn, strategy, clip_norm=1.0,
                     input_signature=batches.element_spec, report_grad_norm=checked)
    iterator = iter(batches)
    watch = DivergenceWatch("benchmark", lambda s: 1e-5) if checked else None
    counter = [0]

    def run(n: int) -> float:
        start = time.perf_counter()
        metrics = None
        for _ in range(n):
            metrics = step(next(iterator))
            counter[0] += 1
            if watch is not None:
                watch.update(counter[0], metrics)
        float(metrics["loss"])  # wait for the last step
        if watch is not None:
            watch.check(True)
        return (time.perf_counter() - start) / n

    run(2)  # trace, warm up
    return run, watch


def _watch_cost(calls: int = 2000) -> float:
    """Seconds per DivergenceWatch.update call, alone (eager, as the driver runs it)."""
    import tensorflow as tf

    from finetune.driver import DivergenceWatch
    watch = DivergenceWatch("cost", lambda s: 0.0)
    metrics = {"loss": tf.constant(0.5), "grad_norm": tf.constant(1.0)}
    watch.update(0, metrics)
    start = time.perf_counter()
    for i in range(calls):
        watch.update(i, metrics)
    int(watch.first_bad)
    return (time.perf_counter() - start) / calls


def main(argv):
    del argv
    from tfmodels.precision import cpu_description
    print(f"CPU: {cpu_description()}")
    watch_seconds = _watch_cost()
    print(f"DivergenceWatch.update alone: {watch_seconds * 1e6:.0f} us per call")
    print()
    print("| model | batch | s/step without checks | s/step with checks | with / without | "
          "watch's own share |")
    print("|---|---|---|---|---|---|")
    for name in FLAGS.models:
        batch = FLAGS.batch_size if name == "minilm" else 8
        task_model, spec, features = _setup(name, batch)
        arms = {checked: _arm_steps(task_model, spec, features, batch, checked)[0]
                for checked in (False, True)}
        times: Dict[bool, List[float]] = {False: [], True: []}
        for _ in range(FLAGS.rounds):
            for checked in (False, True):
                times[checked].append(arms[checked](FLAGS.steps))
        without, with_ = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {name} | {batch} | {without:.4f} | {with_:.4f} | {with_ / without:.3f} | "
              f"{watch_seconds / with_:.2%} |", flush=True)


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
