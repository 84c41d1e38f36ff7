r"""Reruns the papers' ablations at small scale and writes a markdown report with plots.

  pip install '.[reports]'          # matplotlib, for the plots
  python -m tools.run_ablations --experiments=bert_objectives
  python -m tools.run_ablations --experiments=all --seeds=0,1,2,3,4

Experiments (tools/ablations/experiments.py): pretraining_transfer, bert_objectives,
bert_masking, bert_feature_based, model_size, loss_imbalanced, gpt_aux_lm, gpt_no_pretraining,
gpt_lstm, layer_transfer, zero_shot_vs_steps. Each pretrains the small models it needs on
--corpus (wikitext2: 217k words for quick checks; wikipedia20m: 20M words, see
../shared/data/corpus), fine-tunes them on the real GLUE / SQuAD-subset / Story Cloze /
CoNLL-2003 files with every seed, and writes <report_dir>/<experiment>.json (the numbers and
verdicts) and, rendered from it by tools/ablations/render.py, <experiment>.md and PNGs.
Jobs are cached under --work_dir by a hash of their settings: a rerun skips finished work and
an interrupted pretraining resumes. Runs are deterministic for a seed (TF op determinism).

  python -m tools.run_ablations --experiments=pretraining_transfer --corpus=wikipedia20m \
      --bert_pretrain_steps=16000 --bert_learning_rate=1e-3 --gpt_learning_rate=2.5e-4 \
      --lstm_learning_rate=2e-3 --pretrain_steps=1000 --finetune_examples=1000 \
      --finetune_epochs=3 --full_data_tasks=mrpc,squad_v1 --report_dir=docs/reports/wikipedia20m

(the wikipedia20m budget of BUILD_NOTES, where BERT and GPT-1 transfer on every task of the
report; at the default GPT lr, 1e-3, gpt_small stays at unigram level on this corpus, at
2.5e-4 so does lstm_small, and on 1,000 MRPC pairs / SQuAD questions neither BERT arm learns
the task.)
--transfer_learning_rates=1e-3,3e-4 lets each BERT arm keep, per task, the fine-tuning lr with
the best held-back mean, as BERT picks its lr on Dev (at 1e-3 alone SQuAD's seeds can split).

Several runner processes may share one --work_dir: each job holds a file lock while it runs,
so a second process asking for it waits and then takes its result. On a 2-core CPU two
one-thread processes, one per core, do more than one process on both cores (bert_tiny
pretraining on an AMD EPYC: 2 x 20k tokens/s vs 30k), e.g. two experiments side by side:

  export TF_NUM_INTRAOP_THREADS=1
  taskset -c 0 python -m tools.run_ablations --experiments=bert_objectives ... &
  taskset -c 1 python -m tools.run_ablations --experiments=bert_masking ...

The default budget keeps each experiment well under an hour on 2 CPU cores. To scale up on an
accelerator, e.g.: --bert_config=bert_base --gpt_config=gpt1 --lstm_config=lstm_2048
--pretrain_steps=100000 --pretrain_batch_size=256 --finetune_examples=0
--distribution_strategy=mirrored --mixed_precision=mixed_bfloat16.
"""
import dataclasses
import os
import pathlib
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app, flags

from tfmodels.cli import run_binary
from tools.ablations.workspace import Budget

FLAGS = flags.FLAGS


def define_flags():
    from tfmodels.config_flags import define_flags_from_dataclass
    flags.DEFINE_list("experiments", None, "Experiment names, or 'all'.")
    flags.DEFINE_string("shared_data", "../shared/data", "Folder of the real third-party data.")
    flags.DEFINE_string("work_dir", "runs/ablations", "Cached records, models and results.")
    flags.DEFINE_string("report_dir", "docs/reports/ablations", "Markdown and PNG output.")
    define_flags_from_dataclass(Budget)


def run_experiments(names, work_dir: str, shared: str, report_dir: str, budget: Budget,
                    log=print):
    """Runs each named experiment (or all); returns {name: report path}."""
    from tfmodels.training import op_determinism
    from tools.ablations.experiments import EXPERIMENTS
    from tools.ablations.report import write_index, write_report
    from tools.ablations.workspace import Workspace
    if list(names) == ["all"]:
        names = list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiments {unknown}; known: {sorted(EXPERIMENTS)}")
    # Same seed, same numbers: pretraining sets this too, fine-tuning relies on it. On for
    # the experiments only, then back to what it was.
    workspace = Workspace(work_dir, shared, budget, log)
    written = {}
    with op_determinism(True):
        for name in names:
            started = time.perf_counter()
            workspace.job_seconds = {}
            log(f"== {name}")
            report = EXPERIMENTS[name](workspace)
            command = f"python -m tools.run_ablations --experiments={name}" + "".join(
                f" --{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                for k, v in budget_changes(budget).items())
            written[name] = write_report(report, pathlib.Path(report_dir), command,
                                         time.perf_counter() - started, workspace.job_seconds,
                                         dataclasses.asdict(budget))
            log(f"wrote {written[name]}")
            write_index(pathlib.Path(report_dir))
    return written


def budget_changes(budget: Budget) -> dict:
    default = Budget()
    return {f.name: getattr(budget, f.name) for f in dataclasses.fields(Budget)
            if getattr(budget, f.name) != getattr(default, f.name)}


def main(argv):
    del argv
    from tfmodels.config_flags import dataclass_from_flags
    if not FLAGS.experiments:
        raise app.UsageError("--experiments is required (a list of names, or 'all')")
    run_experiments(FLAGS.experiments, FLAGS.work_dir, FLAGS.shared_data, FLAGS.report_dir,
                    dataclass_from_flags(Budget))


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
