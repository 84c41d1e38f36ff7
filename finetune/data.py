"""A fine-tuning run's data: the task's train, evaluation (dev file, or a held-out tail of
train) and test splits, read once and encoded once for every run of a sweep, and the
length-bucketed training dataset."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, List, Optional, Tuple

import tensorflow as tf

from finetune import batching
from finetune.config import FinetuneConfig
from finetune.features import EncodedFeatures, encode_examples
from finetune.readers.common import holdout_split
from finetune.tasks import TaskSpec

@dataclasses.dataclass
class Split:
    """One split's examples (for metrics and prediction files) and their encoded features."""

    examples: List[Any]
    features: EncodedFeatures


@dataclasses.dataclass
class TaskData:
    """The encoded splits of one sweep, read once and shared by every run."""

    train: Split
    eval: Split
    test: Optional[Split]
    eval_source: str   # "dev" or "holdout"


def _has_split(config: FinetuneConfig, task: TaskSpec, split: str) -> bool:
    return (os.path.isdir(config.data_dir) and split in task.files
            and os.path.exists(os.path.join(config.data_dir, task.files[split])))


def train_and_eval_examples(config: FinetuneConfig, task: TaskSpec, train: List[Any],
                            dev: Optional[List[Any]] = None) -> Tuple[List[Any], List[Any]]:
    """(training, evaluation) examples: the dev file's when there is one, else the held-out
    last `holdout_fraction` of train. `max_train_examples` caps training before the cut, or
    after it with `holdout_before_cap` (so the held-out slice does not shrink with the cap);
    `max_eval_examples` caps evaluation."""
    holdout_first = config.holdout_before_cap and dev is None
    if not holdout_first:
        train = train[:config.max_train_examples or None]
    if dev is None:
        train, dev = holdout_split(train, config.holdout_fraction,
                                   group=task.kind.holdout_group())
        if holdout_first:
            train = train[:config.max_train_examples or None]
    if config.max_eval_examples:
        dev = dev[:config.max_eval_examples]
    return train, dev


def load_task_data(config: FinetuneConfig, task: TaskSpec, tokenizer,
                   log: Callable[[str], None] = print) -> TaskData:
    """Reads and encodes train, eval (dev file or held-out tail of train) and test."""
    if config.data_source == "tfds":
        from finetune.readers import tfds as tfds_reader
        read = lambda split: tfds_reader.read_tfds_glue(task.name, split, config.tfds_data_dir,
                                                        task.label_names)
        has_split = lambda split: tfds_reader.has_split(task.name, split, config.tfds_data_dir)
    else:
        if not os.path.exists(config.data_dir):
            raise FileNotFoundError(f"data_dir {config.data_dir} does not exist")
        read = lambda split: task.read(config.data_dir, split)
        has_split = lambda split: _has_split(config, task, split)
    where = (f"TFDS {config.tfds_data_dir or '(default data_dir)'}"
             if config.data_source == "tfds" else config.data_dir)
    has_dev = has_split("dev")
    source = "dev" if has_dev else "holdout"
    train, dev = train_and_eval_examples(config, task, read("train"),
                                         read("dev") if has_dev else None)
    if not train or not dev:
        raise ValueError(f"{where}: {len(train)} training and {len(dev)} evaluation "
                         f"examples; both must be non-empty")
    test = None
    if config.predict_test and has_split("test"):
        test = read("test")

    options = task.kind.encode_options(task, config.input_format, config)

    def encode(examples):
        return Split(examples, encode_examples(
            examples, task.kind, config.input_format, tokenizer, config.seq_length,
            label_names=task.label_names, **options))

    data = TaskData(encode(train), encode(dev), encode(test) if test else None, source)
    log(f"{task.name}: {len(train)} train examples ({len(data.train.features)} features), "
        f"{len(dev)} {source} examples, {len(test) if test else 0} test examples")
    for name, split in (("training", data.train), (source, data.eval)):
        if not split.features.label_keys:
            raise ValueError(f"the {name} examples of {task.name} in {where} have no "
                             "labels (is it a test file?)")
    return data


def train_dataset(features: EncodedFeatures, batch_size: int, seed: int,
                  pad_to_max_length: bool = False) -> tf.data.Dataset:
    """Inputs + labels, shuffled with `seed`, repeated, batches of `batch_size` rows grouped by
    length and trimmed to their longest (finetune.batching; pad_to_max_length: seq_length)."""
    return batching.train_dataset({**features.inputs(), **features.labels()}, batch_size, seed,
                                  pad_to_max_length)
