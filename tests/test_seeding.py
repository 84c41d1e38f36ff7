"""Every weight of a fresh model is drawn on its own, from the model's `seed`, and building a
model changes no process-wide state (tfmodels.seeding)."""
import random

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmodels import configs
from tfmodels.bert import BertCausalLM, BertEncoder, BertPretrainer
from tfmodels.gpt import GptDecoder, GptLanguageModel
from tfmodels.layers.transformer import TransformerBlock
from tfmodels.lstm import LstmDecoder, LstmLanguageModel
from tfmodels.seeding import SeedStream

BACKBONES = {"bert": (BertEncoder, "bert_test"), "gpt": (GptDecoder, "gpt_test")}


def _weights(model):
    """Weights by path within the model (Keras numbers the names of models built twice)."""
    return {w.path.split("/", 1)[1]: w.numpy() for w in model.weights}


def test_seed_stream_is_deterministic_and_distinct():
    first, second = SeedStream(3), SeedStream(3)
    seeds = [first.next() for _ in range(100)]
    assert seeds == [second.next() for _ in range(100)]
    assert len(set(seeds)) == 100
    # Neighbouring model seeds do not share shifted sequences.
    assert not set(seeds[1:]) & {SeedStream(4).next() for _ in range(100)}
    a, b = SeedStream(0).truncated_normal(0.02), SeedStream(0).truncated_normal(0.02)
    np.testing.assert_array_equal(a((4, 4)), b((4, 4)))


def test_seed_stream_reseeds_a_copy():
    base = keras.initializers.TruncatedNormal(stddev=0.02, seed=5)
    copy = SeedStream(0).reseeded(base)
    assert isinstance(copy, keras.initializers.TruncatedNormal)
    assert copy.stddev == 0.02 and copy.seed != 5
    assert isinstance(SeedStream(0).reseeded("zeros"), keras.initializers.Zeros)
    with pytest.raises(ValueError, match="seed must be an int"):
        SeedStream("7")


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_transformer_layers_start_different(kind):
    cls, name = BACKBONES[kind]
    model = cls(name)
    first, second = model.transformer_layers[0], model.transformer_layers[1]
    for a, b in zip(first.weights, second.weights):
        if "kernel" in a.path:
            assert not np.allclose(a.numpy(), b.numpy()), a.path
    # Within one layer too: the attention's qkv and output projections, the two FFN kernels.
    assert not np.allclose(first.attention.output_dense.kernel.numpy(),
                           first.output_dense.kernel.numpy()[:model.config.hidden_size])


@pytest.mark.parametrize("build", [
    lambda seed: BertEncoder("bert_test", seed=seed),
    lambda seed: BertPretrainer("bert_test", seed=seed),
    lambda seed: BertCausalLM(configs.get_config("bert_test", causal=True), seed=seed),
    lambda seed: GptDecoder("gpt_test", seed=seed),
    lambda seed: GptLanguageModel("gpt_test", seed=seed),
    lambda seed: LstmDecoder("lstm_test", seed=seed),
    lambda seed: LstmLanguageModel("lstm_test", seed=seed),
], ids=["bert", "bert_pretrainer", "bert_causal_lm", "gpt", "gpt_lm", "lstm", "lstm_lm"])
def test_same_seed_same_weights(build):
    first, again, other = _weights(build(1)), _weights(build(1)), _weights(build(2))
    assert first.keys() == again.keys()
    for path, value in first.items():
        np.testing.assert_array_equal(value, again[path], err_msg=path)
    random_weights = [p for p in first if p.endswith(("kernel", "embeddings"))]
    assert random_weights
    assert all(not np.array_equal(first[p], other[p]) for p in random_weights)


def test_same_seed_same_dropout_masks():
    cfg = configs.get_config("bert_test", hidden_dropout=0.5, attention_dropout=0.5)
    ids = {"input_ids": tf.constant([[1, 5, 6, 7, 2]])}
    first = BertEncoder(cfg, seed=3)(ids, training=True)["sequence_output"]
    again = BertEncoder(cfg, seed=3)(ids, training=True)["sequence_output"]
    np.testing.assert_array_equal(first.numpy(), again.numpy())


def test_layer_seed_survives_its_config():
    block = TransformerBlock(2, 32, kernel_initializer="truncated_normal", seed=9)
    block.build((None, None, 16))
    clone = TransformerBlock.from_config(block.get_config())
    clone.build((None, None, 16))
    for a, b in zip(block.weights, clone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_building_a_model_changes_no_global_state():
    python_state, numpy_state = random.getstate(), np.random.get_state()
    policy = keras.config.dtype_policy().name
    devices = tf.config.list_logical_devices()
    for model in (BertPretrainer("bert_test", seed=0, dtype="mixed_bfloat16"),
                  GptLanguageModel("gpt_test", seed=0), LstmLanguageModel("lstm_test", seed=0)):
        model(_inputs(model), training=True)
    assert random.getstate() == python_state
    np.testing.assert_equal(np.random.get_state(), numpy_state)
    assert keras.config.dtype_policy().name == policy
    assert tf.config.list_logical_devices() == devices


def _inputs(model):
    batch = {"input_ids": tf.constant([[1, 5, 6, 7, 2]])}
    if isinstance(model, BertPretrainer):
        batch["masked_lm_positions"] = tf.constant([[1, 2]])
    return batch


@pytest.mark.parametrize("build", [
    lambda: BertPretrainer("bert_test", seed=0, dtype="mixed_bfloat16"),
    lambda: GptLanguageModel("gpt_test", seed=0, dtype="mixed_bfloat16"),
    lambda: LstmLanguageModel("lstm_test", seed=0, dtype="mixed_bfloat16"),
], ids=["bert", "gpt", "lstm"])
def test_dtype_argument_reaches_every_layer_and_survives_saving(build, tmp_path):
    model = build()
    backbone = getattr(model, "encoder", None) or model.decoder
    assert keras.config.dtype_policy().name == "float32"
    for layer in backbone._flatten_layers():
        assert layer.dtype_policy.name == "mixed_bfloat16", layer.path
    assert backbone(_inputs(model))["sequence_output"].dtype == "bfloat16"
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.seed == 0
    loaded_backbone = getattr(loaded, "encoder", None) or loaded.decoder
    assert all(layer.dtype_policy.name == "mixed_bfloat16"
               for layer in loaded_backbone._flatten_layers())
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
