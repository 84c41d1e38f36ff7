"""What an ablation experiment found, as data: <report_dir>/<name>.json beside the Markdown.

An experiment returns a Report; `Report.data()` turns it into plain JSON-able values (per-seed
values with their mean and std, the paper's claims judged against the spread as enumerated
outcomes, the chance lines and the rows at them, plot series, structured notes, what the jobs
cost) and render.py writes the prose, tables and plots from that data alone. Tests read the
data; a report can be re-rendered from its JSON without the jobs.

A table row is (label, {column: [one value per seed]}).
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

Row = Tuple[str, Dict[str, List[float]]]
# A note is {"kind": ..., fields}: render.NOTES holds the sentence of each kind.
Note = Dict[str, Any]
SCHEMA = 1


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


@dataclasses.dataclass(frozen=True)
class LinePlot:
    """A figure beside the table: series name -> (x, mean, spread); the spread is a band."""
    file: str
    caption: str
    title: str
    x_label: str
    y_label: str
    series: Dict[str, Tuple[Sequence[float], Sequence[float], Sequence[float]]]


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
    notes: List[Note] = dataclasses.field(default_factory=list)
    figures: List[LinePlot] = dataclasses.field(default_factory=list)  # the bar chart is added
    bar_chart: bool = True           # False where a line plot tells the story better
    what_varies: str = "fine-tuning seed"
    scored_on: str = HELD_BACK
    # The kind of summary line a script can read, after everything else ("transfer": the
    # deltas of the transfer_verdict notes); "" for none.
    last_line: str = ""
    claims: List[Claim] = dataclasses.field(default_factory=list)
    # (column, one row's values) -> that row's spread, which claims are judged against, for
    # rows with no seeds to take a std over (zero-shot scores of one pretraining run: their
    # standard error). None: the std over seeds. `spread_name` says which it is.
    spread: Optional[Callable[[str, Sequence[float]], float]] = None
    spread_name: str = "their stds over seeds"
    # Column label -> the score of always answering the held-back slice's commonest label
    # (Workspace.constant_answer_scores): the rows no better are listed, and claims between
    # two such rows are marked, since they say nothing about the paper's direction.
    chance: Dict[str, float] = dataclasses.field(default_factory=dict)

    def data(self, compute: Optional[Dict[str, Any]] = None,
             budget: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Everything render.render needs, as JSON-able values; compute (compute_data) and
        budget as write_report takes them."""
        figures = [dict(file=f.file, caption=f.caption, plot=dict(
            kind="line", title=f.title, x_label=f.x_label, y_label=f.y_label,
            series={name: dict(x=list(x), mean=list(m), spread=list(s))
                    for name, (x, m, s) in f.series.items()})) for f in self.figures]
        if self.bar_chart and self.rows:
            figures.insert(0, dict(file=f"{self.name}.png", caption="the table as bars",
                                   plot=dict(kind="bar")))
        return dict(
            schema=SCHEMA, name=self.name, title=self.title, intro=self.intro,
            scored_on=self.scored_on, what_varies=self.what_varies, seeds=self.seeds,
            columns=list(self.columns),
            rows=[dict(label=label, cells={column: cell_data(v) for column, v in values.items()},
                       at_chance=[column for column, v in values.items()
                                  if at_chance(v, self.chance.get(column))])
                  for label, values in self.rows],
            chance=dict(self.chance), figures=figures, spread_name=self.spread_name,
            claims=judge_claims(self.claims, self.columns, self.rows, self.spread, self.chance),
            notes=list(self.notes), last_line=self.last_line, compute=compute, budget=budget)


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def cell_data(values: Sequence[float]) -> Dict[str, Any]:
    """One table cell: the per-seed values, their mean and population std over seeds."""
    mean, std = mean_std(values)
    return dict(values=list(values), mean=mean, std=std)


# A claim's outcome: the direction "reproduces" (difference above the larger spread),
# is "reversed" (below minus it) or stays "within_spread"; a no-difference claim
# (Claim.same) "reproduces" within the spread or is "apart" by more.
OUTCOMES = ("reproduces", "reversed", "within_spread", "apart")


def verdict(better: Sequence[float], worse: Sequence[float],
            spread_of: Optional[Callable[[Sequence[float]], float]] = None
            ) -> Tuple[float, float, str]:
    """(mean difference, the larger of the two rows' spreads, outcome of a direction claim
    from OUTCOMES). A row's spread is its std over seeds unless `spread_of` gives it."""
    (better_mean, better_std), (worse_mean, worse_std) = mean_std(better), mean_std(worse)
    if spread_of is not None:
        better_std, worse_std = spread_of(better), spread_of(worse)
    delta, spread = better_mean - worse_mean, max(better_std, worse_std)
    if delta > spread:
        return delta, spread, "reproduces"
    if delta < -spread:
        return delta, spread, "reversed"
    return delta, spread, "within_spread"


def at_chance(values: Sequence[float], chance: Optional[float]) -> bool:
    """The row's mean is no better than the chance line, at the table's one decimal."""
    return chance is not None and round(mean_std(values)[0], 1) <= round(chance, 1)


def judge_claims(claims: Sequence[Claim], columns: Sequence[str], rows: Sequence[Row],
                 spread: Optional[Callable[[str, Sequence[float]], float]] = None,
                 chance: Optional[Dict[str, float]] = None) -> List[Dict[str, Any]]:
    """One judgement per claim and column; `spread` and `chance` as in `Report`.
    both_at_chance: neither row beats the column's commonest-label answer."""
    by_label = dict(rows)
    judged = []
    for claim in claims:
        for column in claim.columns or columns:
            spread_of = (None if spread is None else
                         lambda values, column=column: spread(column, values))
            better, worse = (by_label[row].get(column, []) for row in (claim.better, claim.worse))
            delta, larger, outcome = verdict(better, worse, spread_of)
            if claim.same:
                outcome = "reproduces" if abs(delta) <= larger else "apart"
            line_at = (chance or {}).get(column)
            judged.append(dict(claim=claim.text, better=claim.better, worse=claim.worse,
                               column=column, same=claim.same, delta=delta, spread=larger,
                               outcome=outcome, both_at_chance=all(
                                   at_chance(values, line_at) for values in (better, worse))))
    return judged


def compute_data(command: str, seconds: float,
                 job_seconds: Optional[Dict[str, Optional[float]]]) -> Dict[str, Any]:
    """What the experiment cost: the time of all its jobs, whichever run did them, and the CPU
    of the run that wrote the report (timings, and BERT pretraining's last digits, differ
    between CPUs). jobs: how many it used; untimed_jobs: those cached before timings were kept."""
    from tfmodels.precision import cpu_description
    known = [s for s in (job_seconds or {}).values() if s is not None]
    return dict(command=command, seconds=seconds, cpu=cpu_description(),
                jobs=len(job_seconds or {}), job_seconds=sum(known),
                untimed_jobs=len(job_seconds or {}) - len(known))


def write_report(report: Report, report_dir: pathlib.Path, command: str, seconds: float,
                 job_seconds: Optional[Dict[str, Optional[float]]] = None,
                 budget: Optional[Dict[str, Any]] = None) -> pathlib.Path:
    """<report_dir>/<name>.json, then the .md (+ PNGs) rendered from it; returns the markdown
    path. seconds: this run's wall time; job_seconds: every job the experiment used -> the
    seconds it took when it ran; budget: every setting of the run (the command names only
    those changed), kept in the JSON so its numbers carry their settings."""
    from tfmodels.files import atomic_write_text
    from tools.ablations.render import write_markdown
    report_dir.mkdir(parents=True, exist_ok=True)
    data = report.data(compute_data(command, seconds, job_seconds), budget)
    atomic_write_text(str(report_dir / f"{report.name}.json"),
                      json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return write_markdown(data, report_dir)


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
