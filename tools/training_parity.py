"""Step-for-step training parity of every fine-tuning head with transformers (torch, CPU).

  pip install '.[reference]'      # torch + transformers
  python -m tools.training_parity                       # every head, 20 steps, drift columns
  python -m tools.training_parity --heads=bert_span,gpt_classify --nodrift

For each head our task model and the transformers model start from the same weights (small
random configs; the real all-MiniLM-L6-v2 for `bert_classify_minilm`), with dropout off, and
train on the same batches in the same order with one recipe (tools/parity/harness.py says how
the torch optimizer is configured to ours). Prints one markdown row per head: the largest
relative per-step loss difference, the largest absolute weight difference after the last
step (bars: 1e-5 each, float32), how far the weights moved, and how far mixed_bfloat16 and
jit_compile=True move OUR per-step losses from float32 (no bar). Exits 1 if any head fails.
"""
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import flags

from tfmodels.cli import run_binary

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags, defined when it runs (tfmodels.cli.run_binary), not on import."""
    flags.DEFINE_list("heads", None, "Heads to compare (default: all, MiniLM included).")
    flags.DEFINE_integer("steps", 20, "Optimizer steps on each side.")
    flags.DEFINE_integer("seed", 0, "Seed of the random configs' weights and of the batches.")
    flags.DEFINE_bool("drift", True, "Also run ours under mixed_bfloat16 and with jit_compile.")
    flags.DEFINE_integer("torch_threads", 1, "torch intra-op threads (1: a shared machine).")


def main(argv):
    del argv
    import torch

    from tools.machine import cpu_description
    from tools.parity import cases, harness

    torch.set_num_threads(FLAGS.torch_threads)
    heads = FLAGS.heads or list(cases.HEADS)
    print(f"machine: {cpu_description()}")
    print(f"libraries: {harness.library_versions()}")
    print(f"flags: heads={','.join(heads)} steps={FLAGS.steps} seed={FLAGS.seed} "
          f"drift={FLAGS.drift} torch_threads={FLAGS.torch_threads}\n")
    results = []
    for head in heads:
        start = time.perf_counter()
        case = cases.make_case(head, steps=FLAGS.steps, seed=FLAGS.seed)
        result = harness.compare_head(case, FLAGS.steps, drift=FLAGS.drift)
        results.append(result)
        print(f"{head}: {'pass' if result.passed else 'FAIL'} "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
    print("\n" + harness.RECIPE_NOTES)
    print("Each head's reference:")
    print(harness.describe_setup(results))
    print()
    print(harness.markdown_table(results))
    failures = [r for r in results if not r.passed]
    if failures:
        print("\nMISMATCH:\n" + "\n".join(r.failure() for r in failures))
        sys.exit(1)
    print(f"\nall {len(results)} heads within the bars (loss {harness.LOSS_BAR:g} relative per "
          f"step, weights {harness.WEIGHT_BAR:g} absolute after {FLAGS.steps} steps)")


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
