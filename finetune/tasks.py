"""The fine-tuning task registry: one TaskSpec per task of the GPT-1 and BERT papers.

A TaskSpec says what kind of head a task needs, its label set, how to read a split and how to
score predictions, so one fine-tuning binary serves every task instead of a copied loop per
dataset. `read(data_dir, split)` takes the task's data folder and "train" / "dev" / "test"
(mapped to the canonical file names in `files`), or a path to one file to read it directly
(e.g. the shared SQuAD subset, whose name is not canonical).

Metric inputs: class ids (index into `label_names`) for classification and multiple choice,
floats for regression, gold answer-text lists and predicted strings for span tasks, tag
sequences for token classification.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Mapping, Tuple

from finetune import kinds, metrics
from finetune.kinds import TaskKind
from finetune.readers import choice, common, conll, glue, squad


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything task-specific the fine-tuning code needs to know."""

    name: str
    kind: TaskKind                                    # a registered kind, or its name
    read: Callable[[str, str], List]                  # (data_dir or file, split) -> examples
    metric: Callable[..., Dict[str, float]]           # (labels, predictions) -> named numbers
    main_metric: str                                  # the number used for model selection
    files: Mapping[str, str]                          # split -> file (or folder) under data_dir
    # How papers and reports write the task; for GLUE tasks also the task's folder in the GLUE
    # distribution (glue/SST-2/train.tsv). '' for the Python API's ad-hoc tasks.
    display_name: str = ""
    label_names: Tuple[str, ...] = ()
    num_choices: int = 0
    is_pair: bool = False
    # GPT-1's semantic-similarity tasks (Table 4: MRPC, QQP, STS-B): no natural order in the
    # pair, so GPT-1 reads both orders and sums the two states (the symmetric head).
    similarity: bool = False
    # SQuAD v2.0: a question may have no answer; predictions carry a null score and a null
    # threshold (tuned on dev) decides when the answer is "".
    null_answers: bool = False

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", kinds.get_kind(self.kind))
        except ValueError as error:
            raise ValueError(f"task {self.name!r}: {error}") from None

    @property
    def num_labels(self) -> int:
        """Output units of the head: classes, 1 for regression, tags for NER."""
        return self.kind.num_labels(self)


def _reader(task: str, files: Mapping[str, str], read_file: Callable[[str, str], List]):
    """(data_dir, split) -> examples, resolving the split's file then calling read_file(path, split)."""
    def read(data_dir: str, split: str) -> List:
        return read_file(common.split_file(data_dir, split, files, task), split)
    return read


_GLUE_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


def _glue_task(name: str, display_name: str, metric, main_metric: str, is_pair: bool,
               files=_GLUE_FILES, similarity: bool = False) -> TaskSpec:
    fmt = glue.GLUE_FORMATS[name]
    read_file = lambda path, split: glue.read_glue_tsv(path, fmt, test=(split == "test"))
    return TaskSpec(
        name=name, kind=kinds.CLASSIFICATION if fmt.label_names else kinds.REGRESSION,
        display_name=display_name,
        read=_reader(name, files, read_file), metric=metric, main_metric=main_metric,
        files=dict(files), label_names=fmt.label_names, is_pair=is_pair, similarity=similarity)


def _build_registry() -> Dict[str, TaskSpec]:
    acc = metrics.accuracy
    tasks = [
        _glue_task("cola", "CoLA", metrics.matthews_corrcoef, "mcc", is_pair=False),
        _glue_task("sst2", "SST-2", acc, "accuracy", is_pair=False),
        _glue_task("mrpc", "MRPC", metrics.f1_and_accuracy, "f1", is_pair=True, similarity=True),
        _glue_task("qqp", "QQP", metrics.f1_and_accuracy, "f1", is_pair=True, similarity=True),
        _glue_task("stsb", "STS-B", metrics.pearson_spearman, "corr", is_pair=True, similarity=True),
        _glue_task("mnli", "MNLI", acc, "accuracy", is_pair=True,
                   files={"train": "train.tsv", "dev": "dev_matched.tsv", "test": "test_matched.tsv"}),
        _glue_task("mnli_mismatched", "MNLI-mm", acc, "accuracy", is_pair=True,
                   files={"train": "train.tsv", "dev": "dev_mismatched.tsv", "test": "test_mismatched.tsv"}),
        _glue_task("qnli", "QNLI", acc, "accuracy", is_pair=True),
        _glue_task("rte", "RTE", acc, "accuracy", is_pair=True),
        _glue_task("wnli", "WNLI", acc, "accuracy", is_pair=True),
        _glue_task("snli", "SNLI", acc, "accuracy", is_pair=True),
        # SciTailV1.1/tsv_format/: headerless premise \t hypothesis \t label, labelled test set.
        _glue_task("scitail", "SciTail", acc, "accuracy", is_pair=True,
                   files={s: f"scitail_1.0_{s}.tsv" for s in ("train", "dev", "test")}),
    ]
    squad_read = lambda path, split: squad.read_squad(path, require_answers=(split != "test"))
    squad1_files = {"train": "train-v1.1.json", "dev": "dev-v1.1.json"}
    squad2_files = {"train": "train-v2.0.json", "dev": "dev-v2.0.json"}
    swag_files = {"train": "train.csv", "dev": "val.csv", "test": "test.csv"}
    race_dirs = {"train": "train", "dev": "dev", "test": "test"}
    # GPT-1 trains on the 1,871-story validation file and reports on the (labelled) test file.
    cloze_files = {"train": "cloze_test_val__spring2016.csv", "test": "cloze_test_test__spring2016.csv"}
    conll_files = {"train": "eng.train", "dev": "eng.testa", "test": "eng.testb"}
    tasks += [
        TaskSpec(name="squad_v1", kind=kinds.SPAN, metric=metrics.squad_v1, main_metric="f1",
                 display_name="SQuAD v1.1", files=squad1_files, is_pair=True,
                 read=_reader("squad_v1", squad1_files, squad_read)),
        TaskSpec(name="squad_v2", kind=kinds.SPAN, metric=metrics.squad_v2, main_metric="f1",
                 display_name="SQuAD v2.0", files=squad2_files, is_pair=True, null_answers=True,
                 read=_reader("squad_v2", squad2_files, squad_read)),
        TaskSpec(name="swag", kind=kinds.MULTIPLE_CHOICE, metric=acc, main_metric="accuracy",
                 display_name="SWAG", files=swag_files, num_choices=4, is_pair=True,
                 read=_reader("swag", swag_files,
                              lambda p, s: choice.read_swag(p, require_label=(s != "test")))),
        TaskSpec(name="race", kind=kinds.MULTIPLE_CHOICE, metric=acc, main_metric="accuracy",
                 display_name="RACE", files=race_dirs, num_choices=4, is_pair=True,
                 read=_reader("race", race_dirs,
                              lambda p, s: choice.read_race(p, require_label=(s != "test")))),
        TaskSpec(name="story_cloze", kind=kinds.MULTIPLE_CHOICE, metric=acc, main_metric="accuracy",
                 display_name="Story Cloze", files=cloze_files, num_choices=2, is_pair=True,
                 read=_reader("story_cloze", cloze_files,
                              lambda p, s: choice.read_story_cloze(p, require_label=(s != "test")))),
        # Read as IOB2 (every entity starts with B-) so the tag classifier sees entity starts;
        # the conlleval-style metric scores IOB1 and IOB2 identically.
        TaskSpec(name="conll2003", kind=kinds.TAGGING, metric=metrics.ner_f1,
                 main_metric="f1", display_name="CoNLL-2003", files=conll_files,
                 label_names=conll.CONLL2003_TAGS,
                 read=_reader("conll2003", conll_files,
                              lambda p, s: conll.read_conll(p, to_iob2=True))),
    ]
    return {t.name: t for t in tasks}


TASKS: Dict[str, TaskSpec] = _build_registry()


def register_task(task: TaskSpec) -> TaskSpec:
    """Adds `task` to the registry (the fine-tuning binary's --task, exports, the API)."""
    known = TASKS.get(task.name)
    if known is not None and known != task:
        raise ValueError(f"a different task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> TaskSpec:
    """The registered task `name`; ValueError listing the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None
