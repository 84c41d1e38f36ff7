"""Helpers every reader shares: located errors, delimited-file rows, split resolution, hold-out.

Errors are `DataError` (a ValueError) whose message always starts with `<file>:<where>:` so a
bad row in a 400k-line file can be found without re-running anything.
"""
from __future__ import annotations

import csv
import os
from typing import Callable, Hashable, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar

T = TypeVar("T")


class DataError(ValueError):
    """Malformed input data; the message names the file, the location and the reason."""

    # A reason quotes the offending data (a header, a label); a JSON file read as TSV has a
    # "header" of the whole file, so a quote is cut to stay one readable line.
    MAX_REASON = 300

    def __init__(self, path: str, where: Optional[str], reason: str):
        if len(reason) > self.MAX_REASON:
            reason = (f"{reason[:self.MAX_REASON]}... ({len(reason)} characters; is this the "
                      "file the task reads, in its format?)")
        self.path, self.where, self.reason = str(path), where, reason
        super().__init__(f"{path}:{where}: {reason}" if where else f"{path}: {reason}")


def read_delimited(path: str, delimiter: str, quoting: int = csv.QUOTE_MINIMAL
                   ) -> Iterator[Tuple[int, List[str]]]:
    """Yield (line number, fields) for each non-blank row; raise DataError on an empty file.

    Opened with utf-8-sig so a leading BOM (MRPC) does not stick to the first column name.
    """
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        any_row = False
        try:
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                any_row = True
                yield reader.line_num, row
        except csv.Error as e:
            raise DataError(path, f"line {reader.line_num}", f"unreadable row ({e})") from e
    if not any_row:
        raise DataError(path, None, "file is empty")


def header_index(path: str, header: Sequence[str], names: Sequence[Optional[str]],
                 required: Sequence[str]) -> dict:
    """Map each column name in `names` to its index in `header` (None if absent).

    Raises DataError naming line 1 if a name in `required` is missing.
    """
    stripped = [h.strip() for h in header]
    out = {}
    for name in names:
        if name is None:
            continue
        out[name] = stripped.index(name) if name in stripped else None
        if out[name] is None and name in required:
            raise DataError(path, "line 1", f"missing column {name!r}; header is {stripped}")
    return out


def split_file(data_dir: str, split: str, files: Mapping[str, str], task: str) -> str:
    """The file (or folder, for RACE) for `split` under `data_dir`; `data_dir` itself when it
    is a file. ValueError for a split the task lacks, FileNotFoundError when it is absent."""
    if os.path.isfile(data_dir):
        return data_dir
    if split not in files:
        raise ValueError(f"task {task!r} has no {split!r} split; known splits: {sorted(files)} "
                         f"(evaluate on holdout_split of train where there is no dev set)")
    path = os.path.join(data_dir, files[split])
    if not os.path.exists(path):
        raise FileNotFoundError(f"{task} {split} data not found: expected {path}")
    return path


def holdout_split(examples: Sequence[T], fraction: float = 0.1,
                  group: Optional[Callable[[T], Hashable]] = None) -> Tuple[List[T], List[T]]:
    """Split into (train, heldout), holding out the LAST `fraction` of the examples.

    The project evaluates on the held-back end of each train file because dev sets are not
    shipped. At least one example is held out whenever there are two or more.
    group: examples with equal keys (e.g. SQuAD questions of one article) must not straddle
      the cut; it moves back to the start of the group it falls in, unless that would leave
      no training examples (then forward to the group's end; with a single group, the plain
      cut).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n = len(examples)
    n_held = int(round(n * fraction))
    if n_held == 0 and n >= 2:
        n_held = 1
    cut = n - n_held
    if group is not None and 0 < cut < n:
        keys = [group(e) for e in examples]
        start = cut
        while start > 0 and keys[start - 1] == keys[cut]:
            start -= 1
        end = cut
        while end < n and keys[end] == keys[end - 1]:
            end += 1
        # Back to the group's start; else forward to its end; one group only: the plain cut.
        cut = start if start > 0 else (end if end < n else cut)
    return list(examples[:cut]), list(examples[cut:])
