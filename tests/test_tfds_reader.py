"""GLUE from TensorFlow Datasets (finetune.readers.tfds), on tfds.testing.mock_data: every task
reads, labels map to the TSV reader's names, and fine-tuning runs with --data_source=tfds."""
import json

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from finetune.readers.tfds import TFDS_TASKS, has_split, read_tfds_glue
from finetune.tasks import get_task
from tests.support import finetune_config


@pytest.mark.parametrize("task", sorted(TFDS_TASKS))
def test_every_glue_task_reads_from_tfds(task):
    spec = get_task(task)
    with tfds.testing.mock_data(num_examples=6):
        for split in ("train", "dev", "test"):
            assert has_split(task, split)
            examples = read_tfds_glue(task, split, label_names=spec.label_names)
            assert examples and all(isinstance(e.text_a, str) for e in examples)
            assert all((e.text_b is not None) == spec.is_pair for e in examples)
            labels = [e.label for e in examples]
            if split == "test" and not spec.label_names:
                assert labels == [None] * len(examples)
            elif spec.label_names:
                assert set(labels) <= set(spec.label_names) | {None}
            else:
                assert all(isinstance(y, float) for y in labels)


def _fake_split(rows):
    """An as_dataset_fn serving `rows` (a dict of columns) for every split."""
    def as_dataset(self, split, **kwargs):
        labels = rows["label"]
        if split.startswith("test"):
            labels = [-1] * len(labels)
        return tf.data.Dataset.from_tensor_slices({**rows, "label": labels})
    return as_dataset


@pytest.mark.parametrize("task, tfds_labels, expected", [
    ("sst2", [0, 1], ["0", "1"]),                       # negative, positive -> the TSV's 0 / 1
    ("wnli", [0, 1], ["0", "1"]),                       # not_entailment, entailment
    ("mnli", [2, 0, 1], ["contradiction", "entailment", "neutral"]),   # by name
    ("rte", [1, 0], ["not_entailment", "entailment"]),
])
def test_labels_are_the_tsv_readers_names(task, tfds_labels, expected):
    features = TFDS_TASKS[task]
    n = len(tfds_labels)
    rows = {features.text_a: [f"first {i}" for i in range(n)], "label": tfds_labels,
            "idx": list(range(n))}
    if features.text_b:
        rows[features.text_b] = [f"second {i}" for i in range(n)]
    with tfds.testing.mock_data(as_dataset_fn=_fake_split(rows)):
        examples = read_tfds_glue(task, "train", label_names=get_task(task).label_names)
        test = read_tfds_glue(task, "test", label_names=get_task(task).label_names)
    assert [e.label for e in examples] == expected
    assert examples[1].text_a == "first 1" and examples[1].guid.endswith(":1")
    assert [e.label for e in test] == [None] * n


def test_snli_pairs_without_consensus_are_dropped():
    rows = {"premise": ["a", "b", "c"], "hypothesis": ["x", "y", "z"], "label": [0, -1, 2]}
    with tfds.testing.mock_data(as_dataset_fn=_fake_split(rows)):
        examples = read_tfds_glue("snli", "train", label_names=get_task("snli").label_names)
    assert [(e.text_a, e.label) for e in examples] == [("a", "entailment"), ("c", "contradiction")]


def test_unprepared_dataset_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="glue/cola is not prepared"):
        read_tfds_glue("cola", "train", str(tmp_path), label_names=("0", "1"))
    with pytest.raises(ValueError, match="no TFDS reader"):
        read_tfds_glue("squad_v1", "train")


def test_finetuning_reads_tfds(tmp_path):
    from finetune.trainer import FinetuneConfig, run_finetune
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghij"])
                     + "\n")
    config = finetune_config(task="sst2", model="bert", model_config="bert_test",
                            vocab_file=str(vocab), data_source="tfds",
                            tfds_data_dir=str(tmp_path / "tfds"), output_dir=str(tmp_path / "run"),
                            seq_length=16, train_batch_size=4, train_steps=2,
                            learning_rates=(1e-3,), save_model=False)
    with tfds.testing.mock_data(num_examples=12):
        results = run_finetune(config, log=lambda m: None)
    assert results["eval_source"] == "dev" and results["num_eval_examples"] == 12
    assert results["num_test_examples"] == 12
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["config"]["data_source"] == "tfds"
    with pytest.raises(ValueError, match="no TFDS reader"):
        finetune_config(task="squad_v1", data_source="tfds", output_dir="x")
