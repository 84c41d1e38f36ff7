"""Markdown tables and PNG plots for the ablation reports.

A table row is (label, {column: [one value per seed]}); a cell prints mean +- std (population
std over seeds) and the header states the seed count, so no figure appears without its spread.
Plots need matplotlib (`pip install -e '.[reports]'`); without it the tables are still written.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

Row = Tuple[str, Dict[str, List[float]]]


@dataclasses.dataclass(frozen=True)
class Claim:
    """A direction the paper reports: row `better` scores above row `worse` on `columns`
    (None: every column of the table). `same`: the paper reports no difference between the
    two rows instead (BERT's "fine-tuning is robust to the masking mix"), which reproduces
    when the difference stays within the spread."""
    text: str
    better: str
    worse: str
    columns: Optional[Sequence[str]] = None
    same: bool = False


HELD_BACK = ("held-back data (the last 10% of each training file, at most 1,000 examples, the "
             "same for every variant and budget; Story Cloze: the second half of its CSV; "
             "CoNLL-2003: eng.testa)")


@dataclasses.dataclass
class Report:
    name: str
    title: str
    intro: str                       # what the paper did and what we run instead
    columns: List[str]
    rows: List[Row]
    seeds: int
    notes: List[str] = dataclasses.field(default_factory=list)
    # (file name, caption, plot function(path) -> bool); the bar chart of the table is added.
    figures: List[Tuple[str, str, object]] = dataclasses.field(default_factory=list)
    bar_chart: bool = True           # False where a line plot tells the story better
    what_varies: str = "fine-tuning seed"
    scored_on: str = HELD_BACK
    last_line: str = ""              # a summary line a script can read, after everything else
    claims: List[Claim] = dataclasses.field(default_factory=list)
    # (column, one row's values) -> that row's spread, which claims are judged against, for
    # rows with no seeds to take a std over (zero-shot scores of one pretraining run: their
    # standard error). None: the std over seeds. `spread_name` says which it is.
    spread: Optional[Callable[[str, Sequence[float]], float]] = None
    spread_name: str = "their stds over seeds"
    # Column label -> the score of always answering the held-back slice's commonest label
    # (Workspace.constant_answer_scores): a note states it and the claims table marks claims
    # between two rows that do no better, which say nothing about the paper's direction.
    chance: Dict[str, float] = dataclasses.field(default_factory=dict)


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def cell(values: Optional[Sequence[float]]) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    return f"{mean:.1f} ± {std:.1f}" if len(values) > 1 else f"{mean:.1f}"


def verdict(better: Sequence[float], worse: Sequence[float],
            spread_of: Optional[Callable[[Sequence[float]], float]] = None
            ) -> Tuple[float, float, str]:
    """(mean difference, the larger of the two rows' spreads, whether the direction
    reproduces): it does when the difference is above that spread, is reversed when it is
    below minus it. A row's spread is its std over seeds unless `spread_of` gives it."""
    (better_mean, better_std), (worse_mean, worse_std) = mean_std(better), mean_std(worse)
    if spread_of is not None:
        better_std, worse_std = spread_of(better), spread_of(worse)
    delta, spread = better_mean - worse_mean, max(better_std, worse_std)
    if delta > spread:
        return delta, spread, "reproduces"
    if delta < -spread:
        return delta, spread, "reversed"
    return delta, spread, "does not (within the spread)"


def at_chance(values: Sequence[float], chance: Optional[float]) -> bool:
    """The row's mean is no better than the chance line, at the table's one decimal."""
    return chance is not None and round(mean_std(values)[0], 1) <= round(chance, 1)


def chance_note(chance: Dict[str, float]) -> str:
    return ("Always answering the held-back slice's commonest label (the commonest-label "
            "answer) scores " +
            ", ".join(f"{label} {score:.1f}" for label, score in chance.items()) +
            ": rows at that level have not learned the task, so a claim between two of them "
            "says nothing.")


def claims_table(claims: Sequence[Claim], columns: Sequence[str], rows: Sequence[Row],
                 spread: Optional[Callable[[str, Sequence[float]], float]] = None,
                 chance: Optional[Dict[str, float]] = None) -> List[str]:
    """One line per claim and column; `spread` and `chance` as in `Report`."""
    by_label = dict(rows)
    lines = ["| the paper's claim | column | difference | larger spread | here |",
             "|---|---|---|---|---|"]
    for claim in claims:
        for column in claim.columns or columns:
            spread_of = (None if spread is None else
                         lambda values, column=column: spread(column, values))
            delta, larger, outcome = verdict(by_label[claim.better].get(column, []),
                                             by_label[claim.worse].get(column, []), spread_of)
            if claim.same:
                outcome = ("reproduces (within the spread)" if abs(delta) <= larger else
                           "does not (apart by more than the spread)")
            line_at = (chance or {}).get(column)
            if all(at_chance(by_label[row].get(column, []), line_at)
                   for row in (claim.better, claim.worse)):
                outcome += f"; both rows at or below the commonest-label answer ({line_at:.1f})"
            lines.append(f"| {claim.text} | {column} | {delta:+.1f} | {larger:.1f} | "
                         f"{outcome} |")
    return lines


def markdown_table(columns: Sequence[str], rows: Sequence[Row]) -> List[str]:
    lines = ["| variant | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for label, values in rows:
        lines.append(f"| {label} | " + " | ".join(cell(values.get(c)) for c in columns) + " |")
    return lines


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def bar_plot(path: pathlib.Path, title: str, columns: Sequence[str], rows: Sequence[Row],
             seeds: int) -> bool:
    """One group of bars per column, one bar per variant, error bars = std over seeds."""
    plt = _pyplot()
    if plt is None:
        return False
    width = 0.8 / max(len(rows), 1)
    figure, axis = plt.subplots(figsize=(max(6.0, 1.6 * len(columns) + 2), 3.8))
    for i, (label, values) in enumerate(rows):
        stats = [mean_std(values.get(c, [])) for c in columns]
        axis.bar([j + i * width for j in range(len(columns))], [m for m, _ in stats],
                 width, yerr=[s for _, s in stats], capsize=3, label=label)
    axis.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(columns))])
    axis.set_xticklabels(columns, rotation=15)
    axis.set_title(f"{title} (mean ± std over {seeds} seed{'s' if seeds > 1 else ''})")
    axis.grid(axis="y", alpha=0.3)
    # Beside the axes, not over them: with six or more variants an inside legend hides bars.
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return True


def line_plot(path: pathlib.Path, title: str, x_label: str, y_label: str,
              series: Dict[str, Tuple[Sequence[float], Sequence[float], Sequence[float]]]) -> bool:
    """series: name -> (x, mean, spread); the spread is drawn as a band."""
    plt = _pyplot()
    if plt is None:
        return False
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for name, (xs, means, spreads) in series.items():
        axis.plot(xs, means, marker="o", markersize=3, label=name)
        axis.fill_between(xs, [m - s for m, s in zip(means, spreads)],
                          [m + s for m, s in zip(means, spreads)], alpha=0.15)
    axis.set_title(title)
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write_report(report: Report, report_dir: pathlib.Path, command: str, seconds: float,
                 job_seconds: Optional[Dict[str, Optional[float]]] = None) -> pathlib.Path:
    """<report_dir>/<name>.md (+ PNGs); returns the markdown path. seconds: this run's wall
    time; job_seconds: every job the experiment used -> the seconds it took when it ran."""
    from tfmodels.files import atomic_write_text
    report_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {report.title}", "", report.intro, "",
             f"Scores on {report.scored_on}, x100 where the papers print percentages; each "
             f"cell is mean ± std over {report.seeds} {report.what_varies}"
             f"{'s' if report.seeds > 1 else ''}.",
             ""]
    lines += markdown_table(report.columns, report.rows)
    figures = list(report.figures)
    bar_file = f"{report.name}.png"
    if report.bar_chart and report.rows and bar_plot(
            report_dir / bar_file, report.title, report.columns, report.rows, report.seeds):
        figures.insert(0, (bar_file, "the table as bars", None))
    for file, caption, draw in figures:
        if draw is not None and not draw(report_dir / file):
            continue
        lines += ["", f"![{caption}]({file})"]
    if report.claims:
        lines += ["", "Does the paper's direction reproduce here? (row difference of the means, "
                      f"against the larger of the two rows' spreads: {report.spread_name})", ""]
        lines += claims_table(report.claims, report.columns, report.rows, report.spread,
                              report.chance)
    notes = report.notes + ([chance_note(report.chance)] if report.chance else [])
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    lines += ["", f"Regenerate: `{command}` ({compute_line(seconds, job_seconds)}; cached jobs "
                  "are skipped on a rerun)."]
    if report.last_line:
        lines += ["", report.last_line]
    path = report_dir / f"{report.name}.md"
    atomic_write_text(str(path), "\n".join(lines) + "\n")
    return path


def compute_line(seconds: float, job_seconds: Optional[Dict[str, Optional[float]]]) -> str:
    """What the experiment cost: the time of all its jobs, whichever run did them, and the CPU
    of the run that wrote the report (timings, and BERT pretraining's last digits, differ
    between CPUs)."""
    from tfmodels.precision import cpu_description
    wall = f"{seconds / 60:.1f} min in the run that wrote this, on {cpu_description()}"
    if not job_seconds:
        return wall
    known = [s for s in job_seconds.values() if s is not None]
    text = f"{len(job_seconds)} jobs, {sum(known) / 60:.1f} min when they ran"
    if len(known) < len(job_seconds):
        text += f" ({len(job_seconds) - len(known)} untimed, cached before timings were kept)"
    return f"{text}; {wall}"


def write_index(report_dir: pathlib.Path) -> pathlib.Path:
    """<report_dir>/README.md: a link to every report there, titled by its first line, then
    the reports of other budgets kept in its subfolders (one folder per budget)."""
    from tfmodels.files import atomic_write_text
    lines = ["# Ablation reports", "",
             "Written by `python -m tools.run_ablations` (see the README); one file per "
             "experiment.", ""]

    def links(paths):
        for path in sorted(paths):
            if path.name == "README.md":
                continue
            title = path.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
            yield f"- [{title}]({path.relative_to(report_dir).as_posix()})"

    lines += links(report_dir.glob("*.md"))
    for folder in sorted(p for p in report_dir.iterdir() if p.is_dir()):
        found = list(links(folder.glob("*.md")))
        if found:
            lines += ["", f"Another budget, `{folder.name}/`:", ""] + found
    index = report_dir / "README.md"
    atomic_write_text(str(index), "\n".join(lines) + "\n")
    return index
