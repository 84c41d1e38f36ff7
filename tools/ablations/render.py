"""The Markdown and PNGs of an ablation report, from its data (report.Report.data, the JSON
beside the Markdown) alone: every number here was decided by the experiment, this only words
and draws it. A cell prints mean +- std (population std over seeds) and the header states the
seed count, so no figure appears without its spread. Plots need matplotlib
(`pip install -e '.[reports]'`); without it the tables are still written.

  python -m tools.ablations.render docs/reports/wikipedia20m/pretraining_transfer.json

re-renders that report (Markdown and PNGs) without running or reading any job.
"""
from __future__ import annotations

import json
import math
import pathlib
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

Data = Dict[str, Any]


def cell(data: Optional[Data]) -> str:
    """A cell of report.cell_data: 'mean ± std', the mean alone for one value, '–' for none."""
    if not data or not data["values"]:
        return "–"
    return (f"{data['mean']:.1f} ± {data['std']:.1f}" if len(data["values"]) > 1 else
            f"{data['mean']:.1f}")


def markdown_table(columns: Sequence[str], rows: Sequence[Data]) -> List[str]:
    lines = ["| variant | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for row in rows:
        lines.append(f"| {row['label']} | " +
                     " | ".join(cell(row["cells"].get(c)) for c in columns) + " |")
    return lines


OUTCOME_TEXT = {(False, "reproduces"): "reproduces", (False, "reversed"): "reversed",
                (False, "within_spread"): "does not (within the spread)",
                (True, "reproduces"): "reproduces (within the spread)",
                (True, "apart"): "does not (apart by more than the spread)"}


def claims_table(claims: Sequence[Data], chance: Dict[str, float]) -> List[str]:
    """One line per judged claim and column (report.judge_claims)."""
    lines = ["| the paper's claim | column | difference | larger spread | here |",
             "|---|---|---|---|---|"]
    for c in claims:
        outcome = OUTCOME_TEXT[c["same"], c["outcome"]]
        if c["both_at_chance"]:
            outcome += (f"; both rows at or below the commonest-label answer "
                        f"({chance[c['column']]:.1f})")
        lines.append(f"| {c['claim']} | {c['column']} | {c['delta']:+.1f} | {c['spread']:.1f} | "
                     f"{outcome} |")
    return lines


def chance_note(chance: Dict[str, float]) -> str:
    return ("Always answering the held-back slice's commonest label (the commonest-label "
            "answer) scores " +
            ", ".join(f"{label} {score:.1f}" for label, score in chance.items()) +
            ": rows at that level have not learned the task, so a claim between two of them "
            "says nothing.")


# ---- notes: one sentence per kind of report.Note ----------------------------------------------

def _mlm_by_input(n: Data) -> str:
    return ("MLM acc at [MASK] / random / kept: held-out accuracy of each pretraining's MLM head "
            "at the positions its records filled that way (one pretraining, no spread; – where "
            "the mix has none). Answering the commonest target everywhere scores "
            f"{100.0 * n['unigram_accuracy']:.1f}; at kept positions the answer is the input "
            "itself.")


def _perplexity(n: Data) -> str:
    parts = [f"{m['model']} {m['first']:,.0f} at step {m['first_step']} -> {m['last']:,.0f} at "
             f"step {m['last_step']}" for m in n["models"]]
    return ("Where each language model got to (held-out perplexity, first and last evaluation): "
            + "; ".join(parts) + ". A model still near the unigram perplexity knows word "
            "frequencies, not yet context.")


def _pretraining(n: Data) -> str:
    if n["model"].startswith("bert"):
        nsp = n.get("nsp_accuracy")
        shown = (f"held-out MLM acc {n['mlm_accuracy']:.3f} (at [MASK] {n['mask_accuracy']:.3f}, "
                 f"where always answering the commonest token scores "
                 f"{n['unigram_accuracy']:.3f}; at kept tokens {n['kept_accuracy']:.3f})" +
                 (f", NSP acc {nsp:.3f}" if nsp is not None and not math.isnan(nsp) else ""))
    else:
        shown = f"held-out perplexity {n['perplexity']:.1f}"
    return (f"{n.get('label', n['model'].upper())} pretraining: {n['config']}, {n['steps']} "
            f"steps of "
            f"{n['batch_size']} x {n['seq_length']} tokens ({n['tokens'] / 1e6:.1f}M) at "
            f"{n['tokens_per_second'] / 1000:.1f}k tokens/s (median logged window): "
            f"{n['training_seconds'] / 60:.0f} min of training; {shown}")


def _learning_rates(n: Data) -> str:
    parts = [f"{p['arm']} {p['task']} {p['learning_rate']:g} (" +
             ", ".join(f"{m['learning_rate']:g}: {m['mean']:.1f}" for m in p["means"]) + ")"
             for p in n["picks"]]
    return ("BERT fine-tuning lr, picked per arm and task by the held-back mean as BERT picks "
            "on Dev: " + "; ".join(parts))


def _chance_tail(arms: Sequence[str], chance: Optional[float]) -> str:
    """Which arms of a transfer verdict do no better than the commonest-label answer."""
    if not arms:
        return ""
    if len(arms) == 2:
        return f"; neither arm beats the commonest-label answer ({chance:.1f})"
    arm = "random init" if list(arms) == ["random"] else "the pretrained arm"
    return f"; {arm} does not beat the commonest-label answer ({chance:.1f})"


def _transfer_verdict(n: Data) -> str:
    return (f"{n.get('label', n['model'].upper())} {n['task']}: pretrained minus random init "
            f"{n['delta']:+.1f} "
            f"points, larger std {n['spread']:.1f}: "
            f"{'transfers' if n['clears_spread'] else 'does not clear the spread'}"
            f"{_chance_tail(n['arms_at_chance'], n['chance'])}")


def _scale_reference(n: Data) -> str:
    tail = (": at this size MRPC barely clears its constant answer even with full pretraining"
            if n["near_constant_answer"] else "")
    stsb = (f", STS-B Spearman {n['stsb_spearman']:.1f}" if "stsb_spearman" in n else "")
    return (f"Scale reference: Google's {n['config']} (the same shape, pretrained on BERT's "
            f"own corpus) scores SST-2 {n['sst2']:.1f}{stsb} and MRPC F1 {n['mrpc_f1']:.1f} on "
            f"GLUE test, where always answering 'paraphrase' scores "
            f"{n['mrpc_constant_f1']:.1f} (Turc et al. 2019){tail}.")


# The bar of reports written before issue 43, whose transfer_bar notes carry no rule.
OLD_TRANSFER_BAR = "every delta above the larger std, one BERT delta >= 3 points"


def _held_out_mlm(n: Data) -> str:
    parts = [f"{s['model']} on {s['records']} {100 * s['mask_accuracy']:.1f} "
             f"({100 * s['mlm_accuracy']:.1f})" for s in n["scores"]]
    unigram = {s["records"]: s["unigram_accuracy"] for s in n["scores"]
               if "unigram_accuracy" in s}
    tail = ("; answering the commonest target everywhere scores " + ", ".join(
        f"{100 * value:.1f} on {records}" for records, value in unigram.items())
        if unigram else "")
    return ("Held-out MLM accuracy at [MASK] (over all predicted positions), each BERT arm "
            f"scored on both packings' held-out records, {n['batches']} batches: " +
            "; ".join(parts) + tail + ".")


NOTES: Dict[str, Callable[[Data], str]] = {
    "mlm_by_input": _mlm_by_input,
    "single_pretraining_run": lambda n: ("Perplexity and MLM accuracy: a single pretraining "
                                         "run, so no spread."),
    "claims_by_next_size": lambda n: ("Claims compare each size with the next smaller one "
                                      "(--model_size_configs, smallest first)."),
    "perplexity": _perplexity,
    "zero_shot_spread": lambda n: (f"One pretraining seed per model; the plot's band is the "
                                   f"standard error over {n['examples']} examples (binomial; "
                                   f"for CoLA's MCC, a correlation's)."),
    "pretraining": _pretraining,
    "checkpoint_curve": lambda n: (f"Curve ({n['task']}, lr {n['learning_rate']:g}): " +
                                   ", ".join(f"step {p['step']} {cell(p)}"
                                             for p in n["points"])),
    "learning_rates": _learning_rates,
    "transfer_verdict": _transfer_verdict,
    "transfer_bar": lambda n: (f"Bar ({n.get('rule', OLD_TRANSFER_BAR)}): "
                               f"{'met' if n['met'] else 'not met'}."),
    "transfer_not_shown": lambda n: (
        "Not shown by this run, whatever the bar says: transfer on " +
        ", ".join(f"{model.upper()} {task}" for model, task in n["tasks"]) +
        ", where the pretrained arm does not beat the commonest-label answer."),
    "scale_reference": _scale_reference,
    "held_out_mlm": _held_out_mlm,
}


def transfer_line(notes: Sequence[Data]) -> str:
    """`transfer: bert sst2 +X.X stsb +X.X squad_f1 +X.X; bert_fullsent sst2 +X.X stsb +X.X;
    gpt sst2 +X.X story_cloze +X.X`, from the report's transfer_verdict notes (those marked
    in_line: False are in the table only)."""
    by_model: Dict[str, List[str]] = {}
    for n in notes:
        if n["kind"] == "transfer_verdict" and n.get("in_line", True):
            by_model.setdefault(n["model"], []).append(f"{n['task']} {n['delta']:+.1f}")
    return "transfer: " + "; ".join(f"{model} " + " ".join(parts)
                                    for model, parts in by_model.items())


LAST_LINES: Dict[str, Callable[[Sequence[Data]], str]] = {"transfer": transfer_line}


def compute_line(c: Data) -> str:
    """report.compute_data in words."""
    wall = f"{c['seconds'] / 60:.1f} min in the run that wrote this, on {c['cpu']}"
    if not c["jobs"]:
        return wall
    text = f"{c['jobs']} jobs, {c['job_seconds'] / 60:.1f} min when they ran"
    if c["untimed_jobs"]:
        text += f" ({c['untimed_jobs']} untimed, cached before timings were kept)"
    return f"{text}; {wall}"


def render(data: Data, drawn: Optional[Set[str]] = None) -> str:
    """The report's Markdown; figures link only the files in `drawn` (None: all of them)."""
    plural = "s" if data["seeds"] > 1 else ""
    lines = [f"# {data['title']}", "", data["intro"], "",
             f"Scores on {data['scored_on']}, x100 where the papers print percentages; each "
             f"cell is mean ± std over {data['seeds']} {data['what_varies']}{plural}.", ""]
    lines += markdown_table(data["columns"], data["rows"])
    for figure in data["figures"]:
        if drawn is None or figure["file"] in drawn:
            lines += ["", f"![{figure['caption']}]({figure['file']})"]
    if data["claims"]:
        lines += ["", "Does the paper's direction reproduce here? (row difference of the means, "
                      f"against the larger of the two rows' spreads: {data['spread_name']})", ""]
        lines += claims_table(data["claims"], data["chance"])
    notes = [NOTES[n["kind"]](n) for n in data["notes"]]
    if data["chance"]:
        notes.append(chance_note(data["chance"]))
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    if data["compute"]:
        lines += ["", f"Regenerate: `{data['compute']['command']}` "
                      f"({compute_line(data['compute'])}; cached jobs are skipped on a rerun)."]
    if data["last_line"]:
        lines += ["", LAST_LINES[data["last_line"]](data["notes"])]
    return "\n".join(lines) + "\n"


# ---- plots --------------------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def bar_plot(path: pathlib.Path, data: Data) -> bool:
    """One group of bars per column, one bar per variant, error bars = std over seeds."""
    plt = _pyplot()
    if plt is None:
        return False
    columns, rows, seeds = data["columns"], data["rows"], data["seeds"]
    width = 0.8 / max(len(rows), 1)
    figure, axis = plt.subplots(figsize=(max(6.0, 1.6 * len(columns) + 2), 3.8))
    nan = dict(mean=math.nan, std=math.nan)
    for i, row in enumerate(rows):
        stats = [row["cells"].get(c, nan) for c in columns]
        axis.bar([j + i * width for j in range(len(columns))], [s["mean"] for s in stats],
                 width, yerr=[s["std"] for s in stats], capsize=3, label=row["label"])
    axis.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(columns))])
    axis.set_xticklabels(columns, rotation=15)
    axis.set_title(f"{data['title']} (mean ± std over {seeds} seed{'s' if seeds > 1 else ''})")
    axis.grid(axis="y", alpha=0.3)
    # Beside the axes, not over them: with six or more variants an inside legend hides bars.
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return True


def line_plot(path: pathlib.Path, plot: Data) -> bool:
    """plot: report.LinePlot's data; each series' spread is drawn as a band."""
    plt = _pyplot()
    if plt is None:
        return False
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for name, s in plot["series"].items():
        axis.plot(s["x"], s["mean"], marker="o", markersize=3, label=name)
        axis.fill_between(s["x"], [m - d for m, d in zip(s["mean"], s["spread"])],
                          [m + d for m, d in zip(s["mean"], s["spread"])], alpha=0.15)
    axis.set_title(plot["title"])
    axis.set_xlabel(plot["x_label"])
    axis.set_ylabel(plot["y_label"])
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def draw_figures(data: Data, report_dir: pathlib.Path) -> Set[str]:
    """Writes the report's PNGs; returns the files drawn (none without matplotlib)."""
    drawn = set()
    for figure in data["figures"]:
        path, plot = report_dir / figure["file"], figure["plot"]
        if bar_plot(path, data) if plot["kind"] == "bar" else line_plot(path, plot):
            drawn.add(figure["file"])
    return drawn


def write_markdown(data: Data, report_dir: pathlib.Path) -> pathlib.Path:
    """<report_dir>/<name>.md and its PNGs, from the report's data; returns the .md path."""
    from tfmodels.files import atomic_write_text
    path = report_dir / f"{data['name']}.md"
    atomic_write_text(str(path), render(data, draw_figures(data, report_dir)))
    return path


def main(argv: Sequence[str]) -> None:
    for name in argv:
        json_path = pathlib.Path(name)
        print(write_markdown(json.loads(json_path.read_text(encoding="utf-8")),
                             json_path.parent))


if __name__ == "__main__":
    main(sys.argv[1:])
