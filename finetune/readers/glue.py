"""GLUE-style sentence(-pair) tasks from TSV files or TensorFlow Datasets, one table-driven reader.

The GLUE tasks (and SNLI, SciTail) differ only in which columns hold the texts, the label and
the id, whether the file has a header, and the label set, so `GLUE_FORMATS` describes each and
`read_glue_tsv` reads them all. Columns are found by header name where a header exists; the
headerless files (CoLA train/dev, SciTail) are read by position with a fixed column count.
Files are read with `quoting=csv.QUOTE_NONE` (GLUE texts contain unbalanced quotes) and
`utf-8-sig` (MRPC's header starts with a BOM).

Label names are the strings in the files ("0"/"1" where the files use digits), ordered so that
index i is TFDS's integer label i for the same task.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from typing import Dict, List, Optional, Tuple, Union

from finetune.examples import TextExample
from finetune.readers.common import DataError, header_index, read_delimited

Column = Union[str, int]


@dataclasses.dataclass(frozen=True)
class TsvLayout:
    """Where the fields of one file layout are: header names, or positions when header=False."""

    text_a: Column
    text_b: Optional[Column] = None
    label: Optional[Column] = None
    guid: Optional[Column] = None
    header: bool = True
    num_columns: Optional[int] = None     # headerless files: the exact field count


@dataclasses.dataclass(frozen=True)
class GlueFormat:
    """One task's files: layouts (train/dev share one; test may differ) and its label set."""

    layout: TsvLayout
    test_layout: Optional[TsvLayout] = None          # None: same as `layout`
    label_names: Tuple[str, ...] = ()                 # () for regression
    label_range: Optional[Tuple[float, float]] = None  # regression targets
    skip_labels: Tuple[str, ...] = ()                 # rows to drop (SNLI's "-": no consensus)


_PAIR = TsvLayout(text_a="sentence1", text_b="sentence2", label="label", guid="index")
_BINARY = ("0", "1")
_NLI3 = ("entailment", "neutral", "contradiction")
_NLI2 = ("entailment", "not_entailment")

GLUE_FORMATS: Dict[str, GlueFormat] = {
    "cola": GlueFormat(
        layout=TsvLayout(text_a=3, label=1, header=False, num_columns=4),
        test_layout=TsvLayout(text_a="sentence", guid="index"),
        label_names=_BINARY),
    "sst2": GlueFormat(
        layout=TsvLayout(text_a="sentence", label="label", guid="index"),
        label_names=_BINARY),
    "mrpc": GlueFormat(
        layout=TsvLayout(text_a="#1 String", text_b="#2 String", label="Quality", guid="index"),
        label_names=_BINARY),
    "qqp": GlueFormat(
        layout=TsvLayout(text_a="question1", text_b="question2", label="is_duplicate", guid="id"),
        label_names=_BINARY),
    "stsb": GlueFormat(
        layout=TsvLayout(text_a="sentence1", text_b="sentence2", label="score", guid="index"),
        label_range=(0.0, 5.0)),
    "mnli": GlueFormat(
        layout=TsvLayout(text_a="sentence1", text_b="sentence2", label="gold_label", guid="index"),
        label_names=_NLI3),
    "qnli": GlueFormat(
        layout=TsvLayout(text_a="question", text_b="sentence", label="label", guid="index"),
        label_names=_NLI2),
    "rte": GlueFormat(layout=_PAIR, label_names=_NLI2),
    "wnli": GlueFormat(layout=_PAIR, label_names=_BINARY),
    "snli": GlueFormat(
        layout=TsvLayout(text_a="sentence1", text_b="sentence2", label="gold_label", guid="pairID"),
        label_names=_NLI3, skip_labels=("-",)),
    "scitail": GlueFormat(
        layout=TsvLayout(text_a=0, text_b=1, label=2, header=False, num_columns=3),
        label_names=("entails", "neutral")),
}
GLUE_FORMATS["mnli_mismatched"] = GLUE_FORMATS["mnli"]


def _parse_label(path: str, where: str, raw: str, fmt: GlueFormat) -> Union[str, float]:
    if fmt.label_names:
        if raw not in fmt.label_names:
            raise DataError(path, where, f"unknown label {raw!r}; expected one of {list(fmt.label_names)}")
        return raw
    try:
        value = float(raw)
    except ValueError:
        raise DataError(path, where, f"score {raw!r} is not a number") from None
    if value != value or (fmt.label_range and not fmt.label_range[0] <= value <= fmt.label_range[1]):
        raise DataError(path, where, f"score {raw!r} is outside {fmt.label_range}")
    return value


def read_glue_tsv(path: str, fmt: GlueFormat, test: bool = False) -> List[TextExample]:
    """Read one GLUE-style TSV file into TextExamples.

    `test=True` uses the format's test layout and allows the label column to be absent (labels
    are then None). guid is the file's id column where it has one, else `<file name>:<line>`.
    Raises DataError (a ValueError) naming file and line for a missing column, a wrong field
    count, an unknown label, a non-numeric score, or an empty file.
    """
    layout = (fmt.test_layout or fmt.layout) if test else fmt.layout
    rows = read_delimited(path, "\t", quoting=csv.QUOTE_NONE)
    name = os.path.basename(path)
    if layout.header:
        _, header = next(rows)
        required = [c for c in (layout.text_a, layout.text_b) if c is not None]
        if not test and layout.label is not None:
            required.append(layout.label)
        cols = header_index(path, header, (layout.text_a, layout.text_b, layout.label, layout.guid), required)
        width = len(header)
    else:
        cols = {c: c for c in (layout.text_a, layout.text_b, layout.label, layout.guid) if c is not None}
        width = layout.num_columns
    a, b = cols[layout.text_a], cols.get(layout.text_b)
    lab, gid = cols.get(layout.label), cols.get(layout.guid)

    examples = []
    for line, row in rows:
        where = f"line {line}"
        if width is not None and len(row) != width:
            raise DataError(path, where, f"expected {width} tab-separated fields, found {len(row)}")
        if lab is not None and row[lab] in fmt.skip_labels:
            continue
        label = _parse_label(path, where, row[lab], fmt) if lab is not None else None
        guid = row[gid] if gid is not None else f"{name}:{line}"
        examples.append(TextExample(guid=guid, text_a=row[a],
                                    text_b=row[b] if b is not None else None, label=label))
    if not examples:
        raise DataError(path, None, "no examples after the header")
    return examples


# --------------------------------------------------------------------------------------------
# TensorFlow Datasets
# --------------------------------------------------------------------------------------------

# task -> (TFDS config, text_a feature, text_b feature)
TFDS_GLUE: Dict[str, Tuple[str, str, Optional[str]]] = {
    "cola": ("cola", "sentence", None),
    "sst2": ("sst2", "sentence", None),
    "mrpc": ("mrpc", "sentence1", "sentence2"),
    "qqp": ("qqp", "question1", "question2"),
    "stsb": ("stsb", "sentence1", "sentence2"),
    "mnli": ("mnli", "premise", "hypothesis"),
    "mnli_mismatched": ("mnli", "premise", "hypothesis"),
    "qnli": ("qnli", "question", "sentence"),
    "rte": ("rte", "sentence1", "sentence2"),
    "wnli": ("wnli", "sentence1", "sentence2"),
}


def tfds_split(task: str, split: str) -> str:
    """Our split name (train/dev/test) -> the TFDS split; anything else passes through."""
    suffix = {"mnli": "_matched", "mnli_mismatched": "_mismatched"}.get(task, "")
    return {"train": "train", "dev": "validation" + suffix, "test": "test" + suffix}.get(split, split)


def read_tfds_glue(task: str, split: str, data_dir: Optional[str] = None) -> List[TextExample]:
    """Read `glue/<config>` through tensorflow_datasets (already prepared; never downloads).

    `split` is train/dev/test or any TFDS split string ("train[:1%]"). TFDS integer labels map
    to this task's label names by index; -1 (test) becomes None.
    """
    import tensorflow_datasets as tfds  # imported lazily: slow, and only this reader needs it

    if task not in TFDS_GLUE:
        raise ValueError(f"no TFDS GLUE config for task {task!r}; known: {sorted(TFDS_GLUE)}")
    config, feat_a, feat_b = TFDS_GLUE[task]
    fmt = GLUE_FORMATS[task]
    name = f"glue/{config}"
    tsplit = tfds_split(task, split)
    ds = tfds.load(name, split=tsplit, data_dir=data_dir, download=False)
    examples = []
    for i, ex in enumerate(tfds.as_numpy(ds)):
        where = f"{tsplit}[{i}]"
        raw = ex["label"].item()
        if fmt.label_names:
            if raw == -1:
                label = None
            elif 0 <= raw < len(fmt.label_names):
                label = fmt.label_names[raw]
            else:
                raise DataError(name, where, f"label id {raw} outside 0..{len(fmt.label_names) - 1}")
        else:
            label = None if raw == -1 else float(raw)
        examples.append(TextExample(
            guid=f"{name}/{tsplit}-{int(ex['idx'])}",
            text_a=ex[feat_a].decode("utf-8"),
            text_b=ex[feat_b].decode("utf-8") if feat_b else None,
            label=label))
    if not examples:
        raise DataError(name, tsplit, "split has no examples")
    return examples
