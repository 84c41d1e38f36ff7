"""One text path: for the real GLUE, SQuAD, Story Cloze and CoNLL files, the rows fine-tuning
builds (finetune.features) equal the rows an exported SavedModel builds from the same raw
strings (its `preprocess` signature, reloaded from disk), for BERT and GPT-1.

The default suite checks the first ROWS examples of every file; `-m slow` checks every example.
Exported rows are only as wide as each request's longest; the features' extra columns must be
padding.
"""
import numpy as np
import pytest
import tensorflow as tf

from finetune import export
from finetune.features import encode_examples
from finetune.models import build_task_model
from finetune.readers import squad as squad_reader
from finetune.tasks import get_task
from tfmodels import configs
from tfmodels.bert import BertEncoder
from tfmodels.gpt import GptDecoder

ROWS = 200
CHUNK = 256
GLUE = {"sst2": "SST-2", "cola": "CoLA", "mrpc": "MRPC", "rte": "RTE", "stsb": "STS-B",
        "wnli": "WNLI"}
# (family, task, seq_length): every kind each family serves; GPT-1 STS-B / MRPC use both orders.
CASES = [("bert", t, 128) for t in GLUE] + [
    ("bert", "story_cloze", 96), ("bert", "conll2003", 128), ("bert", "squad_v1", 192),
    ("gpt", "sst2", 64), ("gpt", "rte", 128), ("gpt", "stsb", 128), ("gpt", "mrpc", 128),
    ("gpt", "story_cloze", 96)]


@pytest.fixture(scope="module")
def tokenizers(wordpiece, gpt_bpe):
    return {"bert": wordpiece, "gpt": gpt_bpe}


def read_examples(shared_data, task):
    if task in GLUE:
        return get_task(task).read(str(shared_data / "glue" / GLUE[task]), "train")
    if task == "story_cloze":
        return get_task(task).read(str(shared_data / "storycloze"), "train")
    if task == "conll2003":
        return get_task(task).read(str(shared_data / "conll2003"), "train")
    return squad_reader.read_squad(str(shared_data / "squad/train-v1.1-subset.json"))


def request(task_spec, examples):
    """The raw strings a client sends serving_default for these examples."""
    kind = task_spec.kind.name
    if kind in ("classification", "regression"):
        if task_spec.is_pair:
            return {"text_a": [e.text_a for e in examples], "text_b": [e.text_b for e in examples]}
        return {"text": [e.text_a for e in examples]}
    if kind == "multiple_choice":
        return {"context": [e.context for e in examples], "question": [e.question for e in examples],
                "endings": [list(e.endings) for e in examples]}
    if kind == "token_classification":
        return {"sentence": [" ".join(e.words) for e in examples]}
    return {"question": [e.question for e in examples], "context": [e.context for e in examples]}


def exported_preprocess(tmp_path, family, task_spec, tokenizer, seq_length):
    if family == "bert":
        backbone = BertEncoder(configs.get_config("bert_test", vocab_size=tokenizer.vocab_size,
                                                  max_positions=seq_length))
    else:
        backbone = GptDecoder(configs.get_config("gpt_test", vocab_size=tokenizer.vocab_size,
                                                 max_positions=seq_length))
    model = build_task_model(task_spec, backbone, family)
    path = export.export_saved_model(model, task_spec, tokenizer, str(tmp_path), task_spec.name,
                                     seq_length, warmup=False)
    return tf.saved_model.load(path).signatures[export.PREPROCESS_SIGNATURE]


def check_same_rows(features, served, rows, where):
    for key, served_value in served.items():
        ours = features.arrays[key][rows]
        served_value = served_value.numpy()
        if ours.ndim == served_value.ndim and key != "classify_position":
            width = served_value.shape[-1]
            assert not ours[..., width:].any(), f"{where} {key}: real tokens past width {width}"
            ours = ours[..., :width]
        np.testing.assert_array_equal(ours, served_value, err_msg=f"{where} {key}")


def run_case(shared_data, tmp_path, tokenizers, family, task, seq_length, limit):
    task_spec = get_task(task)
    examples = read_examples(shared_data, task)[:limit]
    options = {}
    if task_spec.kind.name == "span":
        options = {"doc_stride": 128, "max_query_length": 64}
    elif family == "gpt" and task_spec.kind.name in ("classification", "regression"):
        options = {"symmetric": task in ("stsb", "mrpc", "qqp")}
    features = encode_examples(examples, task_spec.kind, family, tokenizers[family], seq_length,
                               label_names=task_spec.label_names, **options)
    preprocess = exported_preprocess(tmp_path, family, task_spec, tokenizers[family], seq_length)
    if task_spec.kind.name == "span":
        # Serving reads one window: compare the questions whose context fits in one.
        index = features.arrays["example_index"]
        single = [i for i in range(len(examples)) if (index == i).sum() == 1]
        assert len(single) > len(examples) // 4, "too few one-window SQuAD examples to compare"
        row_of = {int(e): r for r, e in enumerate(index)}
        examples_rows = [(examples[i], row_of[i]) for i in single]
    else:
        examples_rows = [(e, r) for r, e in enumerate(examples)]
    for start in range(0, len(examples_rows), CHUNK):
        chunk = examples_rows[start:start + CHUNK]
        served = preprocess(**{k: tf.constant(v) for k, v in
                               request(task_spec, [e for e, _ in chunk]).items()})
        check_same_rows(features, served, np.array([r for _, r in chunk]),
                        f"{family} {task} examples {start}..{start + len(chunk)}")


# The default suite: one case per (family, kind, layout) on the first ROWS examples.
QUICK = [c for c in CASES if c[:2] in {("bert", "sst2"), ("bert", "mrpc"), ("bert", "story_cloze"),
                                       ("bert", "conll2003"), ("bert", "squad_v1"),
                                       ("gpt", "rte"), ("gpt", "stsb"), ("gpt", "story_cloze")}]


@pytest.mark.parametrize("family,task,seq_length", QUICK)
def test_training_rows_equal_exported_rows(shared_data, tmp_path, tokenizers, family, task,
                                           seq_length):
    run_case(shared_data, tmp_path, tokenizers, family, task, seq_length, ROWS)


@pytest.mark.slow
@pytest.mark.parametrize("family,task,seq_length", CASES)
def test_training_rows_equal_exported_rows_every_example(shared_data, tmp_path, tokenizers,
                                                         family, task, seq_length):
    run_case(shared_data, tmp_path, tokenizers, family, task, seq_length, None)
