"""GLUE (and SNLI) from TensorFlow Datasets: a dataset prepared with TFDS elsewhere, read into
the same TextExamples as the TSV reader (finetune.readers.glue).

    bert-gpt-finetune --task=mrpc --data_source=tfds --tfds_data_dir=~/tensorflow_datasets ...

Only prepared data is read (`builder.as_dataset`); nothing is downloaded: prepare it with
`tfds build glue/mrpc` (or `tfds.builder("glue/mrpc").download_and_prepare()`) on a machine that
may download. Labels become the names the TSV reader gives: TFDS keeps the GLUE files' label as a
class name where the files have names (MNLI, QNLI, RTE, SNLI) and as the class index where they
have 0/1 (CoLA, SST-2, MRPC, QQP, WNLI), so a class name we know is kept and otherwise its index
is the label. Test splits have label -1 (unlabelled); SNLI's -1 in train/dev marks pairs without
annotator consensus, dropped as the TSV reader drops "-".
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

from finetune.examples import TextExample


@dataclasses.dataclass(frozen=True)
class TfdsTask:
    name: str                    # TFDS dataset/config
    text_a: str                  # feature names
    text_b: Optional[str] = None
    splits: Dict[str, str] = dataclasses.field(
        default_factory=lambda: {"train": "train", "dev": "validation", "test": "test"})


TFDS_TASKS: Dict[str, TfdsTask] = {
    "cola": TfdsTask("glue/cola", "sentence"),
    "sst2": TfdsTask("glue/sst2", "sentence"),
    "mrpc": TfdsTask("glue/mrpc", "sentence1", "sentence2"),
    "qqp": TfdsTask("glue/qqp", "question1", "question2"),
    "stsb": TfdsTask("glue/stsb", "sentence1", "sentence2"),
    "mnli": TfdsTask("glue/mnli", "premise", "hypothesis",
                     {"train": "train", "dev": "validation_matched", "test": "test_matched"}),
    "mnli_mismatched": TfdsTask("glue/mnli", "premise", "hypothesis",
                                {"train": "train", "dev": "validation_mismatched",
                                 "test": "test_mismatched"}),
    "qnli": TfdsTask("glue/qnli", "question", "sentence"),
    "rte": TfdsTask("glue/rte", "sentence1", "sentence2"),
    "wnli": TfdsTask("glue/wnli", "sentence1", "sentence2"),
    "snli": TfdsTask("snli", "premise", "hypothesis"),
}


def tfds_task(task: str) -> TfdsTask:
    if task not in TFDS_TASKS:
        raise ValueError(f"task {task!r} has no TFDS reader; data_source=tfds reads "
                         f"{', '.join(sorted(TFDS_TASKS))}")
    return TFDS_TASKS[task]


def _builder(spec: TfdsTask, data_dir: str):
    import tensorflow_datasets as tfds
    return tfds.builder(spec.name, data_dir=data_dir or None)


def has_split(task: str, split: str, data_dir: str = "") -> bool:
    """Whether the prepared dataset has `split` ("train" / "dev" / "test"); a dataset whose
    split list is unknown (TFDS' mock data) is taken to have the task's splits."""
    spec = tfds_task(task)
    if split not in spec.splits:
        return False
    known = _builder(spec, data_dir).info.splits
    return not known or spec.splits[split] in known


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_tfds_glue(task: str, split: str, data_dir: str = "",
                   label_names=()) -> List[TextExample]:
    """The TextExamples of a prepared TFDS GLUE task's split ("train" / "dev" / "test").

    label_names: the task's class names (finetune.tasks), () for regression (STS-B).
    """
    spec = tfds_task(task)
    if split not in spec.splits:
        raise ValueError(f"task {task!r} has no {split!r} split in TFDS; known: "
                         f"{sorted(spec.splits)}")
    builder = _builder(spec, data_dir)
    try:
        dataset = builder.as_dataset(split=spec.splits[split], shuffle_files=False)
    except AssertionError as error:  # TFDS' "not found ... call download_and_prepare()"
        raise FileNotFoundError(
            f"TFDS dataset {spec.name} is not prepared in "
            f"{data_dir or 'the default TFDS data_dir'}: run `tfds build {spec.name} "
            f"--data_dir=...` where downloads are allowed ({error})") from None
    label_feature = builder.info.features["label"]
    class_names = list(getattr(label_feature, "names", None) or [])
    examples = []
    for row in dataset.as_numpy_iterator():
        guid = f"{spec.name}/{spec.splits[split]}:{int(row.get('idx', len(examples)))}"
        raw = row["label"]
        if not label_names:
            label = float(raw) if split != "test" else None
        elif int(raw) < 0:
            if split != "test":
                continue  # SNLI: no annotator consensus
            label = None
        else:
            name = class_names[int(raw)] if class_names else str(int(raw))
            label = name if name in label_names else str(int(raw))
            if label not in label_names:
                raise ValueError(f"{guid}: label {name!r} (class {int(raw)}) is not one of "
                                 f"{list(label_names)}")
        examples.append(TextExample(guid, _text(row[spec.text_a]),
                                    _text(row[spec.text_b]) if spec.text_b else None, label))
    if not examples:
        raise ValueError(f"TFDS {spec.name} split {spec.splits[split]} holds no examples")
    return examples
