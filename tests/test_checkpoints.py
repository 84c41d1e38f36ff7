"""Converters with numerical parity against real weights and reference fixtures.

Fixtures come from `python -m tools.make_parity_fixtures` (torch + transformers); these tests
need neither.
"""
import json
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file, save_file

from tfmodels import configs
from tfmodels.bert import BertEncoder, BertPretrainer
from tfmodels.checkpoints import slots as slot_lib
from tfmodels.checkpoints.hf_bert import load_hf_bert, save_hf_bert
from tfmodels.checkpoints.hf_gpt import load_hf_gpt
from tfmodels.checkpoints.keras_hub_bert import from_keras_hub, to_keras_hub
from tfmodels.checkpoints.openai_gpt import config_from_shapes, load_openai_gpt, read_shapes
from tfmodels.checkpoints.tf1_bert import canonical_to_tf1, load_tf1_bert

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    model, vocab = load_hf_bert(str(minilm_dir))
    return model, vocab


@pytest.fixture(scope="module")
def reference():
    data = np.load(FIXTURES / "minilm_reference.npz")
    inputs = {k: data[k] for k in ("input_ids", "segment_ids", "input_mask")}
    return inputs, data["sequence_output"], data["pooled_output"]


def max_diff(a, b, mask=None):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a[mask] - b[mask]).max() if mask is not None else np.abs(a - b).max())


def test_minilm_matches_transformers(minilm, reference):
    model, _ = minilm
    inputs, sequence, pooled = reference
    assert isinstance(model, BertEncoder) and model.config.gelu_approximate is False
    out = model(inputs)
    real = inputs["input_mask"].astype(bool)
    seq_diff = max_diff(out["sequence_output"], sequence, real)
    pooled_diff = max_diff(out["pooled_output"], pooled)
    print(f"MiniLM vs transformers BertModel: sequence {seq_diff:.2e}, pooled {pooled_diff:.2e}")
    assert seq_diff <= 1e-4 and pooled_diff <= 1e-4


def tanh_gelu_copy(model):
    """The same weights in an encoder computing the tanh GELU (what keras-hub and
    google-research/bert compute)."""
    copy = BertEncoder(model.config.replace(gelu_approximate=True))
    slot_lib.assign(slot_lib.bert_slots(copy), slot_lib.read_slots(slot_lib.bert_slots(model)),
                    "copy")
    return copy


def test_keras_hub_backbone_matches(minilm, reference):
    model, _ = minilm
    inputs, _, _ = reference
    ours = tanh_gelu_copy(model)
    backbone = to_keras_hub(model)
    theirs = backbone({"token_ids": inputs["input_ids"], "segment_ids": inputs["segment_ids"],
                       "padding_mask": inputs["input_mask"]})
    out = ours(inputs)
    real = inputs["input_mask"].astype(bool)
    seq_diff = max_diff(theirs["sequence_output"], out["sequence_output"], real)
    pooled_diff = max_diff(theirs["pooled_output"], out["pooled_output"])
    print(f"ours vs keras-hub BertBackbone: sequence {seq_diff:.2e}, pooled {pooled_diff:.2e}")
    assert seq_diff <= 1e-5 and pooled_diff <= 1e-5
    back = from_keras_hub(backbone)
    np.testing.assert_array_equal(back(inputs)["sequence_output"], out["sequence_output"])


def test_hf_round_trip_is_bit_exact(minilm, minilm_dir, tmp_path):
    model, vocab = minilm
    save_hf_bert(model, vocab, str(tmp_path / "out"))
    original = load_file(str(minilm_dir / "model.safetensors"))
    written = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(written) == set(original) - {"embeddings.position_ids"}
    for name, value in written.items():
        np.testing.assert_array_equal(value, original[name], err_msg=name)
    reloaded, _ = load_hf_bert(str(tmp_path / "out"))
    assert reloaded.config == model.config


def test_pretraining_heads_round_trip(tmp_path, shared_data):
    vocab = shared_data / "bert_vocab/bert-base-uncased-vocab.txt"
    model = BertPretrainer(configs.get_config("bert_tiny"))
    save_hf_bert(model, str(vocab), str(tmp_path / "hf"))
    names = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert "cls.seq_relationship.weight" in names and "bert.pooler.dense.weight" in names
    loaded, _ = load_hf_bert(str(tmp_path / "hf"))
    assert isinstance(loaded, BertPretrainer)
    for name, value in slot_lib.read_slots(slot_lib.bert_slots(model)).items():
        np.testing.assert_array_equal(slot_lib.read_slots(slot_lib.bert_slots(loaded))[name],
                                      value, err_msg=name)


def test_causal_bert_round_trips_as_hf_is_decoder(tmp_path, shared_data):
    # HF BERT's is_decoder is the same left-to-right mask (checked against transformers
    # when this was written: max difference 7e-7).
    vocab = shared_data / "bert_vocab/bert-base-uncased-vocab.txt"
    model = BertEncoder(configs.get_config("bert_test", vocab_size=30522, causal=True))
    save_hf_bert(model, str(vocab), str(tmp_path / "hf"))
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["is_decoder"] is True
    loaded, _ = load_hf_bert(str(tmp_path / "hf"))
    assert loaded.config == model.config


def write_tf1_checkpoint(variables, prefix):
    """A TF1-layout checkpoint: tf.compat.v1 variables with the original names, Saver."""
    with tf.Graph().as_default():
        tf_vars = [tf.compat.v1.Variable(value, name=name) for name, value in variables.items()]
        saver = tf.compat.v1.train.Saver(tf_vars)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix, write_meta_graph=False)


@pytest.mark.parametrize("with_heads", [False, True])
def test_tf1_checkpoint_from_minilm_converts_back_exactly(minilm, reference, tmp_path,
                                                          with_heads):
    model, vocab = minilm
    arrays = slot_lib.read_slots(slot_lib.bert_slots(model))
    if with_heads:
        heads = BertPretrainer(model.config)
        arrays.update({k: v for k, v in slot_lib.read_slots(slot_lib.bert_slots(heads)).items()
                       if k.startswith(("mlm/", "nsp/"))})
    folder = tmp_path / "tf1"
    folder.mkdir()
    write_tf1_checkpoint(canonical_to_tf1(arrays, model.config.num_layers),
                         str(folder / "bert_model.ckpt"))
    stored = tf.train.load_checkpoint(str(folder / "bert_model.ckpt")).get_variable_to_shape_map()
    assert "bert/encoder/layer_5/attention/self/query/kernel" in stored
    assert ("cls/seq_relationship/output_weights" in stored) == with_heads
    shutil.copyfile(vocab, folder / "vocab.txt")
    (folder / "bert_config.json").write_text(json.dumps({
        "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
        "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu",
        "max_position_embeddings": 512, "type_vocab_size": 2}))
    converted, _ = load_tf1_bert(str(folder))
    assert isinstance(converted, BertPretrainer) == with_heads
    for name, value in slot_lib.read_slots(slot_lib.bert_slots(converted)).items():
        np.testing.assert_array_equal(value, arrays[name], err_msg=name)
    inputs, _, _ = reference
    encoder = converted.encoder if with_heads else converted
    np.testing.assert_array_equal(encoder(inputs)["sequence_output"],
                                  tanh_gelu_copy(model)(inputs)["sequence_output"])


@pytest.fixture(scope="module")
def gpt_reference():
    data = np.load(FIXTURES / "tiny_openai_gpt" / "reference.npz")
    return data["input_ids"], data["logits"]


@pytest.mark.parametrize("source", ["npy", "hf"])
def test_gpt_matches_transformers(gpt_reference, source):
    folder = FIXTURES / "tiny_openai_gpt" / source
    model = load_openai_gpt(str(folder), num_heads=4) if source == "npy" else load_hf_gpt(
        str(folder))
    input_ids, logits = gpt_reference
    ours = model({"input_ids": input_ids})["logits"].numpy()
    assert ours.shape[-1] == logits.shape[-1] + 3  # plus start / delimiter / classify
    diff = max_diff(ours[..., :logits.shape[-1]], logits)
    print(f"GPT-1 ({source}) vs transformers OpenAIGPTLMHeadModel logits: {diff:.2e}")
    assert diff <= 1e-5


def test_real_gpt1_shapes_list(shared_data):
    cfg = config_from_shapes(read_shapes(str(shared_data / "gpt1_openai")))
    gpt1 = configs.get_config("gpt1")
    assert (cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.max_positions,
            cfg.vocab_size) == (12, 768, 3072, 512, 40478 + 3)
    assert cfg == gpt1.replace(hidden_dropout=cfg.hidden_dropout)


def copy_minilm(minilm_dir, destination):
    shutil.copytree(minilm_dir, destination,
                    ignore=shutil.ignore_patterns("1_Pooling", "*.md", "tokenizer*"))
    return destination


def test_vocab_size_mismatch_is_reported(minilm_dir, tmp_path):
    folder = copy_minilm(minilm_dir, tmp_path / "m")
    lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (folder / "vocab.txt").write_text("\n".join(lines[:-10]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab_size: 30512 in .*vocab.txt, 30522 expected"):
        load_hf_bert(str(folder))


def test_missing_unexpected_and_shape_errors_listed_together(minilm_dir, tmp_path):
    folder = copy_minilm(minilm_dir, tmp_path / "m")
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["encoder.layer.3.output.dense.weight"]
    tensors["encoder.layer.9.extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ValueError) as error:
        load_hf_bert(str(folder))
    message = str(error.value)
    assert "encoder.layer.3.output.dense.weight" in message
    assert "encoder.layer.9.extra.weight" in message and "model.safetensors" in message


def test_layer_count_and_hidden_size_mismatch(minilm_dir, tmp_path):
    folder = copy_minilm(minilm_dir, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config.update(num_hidden_layers=7, hidden_size=768, intermediate_size=3072)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as error:
        load_hf_bert(str(folder))
    assert "encoder.layer.6" in str(error.value)  # the 7th layer is missing
    config.update(num_hidden_layers=6)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"shape \(30522, 384\) in the checkpoint, \(30522, 768\)"):
        load_hf_bert(str(folder))


def test_failed_export_leaves_nothing(minilm, tmp_path):
    model, vocab = minilm
    short_vocab = tmp_path / "vocab.txt"
    short_vocab.write_text("[PAD]\n[UNK]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="vocab_size"):
        save_hf_bert(model, str(short_vocab), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".converting-*"))


def test_convert_tool_hf_to_keras_and_back(minilm_dir, reference, tmp_path):
    import keras
    from tools.convert_checkpoint import convert
    convert("hf_bert", "keras", str(minilm_dir), str(tmp_path / "k"))
    assert (tmp_path / "k" / "vocab.txt").exists()
    loaded = keras.saving.load_model(tmp_path / "k" / "model.keras")
    convert("keras", "hf_bert", str(tmp_path / "k" / "model.keras"), str(tmp_path / "hf"),
            vocab_file=str(tmp_path / "k" / "vocab.txt"))
    original = load_file(str(minilm_dir / "model.safetensors"))
    for name, value in load_file(str(tmp_path / "hf" / "model.safetensors")).items():
        np.testing.assert_array_equal(value, original[name])
    with pytest.raises(ValueError, match="needs a BERT"):
        convert("hf_gpt", "hf_bert", str(FIXTURES / "tiny_openai_gpt" / "hf"),
                str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()
    inputs, sequence, _ = reference
    real = inputs["input_mask"].astype(bool)
    assert max_diff(loaded(inputs)["sequence_output"], sequence, real) <= 1e-4
