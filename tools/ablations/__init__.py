"""The papers' ablations at laptop scale: one command per experiment, cached and resumable.

  workspace.py    data, vocabularies, pretraining, fine-tuning and zero-shot jobs, each cached
                  in a folder named by a hash of its full settings (a rerun skips finished
                  work; changed flags give new folders, never stale results)
  experiments.py  the registry: each experiment names the models it pretrains, the tasks it
                  fine-tunes, and how its table and plots are laid out
  report.py       markdown tables (mean +- std over seeds, with the seed count) and PNG plots

The binary is tools/run_ablations.py.
"""
