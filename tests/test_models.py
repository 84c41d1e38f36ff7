"""Model tests: sizes from the papers, masks, causality, padding invariance, serialisation,
distribution, XLA and mixed precision (tiny configs, CPU)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmodels import configs
from tfmodels.bert import BertCausalLM, BertEncoder, BertPretrainer
from tfmodels.gpt import GptDecoder, GptLanguageModel
from tfmodels.layers.attention import MultiHeadSelfAttention, causal_mask, padding_mask
from tfmodels.layers.embeddings import PositionEmbedding, TiedEmbedding
from tfmodels.layers.heads import MaskedLMHead
from tfmodels.layers.transformer import TransformerBlock
from tfmodels.losses import bert_pretraining_loss, gpt_pretraining_loss
from tfmodels.optimization import create_optimizer
from tfmodels.training import TrainStep

VOCAB = 100


def bert_batch(batch=4, seq=16, predictions=3, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq // 2, seq + 1, size=batch)
    input_mask = (np.arange(seq)[None, :] < lengths[:, None]).astype("int32")
    return {
        "input_ids": (rng.integers(5, VOCAB, size=(batch, seq)) * input_mask).astype("int32"),
        "segment_ids": ((np.arange(seq)[None, :] > lengths[:, None] // 2) * input_mask
                        ).astype("int32"),
        "input_mask": input_mask,
        "masked_lm_positions": rng.integers(1, seq // 2, size=(batch, predictions)
                                            ).astype("int32"),
        "masked_lm_ids": rng.integers(5, VOCAB, size=(batch, predictions)).astype("int32"),
        "masked_lm_weights": np.ones((batch, predictions), "float32"),
        "next_sentence_labels": rng.integers(0, 2, size=(batch,)).astype("int32"),
    }


def gpt_batch(batch=4, seq=16, seed=0):
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, VOCAB, size=(batch, seq)).astype("int32")}


# Parameter counts. The papers round: BERT-base "110M", BERT-large "340M", GPT-1 "117M".
# Encoders include the pooler; GPT-1 includes the 3 added token rows.
@pytest.mark.parametrize("name, expected, paper", [
    ("bert_base", 109_482_240, 110e6),
    ("bert_large", 335_141_888, 340e6),
    ("gpt1", 116_537_088, 117e6),
])
def test_parameter_counts_match_the_papers(name, expected, paper):
    model = BertEncoder(name) if name.startswith("bert") else GptDecoder(name)
    count = model.count_params()
    assert count == expected
    assert abs(count - paper) / paper < 0.02


def test_small_bert_sizes():
    # Turc et al. compact models: depth x width as named.
    for name, (layers, hidden) in {"bert_tiny": (2, 128), "bert_mini": (4, 256),
                                   "bert_small": (4, 512), "bert_medium": (8, 512)}.items():
        cfg = configs.get_config(name)
        assert (cfg.num_layers, cfg.hidden_size, cfg.intermediate_size) == (
            layers, hidden, 4 * hidden)


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="not divisible"):
        configs.BertConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="unknown model config"):
        configs.get_config("bert_huge")
    cfg = configs.get_config("gpt1")
    assert configs.config_from_dict(configs.config_to_dict(cfg)) == cfg
    assert cfg.vocab_size == 40481 and cfg.layer_norm_epsilon == 1e-5
    assert configs.get_config("bert_base").layer_norm_epsilon == 1e-12


def test_gpt_is_causal():
    model = GptLanguageModel("gpt_test")
    ids = gpt_batch(batch=2, seq=12)["input_ids"]
    reference = model({"input_ids": ids})["logits"].numpy()
    for t in range(ids.shape[1] - 1):
        changed = ids.copy()
        changed[:, t + 1:] = (changed[:, t + 1:] + 7) % VOCAB
        out = model({"input_ids": changed})["logits"].numpy()
        # Positions <= t see only unchanged tokens: bit-identical.
        np.testing.assert_array_equal(out[:, :t + 1], reference[:, :t + 1])
        assert not np.allclose(out[:, t + 1], reference[:, t + 1])


def test_causal_bert_sees_only_the_past():
    assert not configs.BertConfig().causal and not configs.get_config("bert_base").causal
    batch = bert_batch(batch=2, seq=12)
    inputs = {k: np.ones_like(batch[k]) if k == "input_mask" else batch[k]
              for k in ("input_ids", "segment_ids", "input_mask")}
    causal = BertEncoder(configs.get_config("bert_test", causal=True))
    bidirectional = BertEncoder("bert_test")
    reference = causal(inputs)["sequence_output"].numpy()
    reference_bi = bidirectional(inputs)["sequence_output"].numpy()
    for t in range(11):
        changed = dict(inputs, input_ids=inputs["input_ids"].copy())
        changed["input_ids"][:, t + 1:] = (changed["input_ids"][:, t + 1:] + 7) % VOCAB
        out = causal(changed)["sequence_output"].numpy()
        np.testing.assert_array_equal(out[:, :t + 1], reference[:, :t + 1])
        assert not np.allclose(out[:, t + 1], reference[:, t + 1])
        # Bidirectional: every position, [CLS] included, sees the change.
        out_bi = bidirectional(changed)["sequence_output"].numpy()
        assert not np.allclose(out_bi[:, 0], reference_bi[:, 0])


def test_configs_without_causal_still_load():
    stored = configs.config_to_dict(configs.get_config("bert_test"))
    del stored["causal"]  # what configs, .keras files and checkpoints written before hold
    assert configs.config_from_dict(stored) == configs.get_config("bert_test")
    encoder = BertEncoder.from_config({"config": stored, "name": "old"})
    assert encoder.config.causal is False
    causal = configs.get_config("bert_test", causal=True)
    assert configs.config_from_dict(configs.config_to_dict(causal)) == causal


def test_bert_causal_lm():
    with pytest.raises(ValueError, match="causal encoder"):
        BertCausalLM("bert_test")
    model = BertCausalLM(configs.get_config("bert_test", causal=True))
    batch = bert_batch()
    out = model(batch)
    assert out["logits"].shape == (4, 16, VOCAB) and out["logits"].dtype == tf.float32
    # The MLM head's transform on every position: the same as MaskedLMHead at positions 0..s-1.
    positions = np.tile(np.arange(16, dtype="int32"), (4, 1))
    every = model.lm_head(out["sequence_output"], positions,
                          token_embedding=model.encoder.token_embedding)
    np.testing.assert_allclose(out["logits"], every, rtol=1e-6, atol=1e-6)
    assert not any("pooler" in v.path for v in model.trainable_variables)
    losses, _ = _train(model, gpt_pretraining_loss, batch, jit_compile=True, steps=8)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_bert_padding_invariance():
    model = BertEncoder("bert_test")
    batch = bert_batch(batch=3, seq=12)
    short = {k: batch[k] for k in ("input_ids", "segment_ids", "input_mask")}
    extra = 20
    long = {k: np.pad(v, [(0, 0), (0, extra)]) for k, v in short.items()}
    long["input_ids"][:, 12:] = 0
    out_short = model(short)["sequence_output"].numpy()
    out_long = model(long)["sequence_output"].numpy()
    real = short["input_mask"].astype(bool)
    np.testing.assert_allclose(out_long[:, :12][real], out_short[real], atol=1e-5, rtol=0)
    # The junk under the padding must not matter either.
    junk = dict(long)
    junk["input_ids"] = long["input_ids"].copy()
    junk["input_ids"][:, 12:] = 42
    out_junk = model(junk)["sequence_output"].numpy()
    np.testing.assert_allclose(out_junk[:, :12][real], out_short[real], atol=1e-5, rtol=0)


def test_padded_keys_get_no_attention_weight():
    layer = MultiHeadSelfAttention(num_heads=2, head_size=8)
    x = tf.random.normal((2, 6, 16))
    input_mask = tf.constant([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    _, probs = layer(x, attention_mask=padding_mask(input_mask), return_attention_scores=True)
    probs = probs.numpy()
    assert probs.shape == (2, 2, 6, 6)
    assert np.all(probs[0, :, :, 3:] == 0.0) and np.all(probs[1, :, :, 5:] == 0.0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    _, causal = layer(x, attention_mask=causal_mask(6), return_attention_scores=True)
    assert np.all(np.triu(np.ones((6, 6)), k=1)[None, None] * causal.numpy() == 0.0)


def test_gelu_forms_differ_and_are_selectable():
    from tfmodels.layers.activations import gelu
    x = tf.constant([-3.0, -1.0, 0.5, 2.0])
    exact = gelu(x, approximate=False).numpy()
    tanh = gelu(x, approximate=True).numpy()
    from math import erf, sqrt
    np.testing.assert_allclose(exact, [v * 0.5 * (1 + erf(v / sqrt(2))) for v in x.numpy()],
                               rtol=1e-5, atol=1e-7)
    assert 0 < np.abs(exact - tanh).max() < 1e-3


def test_bert_outputs_and_hidden_states():
    model = BertPretrainer("bert_test")
    out = model(bert_batch())
    assert out["sequence_output"].shape == (4, 16, 32)
    assert out["pooled_output"].shape == (4, 32)
    assert len(out["hidden_states"]) == 3
    np.testing.assert_array_equal(out["hidden_states"][-1], out["sequence_output"])
    assert out["mlm_logits"].shape == (4, 3, VOCAB) and out["mlm_logits"].dtype == tf.float32
    assert out["nsp_logits"].shape == (4, 2)
    # The MLM decoder is the token embedding itself, not a copy.
    assert not any("decoder" in w.path for w in model.weights)


@pytest.mark.parametrize("layer, inputs", [
    (MultiHeadSelfAttention(2, 8, dropout=0.1), (tf.random.normal((2, 5, 16)),)),
    (TransformerBlock(2, 32, layer_norm_epsilon=1e-5, gelu_approximate=False),
     (tf.random.normal((2, 5, 16)),)),
    (TiedEmbedding(50, 16), (tf.constant([[1, 2, 3]]),)),
    (PositionEmbedding(32, 16), (tf.random.normal((2, 5, 16)),)),
])
def test_layer_config_round_trip(layer, inputs):
    out = layer(*inputs)
    clone = layer.__class__.from_config(layer.get_config())
    clone(*inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(*inputs), out)
    assert clone.get_config() == layer.get_config()


def test_mlm_head_round_trip():
    embedding = TiedEmbedding(50, 16)
    embedding.build((None, None))
    head = MaskedLMHead(50)
    seq, positions = tf.random.normal((2, 5, 16)), tf.constant([[0, 2], [1, 4]])
    out = head(seq, positions, token_embedding=embedding)
    clone = MaskedLMHead.from_config(head.get_config())
    clone(seq, positions, token_embedding=embedding)
    clone.set_weights(head.get_weights())
    np.testing.assert_array_equal(clone(seq, positions, token_embedding=embedding), out)


@pytest.mark.parametrize("make, batch", [
    (lambda: BertPretrainer("bert_test"), bert_batch()),
    (lambda: GptLanguageModel("gpt_test"), gpt_batch()),
    (lambda: BertCausalLM(configs.get_config("bert_test", causal=True)), bert_batch()),
])
def test_keras_file_round_trip(tmp_path, make, batch):
    model = make()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    out, out_loaded = model(batch), loaded(batch)
    for key in ("sequence_output", "mlm_logits", "logits"):
        if key in out:
            np.testing.assert_array_equal(out_loaded[key], out[key])


def _train(model, loss_fn, batch, strategy=None, jit_compile=False, steps=3,
           loss_scale=False, optimizer="adamw"):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        if optimizer == "sgd":
            optimizer = keras.optimizers.SGD(0.5)
        else:
            optimizer = create_optimizer(1e-3, total_steps=10, warmup_steps=1,
                                         loss_scale=loss_scale, optimizer=optimizer)
    step = TrainStep(model, optimizer, loss_fn, strategy=strategy, jit_compile=jit_compile,
                     clip_norm=1.0)
    dataset = tf.data.Dataset.from_tensors(batch).repeat(steps)
    losses = [float(step(b)["loss"]) for b in strategy.experimental_distribute_dataset(dataset)]
    return losses, optimizer


def test_mlm_replaced_accuracy_leaves_out_the_kept_positions():
    # Row 0 predicts at a [MASK] (id 4) and at a kept token; row 1 at a random token and a
    # padding prediction (weight 0).
    batch = {"input_ids": np.array([[2, 4, 9, 3], [2, 5, 6, 3]], "int32"),
             "masked_lm_positions": np.array([[1, 2], [1, 0]], "int32"),
             "masked_lm_ids": np.array([[7, 9], [3, 8]], "int32"),
             "masked_lm_weights": np.array([[1.0, 1.0], [1.0, 0.0]], "float32")}
    predicted = np.array([[7, 9], [6, 8]])          # right at [MASK] and kept, wrong at random
    logits = tf.one_hot(predicted, 12) * 5.0
    metrics = bert_pretraining_loss({"mlm_logits": logits}, batch, use_nsp=False)
    assert float(metrics["mlm_accuracy"]) == pytest.approx(2 / 3)
    assert float(metrics["mlm_replaced_accuracy"]) == pytest.approx(1 / 2)


@pytest.mark.parametrize("kind", ["bert", "gpt"])
def test_training_reduces_loss_with_xla(kind):
    keras.utils.set_random_seed(0)
    model = BertPretrainer("bert_test") if kind == "bert" else GptLanguageModel("gpt_test")
    loss_fn = bert_pretraining_loss if kind == "bert" else gpt_pretraining_loss
    batch = bert_batch() if kind == "bert" else gpt_batch()
    losses, _ = _train(model, loss_fn, batch, jit_compile=True, steps=8)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_mirrored_strategy_matches_single_device(mirrored_strategy):
    assert len(tf.config.list_logical_devices("CPU")) >= 2
    batch = bert_batch(batch=4)
    results = []
    for strategy in (mirrored_strategy, tf.distribute.OneDeviceStrategy("/cpu:0")):
        keras.utils.set_random_seed(1)
        with strategy.scope():
            model = BertPretrainer(configs.get_config(
                "bert_test", hidden_dropout=0.0, attention_dropout=0.0))
        # SGD: Adam divides by sqrt(v) and so amplifies float reduction-order noise in
        # near-zero gradients; SGD shows whether the summed, clipped gradient is the same.
        losses, _ = _train(model, bert_pretraining_loss, batch, strategy=strategy, steps=3,
                           optimizer="sgd")
        results.append((losses, model.get_weights()))
    (mirrored_losses, mirrored_w), (single_losses, single_w) = results
    # Two replicas each see half the batch; averaged losses and updated weights agree with
    # one device seeing the whole batch (up to float reduction order). Clipping at 1.0
    # is active here, so this also checks clipping of the global (not per-replica) gradient.
    np.testing.assert_allclose(mirrored_losses, single_losses, rtol=1e-4)
    for a, b in zip(mirrored_w, single_w):
        np.testing.assert_allclose(a, b, atol=1e-5)


# float16 (GPUs without bf16) runs in the slow set: bf16 exercises the same casts here.
@pytest.mark.parametrize("policy", ["mixed_bfloat16",
                                    pytest.param("mixed_float16", marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", ["bert", "gpt"])
def test_mixed_precision(policy, kind):
    keras.utils.set_random_seed(0)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = BertPretrainer("bert_test") if kind == "bert" else GptLanguageModel("gpt_test")
        batch = bert_batch() if kind == "bert" else gpt_batch()
        out = model(batch)
        compute = "bfloat16" if policy == "mixed_bfloat16" else "float16"
        assert out["sequence_output"].dtype == compute
        assert all(w.dtype == "float32" for w in model.weights)  # float32 master weights
        logits = out["mlm_logits"] if kind == "bert" else out["logits"]
        assert logits.dtype == tf.float32
        loss_fn = bert_pretraining_loss if kind == "bert" else gpt_pretraining_loss
        losses, optimizer = _train(model, loss_fn, batch, jit_compile=True, steps=4,
                                   loss_scale=policy == "mixed_float16")
        assert all(np.isfinite(losses))
        if policy == "mixed_float16":
            assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("make", [lambda: BertPretrainer(configs.get_config("bert_test")),
                                  lambda: GptLanguageModel(configs.get_config("gpt_test")),
                                  lambda: BertCausalLM(configs.get_config("bert_test",
                                                                          causal=True))])
def test_tf_checkpoint_holds_every_weight(make, tmp_path):
    # Keras 3 leaves list attributes (our transformer_layers) out of tf.train.Checkpoint
    # unless the model adds them itself; a resumed run would keep random layers otherwise.
    source, target = make(), make()
    path = tf.train.Checkpoint(model=source).save(str(tmp_path / "ckpt"))
    stored = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    assert sum(name.startswith("model/") for name in stored) == len(source.weights)
    tf.train.Checkpoint(model=target).read(path).assert_existing_objects_matched()
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
