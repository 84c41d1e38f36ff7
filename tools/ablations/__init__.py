"""The papers' ablations at laptop scale: one command per experiment, cached and resumable.

  workspace.py    data, vocabularies, pretraining, fine-tuning and zero-shot jobs, each cached
                  in a folder named by a hash of its full settings (a rerun skips finished
                  work; changed flags give new folders, never stale results)
  experiments.py  the registry: each experiment names the models it pretrains, the tasks it
                  fine-tunes, and how its table and plots are laid out
  report.py       what an experiment found, as data: <report_dir>/<experiment>.json (per-seed
                  values, means and stds, the claims' outcomes, chance lines, notes, costs)
  render.py       the Markdown and PNGs of a report from that JSON alone (tables show mean +-
                  std over seeds, with the seed count); it re-renders a report without its jobs

The binary is tools/run_ablations.py.
"""
