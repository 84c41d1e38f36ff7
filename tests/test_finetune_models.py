"""Task heads, losses and fine-tuning strategies (finetune.models, finetune.freezing) on the
tiny bert_test / gpt_test configs: shapes, the papers' head semantics, loss arithmetic,
serialisation, trainable sets, layer transfer and a short training run."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from finetune import freezing
from finetune.models import (MASKED_LOGIT, MultipleChoiceModel, SequenceClassifier, SpanModel,
                             TokenClassifier, build_task_model)
from finetune.losses import soft_f1_loss, task_loss
from finetune.tasks import get_task
from tfmodels import configs
from tfmodels.bert import BertEncoder
from tfmodels.gpt import GptDecoder, GptLanguageModel
from tfmodels.losses import causal_lm_loss
from tfmodels.training import TrainStep
from tests.support import gpt_inputs

VOCAB = 100  # gpt_inputs' default vocabulary too


def bert_inputs(shape, seed=0, lengths=None):
    """BERT features [..., s]; `lengths` (per flattened row) pads the rest."""
    rng = np.random.default_rng(seed)
    seq = shape[-1]
    lengths = np.full(shape[:-1], seq) if lengths is None else np.asarray(lengths)
    mask = (np.arange(seq) < lengths[..., None]).astype("int32")
    return {"input_ids": (rng.integers(5, VOCAB, size=shape) * mask).astype("int32"),
            "segment_ids": ((np.arange(seq) >= seq // 2) * mask).astype("int32"),
            "input_mask": mask}


def bert():
    return BertEncoder("bert_test")


def gpt():
    return GptDecoder("gpt_test")


# ---- shapes and dtypes ------------------------------------------------------------------------

@pytest.mark.parametrize("task, shape, expected", [
    ("sst2", (3, 10), {"logits": (3, 2)}),
    ("mnli", (3, 10), {"logits": (3, 3)}),
    ("stsb", (3, 10), {"predictions": (3,)}),
    ("squad_v1", (3, 10), {"start_logits": (3, 10), "end_logits": (3, 10)}),
    ("swag", (3, 4, 10), {"logits": (3, 4)}),
    ("conll2003", (3, 10), {"logits": (3, 10, 9)}),
])
def test_bert_heads_shapes_and_dtypes(task, shape, expected):
    model = build_task_model(get_task(task), bert(), "bert")
    out = model(bert_inputs(shape))
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(v.dtype == tf.float32 for v in out.values())


@pytest.mark.parametrize("task, shape, expected", [
    ("sst2", (3, 10), {"logits": (3, 2)}),
    ("mrpc", (3, 2, 10), {"logits": (3, 2)}),          # similarity: both orders
    ("stsb", (3, 2, 10), {"predictions": (3,)}),
    ("story_cloze", (3, 2, 10), {"logits": (3, 2)}),
    ("race", (3, 4, 10), {"logits": (3, 4)}),
])
def test_gpt_heads_shapes_and_dtypes(task, shape, expected):
    model = build_task_model(get_task(task), gpt(), "gpt")
    out = model(gpt_inputs(shape))
    expected = {**expected, "lm_logits": shape + (VOCAB,)}
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(v.dtype == tf.float32 for v in out.values())


def test_mixed_precision_logits_are_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        span = SpanModel(bert())
        choice = MultipleChoiceModel(gpt(), aux_lm=True)
        out = {**span(bert_inputs((2, 8), lengths=[8, 5])), **choice(gpt_inputs((2, 3, 8)))}
        assert span.backbone.compute_dtype == "bfloat16"
        assert all(v.dtype == tf.float32 for v in out.values())
        assert np.all(out["start_logits"].numpy()[1, 5:] == MASKED_LOGIT)
    finally:
        keras.config.set_dtype_policy(previous)


def test_feature_layers_concatenate_the_top_hidden_states():
    # The BERT paper's best feature-based NER input: the top 4 hidden layers concatenated.
    encoder = BertEncoder(configs.get_config("bert_test", num_layers=4))
    x = bert_inputs((2, 8))
    top4 = np.concatenate([h.numpy() for h in encoder(x)["hidden_states"][-4:]], axis=-1)
    tagger = TokenClassifier(encoder, 5, feature_layers=4)
    kernel, bias = tagger.classifier.get_weights()
    assert kernel.shape == (4 * 32, 5)
    np.testing.assert_allclose(tagger(x)["logits"], top4 @ kernel + bias, atol=1e-5)
    # The pooled path reads the [CLS] slice of the concatenation (not the pooler).
    classifier = SequenceClassifier(encoder, 3, feature_layers=4)
    kernel, bias = classifier.classifier.get_weights()
    np.testing.assert_allclose(classifier(x)["logits"], top4[:, 0] @ kernel + bias, atol=1e-5)
    with pytest.raises(ValueError, match="feature_layers must be in 1..3"):
        TokenClassifier(bert(), 5, feature_layers=4)


# ---- head semantics ---------------------------------------------------------------------------

def test_span_logits_are_very_negative_at_padding():
    model = SpanModel(bert())
    out = model(bert_inputs((2, 12), lengths=[12, 7]))
    for key in ("start_logits", "end_logits"):
        logits = out[key].numpy()
        assert np.all(logits[1, 7:] <= -1e8)
        assert np.all(np.abs(logits[:, :7]) < 100) and np.all(np.abs(logits[0]) < 100)


def test_gpt_classifier_reads_exactly_the_classify_position():
    model = SequenceClassifier(gpt(), 3)
    x = gpt_inputs((2, 12))
    x["input_mask"][:] = 1
    x["classify_position"] = np.array([5, 8], "int32")
    base = model(x)["logits"].numpy()
    after = {**x, "input_ids": x["input_ids"].copy()}
    after["input_ids"][0, 6:] = (after["input_ids"][0, 6:] + 1) % VOCAB
    after["input_ids"][1, 9:] = (after["input_ids"][1, 9:] + 1) % VOCAB
    np.testing.assert_array_equal(model(after)["logits"], base)  # causal: later tokens unseen
    at = {**x, "input_ids": x["input_ids"].copy()}
    at["input_ids"][0, 5] = (at["input_ids"][0, 5] + 1) % VOCAB
    changed = model(at)["logits"].numpy()
    assert not np.allclose(changed[0], base[0])
    np.testing.assert_array_equal(changed[1], base[1])


def test_gpt_similarity_is_symmetric():
    model = SequenceClassifier(gpt(), 2, symmetric=True)
    x = gpt_inputs((3, 2, 10), lengths=[[10, 7], [6, 9], [8, 8]])
    swapped = {k: v[:, ::-1] for k, v in x.items()}
    logits = model(x)["logits"].numpy()
    np.testing.assert_allclose(model(swapped)["logits"], logits, atol=1e-6)
    # The two views may also arrive as `*_swapped` keys.
    as_keys = {k: v[:, 0] for k, v in x.items()}
    as_keys.update({f"{k}_swapped": v[:, 1] for k, v in x.items()})
    np.testing.assert_allclose(model(as_keys)["logits"], logits, atol=1e-6)
    with pytest.raises(ValueError, match="needs 2 views"):
        model(gpt_inputs((3, 3, 10)))
    with pytest.raises(ValueError, match="similarity"):
        SequenceClassifier(bert(), 2, symmetric=True)


@pytest.mark.parametrize("make, inputs", [
    (lambda: MultipleChoiceModel(bert()), bert_inputs),
    (lambda: MultipleChoiceModel(gpt(), aux_lm=True), gpt_inputs),
])
def test_multiple_choice_softmax_over_candidates(make, inputs):
    model = make()
    x = inputs((2, 4, 10), lengths=[[10, 6, 8, 9], [5, 10, 7, 7]])
    logits = model(x)["logits"].numpy()
    order = [2, 0, 3, 1]
    permuted = {k: v[:, order] for k, v in x.items()}
    np.testing.assert_allclose(model(permuted)["logits"], logits[:, order], atol=1e-5)
    labels = np.array([3, 1], "int32")
    kind = model.input_format
    metrics = task_loss(get_task("swag"), kind, lm_weight=0.0)({"logits": logits},
                                                               {"label": labels})
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(metrics["loss"], -log_probs[[0, 1], labels].mean(), rtol=1e-5)


def test_token_classification_loss_ignores_minus_one_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 4)).astype("float32")
    label_ids = np.array([[-1, 2, -1, 0, 3, -1], [-1, 1, 1, -1, -1, -1]], "int32")
    loss_fn = task_loss(get_task("conll2003"), "bert")
    metrics = loss_fn({"logits": logits}, {"label_ids": label_ids})
    noisy = logits.copy()
    noisy[label_ids < 0] = rng.normal(size=(int((label_ids < 0).sum()), 4)) * 10
    np.testing.assert_allclose(loss_fn({"logits": noisy}, {"label_ids": label_ids})["loss"],
                               metrics["loss"], rtol=1e-6)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    rows, cols = np.nonzero(label_ids >= 0)
    np.testing.assert_allclose(metrics["loss"], -log_probs[rows, cols, label_ids[rows, cols]].mean(),
                               rtol=1e-5)


def test_regression_mse_and_span_loss_by_hand():
    predictions = np.array([0.5, 2.0, -1.0], "float32")
    labels = np.array([1.0, 2.5, 0.0], "float32")
    metrics = task_loss(get_task("stsb"), "bert")({"predictions": predictions}, {"label": labels})
    np.testing.assert_allclose(metrics["loss"], np.mean((predictions - labels) ** 2), rtol=1e-6)

    rng = np.random.default_rng(1)
    start, end = rng.normal(size=(2, 3, 7)).astype("float32")
    starts, ends = np.array([1, 0, 4]), np.array([3, 0, 6])
    metrics = task_loss(get_task("squad_v1"), "bert")(
        {"start_logits": start, "end_logits": end},
        {"start_position": starts, "end_position": ends})
    ce = lambda z, y: -(z - np.log(np.exp(z).sum(-1, keepdims=True)))[np.arange(3), y].mean()
    np.testing.assert_allclose(metrics["loss"], (ce(start, starts) + ce(end, ends)) / 2, rtol=1e-5)


@pytest.mark.parametrize("task, shape", [("sst2", (3, 10)), ("story_cloze", (3, 2, 10))])
def test_aux_lm_loss_is_lambda_times_causal_lm_loss(task, shape):
    spec = get_task(task)
    model = build_task_model(spec, gpt(), "gpt")
    lengths = np.random.default_rng(2).integers(4, 11, size=shape[:-1])
    batch = {**gpt_inputs(shape, lengths=lengths), "label": np.array([0, 1, 1], "int32")}
    out = model(batch)
    metrics = task_loss(spec, "gpt", lm_weight=0.5)(out, batch)
    seq = shape[-1]
    expected_lm = causal_lm_loss(out["lm_logits"].numpy().reshape(-1, seq, VOCAB),
                                 batch["input_ids"].reshape(-1, seq),
                                 batch["input_mask"].reshape(-1, seq))["loss"]
    no_lm = task_loss(spec, "gpt", lm_weight=0.0)(out, batch)
    assert "lm_loss" not in no_lm
    np.testing.assert_allclose(metrics["lm_loss"], expected_lm, rtol=1e-6)
    np.testing.assert_allclose(metrics["task_loss"], no_lm["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"] - no_lm["loss"], 0.5 * expected_lm, rtol=1e-5)
    without = build_task_model(spec, gpt(), "gpt", aux_lm=False)
    with pytest.raises(ValueError, match="aux_lm=True"):
        task_loss(spec, "gpt")(without(batch), batch)


def test_build_task_model_checks_the_backbone():
    with pytest.raises(ValueError, match="does not match"):
        build_task_model(get_task("sst2"), bert(), "gpt")
    with pytest.raises(ValueError, match="auxiliary"):
        SequenceClassifier(bert(), 2, aux_lm=True)
    # A pretraining model can be passed directly: its decoder becomes the backbone.
    lm = GptLanguageModel("gpt_test")
    assert build_task_model(get_task("sst2"), lm).backbone is lm.decoder


# ---- serialisation ----------------------------------------------------------------------------

@pytest.mark.parametrize("make, inputs", [
    (lambda: build_task_model(get_task("mnli"), bert()), bert_inputs((2, 10), lengths=[10, 6])),
    (lambda: build_task_model(get_task("race"), gpt()), gpt_inputs((2, 4, 10))),
])
def test_keras_file_round_trip(tmp_path, make, inputs):
    model = make()
    path = tmp_path / "task.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    out, out_loaded = model(inputs), loaded(inputs)
    assert set(out) == set(out_loaded)
    for key in out:
        np.testing.assert_array_equal(out_loaded[key], out[key])


# ---- strategies -------------------------------------------------------------------------------

def _layer_params(cfg):
    h, i = cfg.hidden_size, cfg.intermediate_size
    # fused qkv + output projection, two LayerNorms, the two FFN denses
    return (3 * h * h + 3 * h) + (h * h + h) + 2 * 2 * h + (h * i + i) + (i * h + h)


def _embedding_params(cfg, kind):
    if kind == "bert":
        return (cfg.vocab_size + cfg.type_vocab_size + cfg.max_positions) * cfg.hidden_size + 2 * cfg.hidden_size
    return (cfg.vocab_size + cfg.max_positions) * cfg.hidden_size


def _trainable(model):
    return (sum(int(np.prod(v.shape)) for v in model.trainable_variables),
            len(model.trainable_variables))


@pytest.mark.parametrize("kind", ["bert", "gpt"])
def test_strategy_trainable_counts(kind):
    model = SequenceClassifier(bert() if kind == "bert" else gpt(), 3)
    cfg = model.config
    h, layers = cfg.hidden_size, cfg.num_layers
    head = (h * 3 + 3, 2)
    pooler = (h * h + h, 2) if kind == "bert" else (0, 0)
    layer = (_layer_params(cfg), 12)
    embeddings = (_embedding_params(cfg, kind), 5 if kind == "bert" else 2)
    total = lambda *parts: tuple(sum(p[j] for p in parts) for j in range(2))

    freezing.full(model)
    assert _trainable(model) == total(head, pooler, embeddings, *[layer] * layers)
    assert _trainable(model)[0] == model.count_params()
    freezing.frozen(model)
    assert _trainable(model) == head and not model.backbone.trainable
    freezing.top_k(model, 1)
    assert _trainable(model) == total(head, pooler, layer)
    assert model.backbone.transformer_layers[-1].trainable
    assert not model.backbone.transformer_layers[0].trainable
    assert not model.backbone.token_embedding.trainable
    freezing.apply_freezing(model, "top_k", k=layers)
    assert _trainable(model) == total(head, pooler, *[layer] * layers)
    freezing.apply_freezing(model, "full")
    assert _trainable(model) == total(head, pooler, embeddings, *[layer] * layers)
    with pytest.raises(ValueError, match="k must be in 0..2"):
        freezing.top_k(model, 3)


def test_heads_that_skip_the_pooler_keep_it_frozen():
    # A layer no gradient reaches would hand the train step None gradients.
    for model in (SpanModel(bert()), TokenClassifier(bert(), 3),
                  SequenceClassifier(bert(), 2, feature_layers=2)):
        for apply in (lambda m: m, freezing.full, lambda m: freezing.top_k(m, 1)):
            apply(model)
            names = {v.path for v in model.trainable_variables}
            assert not any("pooler" in n for n in names)
            assert any("transformer_layer_1" in n for n in names)
    assert any("pooler" in v.path for v in SequenceClassifier(bert(), 2).trainable_variables)


def test_frozen_backbone_runs_without_dropout():
    model = SequenceClassifier(bert(), 2, dropout=0.0)
    x = bert_inputs((2, 10))
    freezing.frozen(model)
    np.testing.assert_array_equal(model(x, training=True)["logits"],
                                  model(x, training=False)["logits"])
    freezing.full(model)
    assert not np.allclose(model(x, training=True)["logits"], model(x, training=False)["logits"])


def test_gradual_unfreezing_stages():
    model = SequenceClassifier(gpt(), 2)
    schedule = freezing.GradualUnfreezing(model, layers_per_stage=1, steps_per_stage=10)
    head = 2
    layer = 12
    assert schedule.num_groups == 3 and schedule.num_stages == 4  # embeddings + 2 layers
    assert _trainable(model)[1] == head and not model.backbone.trainable  # stage 0: head only
    assert not schedule.update(9)
    assert schedule.update(10)                                           # top layer
    assert _trainable(model)[1] == head + layer
    assert model.backbone.transformer_layers[1].trainable
    assert not model.backbone.transformer_layers[0].trainable
    assert not schedule.update(19)
    assert schedule.update(20) and _trainable(model)[1] == head + 2 * layer
    assert schedule.update(35) and _trainable(model)[1] == head + 2 * layer + 2  # + embeddings
    assert not schedule.update(1000)
    two = freezing.GradualUnfreezing(SequenceClassifier(bert(), 2), layers_per_stage=2,
                                       steps_per_stage=5)
    assert [two.groups_at(s) for s in (0, 4, 5, 10, 15, 99)] == [0, 0, 2, 3, 3, 3]


def test_gradual_unfreezing_keeps_one_optimizer_across_stages():
    model = SequenceClassifier(gpt(), 2)
    schedule = freezing.GradualUnfreezing(model, layers_per_stage=1, steps_per_stage=1)
    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(schedule.trainable_candidates())
    assert _trainable(model)[1] == 2  # building on the candidates left stage 0 applied
    batch = {**gpt_inputs((4, 8)), "label": np.array([0, 1, 0, 1], "int32")}
    loss_fn = task_loss(get_task("sst2"), "gpt", lm_weight=0.0)
    backbone = model.backbone
    snapshot = lambda layer: [w.numpy().copy() for w in layer.weights]
    top, bottom = backbone.transformer_layers[1], backbone.transformer_layers[0]
    before_top, before_bottom = snapshot(top), snapshot(bottom)
    head_before = snapshot(model.classifier)
    TrainStep(model, optimizer, loss_fn)(batch)                     # step 0: head only
    assert all(np.array_equal(a, b) for a, b in zip(snapshot(top), before_top))
    assert not np.allclose(snapshot(model.classifier)[0], head_before[0])
    assert schedule.update(1)
    TrainStep(model, optimizer, loss_fn)(batch)                     # step 1: + top layer
    assert not np.allclose(snapshot(top)[0], before_top[0])
    assert all(np.array_equal(a, b) for a, b in zip(snapshot(bottom), before_bottom))
    assert int(optimizer.iterations) == 2


def test_transfer_layers_copies_embeddings_and_the_first_k_layers():
    cfg = configs.get_config("gpt_test", num_layers=3)
    keras.utils.set_random_seed(0)
    source = GptLanguageModel(cfg)
    target = SequenceClassifier(GptDecoder(cfg), 2)
    copied = freezing.transfer_layers(source, target, 2)
    assert copied == ["token_embedding", "position_embedding",
                      "transformer_layer_0", "transformer_layer_1"]
    src, dst = source.decoder, target.backbone
    equal = lambda a, b: all(np.array_equal(x, y) for x, y in zip(a.get_weights(),
                                                                   b.get_weights()))
    assert equal(src.token_embedding, dst.token_embedding)
    assert equal(src.position_embedding, dst.position_embedding)
    assert equal(src.transformer_layers[0], dst.transformer_layers[0])
    assert equal(src.transformer_layers[1], dst.transformer_layers[1])
    assert not np.allclose(src.transformer_layers[2].get_weights()[0],
                           dst.transformer_layers[2].get_weights()[0])

    bert_source, bert_target = bert(), bert()
    freezing.transfer_layers(bert_source, bert_target, 1)
    assert equal(bert_source.embedding_layer_norm, bert_target.embedding_layer_norm)
    assert not equal(bert_source.transformer_layers[1], bert_target.transformer_layers[1])
    assert not equal(bert_source.pooler, bert_target.pooler)

    with pytest.raises(ValueError, match=r"hidden_size \(32 vs 64\), num_heads \(4 vs 8\)"):
        freezing.transfer_layers(gpt(), GptDecoder(configs.get_config(
            "gpt_test", hidden_size=64, num_heads=8)), 1)
    with pytest.raises(ValueError, match="BertEncoder"):
        freezing.transfer_layers(gpt(), bert(), 1)
    with pytest.raises(ValueError, match="k must be in 0..2"):
        freezing.transfer_layers(source, gpt(), 3)


# ---- training ---------------------------------------------------------------------------------

def test_train_step_learns_a_separable_task():
    keras.utils.set_random_seed(0)
    x = bert_inputs((32, 8), seed=3)
    labels = (x["input_ids"][:, 1] >= 50).astype("int32")  # the class is token 1's id range
    batch = {**x, "label": labels}
    model = build_task_model(get_task("sst2"), bert())
    step = TrainStep(model, keras.optimizers.Adam(3e-3), task_loss(get_task("sst2"), "bert"))
    metrics = [step(batch) for _ in range(20)]
    losses = [float(m["loss"]) for m in metrics]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert float(metrics[-1]["accuracy"]) > 0.8


@pytest.mark.parametrize("task", ["squad_v1", "race"])
def test_train_step_with_xla(task):
    # Span (masking, no pooler gradient) and GPT-1 multiple choice (view reshapes, classify
    # gather, aux LM) compile under XLA.
    keras.utils.set_random_seed(0)
    spec = get_task(task)
    model = build_task_model(spec, bert() if spec.kind.name == "span" else gpt())
    if spec.kind.name == "span":
        batch = {**bert_inputs((4, 10), lengths=[10, 7, 5, 9]),
                 "start_position": np.array([1, 2, 3, 4], "int32"),
                 "end_position": np.array([2, 2, 4, 5], "int32")}
    else:
        batch = {**gpt_inputs((4, 4, 10), lengths=[[10, 6, 8, 9]] * 4),
                 "label": np.array([0, 1, 2, 3], "int32")}
    step = TrainStep(model, keras.optimizers.Adam(1e-3), task_loss(spec, model.input_format),
                     jit_compile=True, clip_norm=1.0)
    losses = [float(step(batch)["loss"]) for _ in range(4)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_bert_classifier_under_mirrored_strategy_with_clipping(mirrored_strategy):
    # Fine-tuning models (sparse embedding gradients, no tied head) with TrainStep's
    # global-norm clip, which all-reduces the gradients itself before the optimizer does.
    keras.utils.set_random_seed(0)
    spec = get_task("sst2")
    with mirrored_strategy.scope():
        model = build_task_model(spec, bert())
        optimizer = keras.optimizers.Adam(1e-3)
    step = TrainStep(model, optimizer, task_loss(spec, "bert"), strategy=mirrored_strategy,
                     clip_norm=1.0)
    batch = {**bert_inputs((8, 10), lengths=[10, 7, 5, 9, 10, 3, 6, 8]),
             "label": np.array([0, 1, 0, 1, 0, 1, 0, 1], "int32")}
    data = iter(mirrored_strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).repeat()))
    losses = [float(step(next(data))["loss"]) for _ in range(5)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


# ---- BiLSTM on top of the encoder (BERT Table 5 "+ BiLSTM", Section 5.3 feature-based NER) ----

UNITS = 8  # per direction: the heads read 2 * UNITS


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("task, expected", [
    ("sst2", {"logits": (3, 2)}),
    ("squad_v1", {"start_logits": (3, 10), "end_logits": (3, 10)}),
    ("conll2003", {"logits": (3, 10, 9)}),
])
def test_bilstm_heads_shapes(task, expected, layers):
    model = build_task_model(get_task(task), bert(), bilstm_layers=layers, bilstm_units=UNITS)
    assert len(model.bilstm) == layers and model.head_input_size == 2 * UNITS
    head = model.span_classifier if task == "squad_v1" else model.classifier
    assert head.kernel.shape[0] == 2 * UNITS
    out = model(bert_inputs((3, 10), lengths=[10, 6, 3]))
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(v.dtype == tf.float32 and np.isfinite(v.numpy()).all() for v in out.values())
    # The BiLSTM reads the hidden states, so the pooler gets no gradient and stays frozen.
    assert model.unused_backbone_layers == [model.backbone.pooler]


def test_bilstm_ignores_padding():
    # Appending padding (input_mask 0) changes nothing at the real positions: the backward
    # direction starts at each row's last real token. BERT's padding states are not zero, so
    # an unmasked backward LSTM would carry them into every real position.
    real = bert_inputs((2, 7), seed=4, lengths=[7, 5])
    padded = {k: np.pad(v, ((0, 0), (0, 5))) for k, v in real.items()}
    tagger = TokenClassifier(bert(), 4, bilstm_layers=2, bilstm_units=UNITS)
    np.testing.assert_allclose(tagger(padded)["logits"][:, :7], tagger(real)["logits"],
                               atol=1e-5)
    classifier = SequenceClassifier(bert(), 3, bilstm_layers=1, bilstm_units=UNITS)
    np.testing.assert_allclose(classifier(padded)["logits"], classifier(real)["logits"],
                               atol=1e-5)
    # GPT-1: the summary is the BiLSTM output at the classify position.
    real = gpt_inputs((2, 7), seed=4, lengths=[7, 5])
    padded = {k: (np.pad(v, ((0, 0), (0, 5))) if v.ndim == 2 else v) for k, v in real.items()}
    model = SequenceClassifier(gpt(), 2, bilstm_layers=2, bilstm_units=UNITS)
    np.testing.assert_allclose(model(padded)["logits"], model(real)["logits"], atol=1e-5)


def test_bilstm_on_gpt_classification_and_similarity():
    for task, shape in (("sst2", (3, 10)), ("mrpc", (3, 2, 10))):
        model = build_task_model(get_task(task), gpt(), "gpt", bilstm_layers=1,
                                 bilstm_units=UNITS)
        out = model(gpt_inputs(shape, lengths=np.full(shape[:-1], 8)))
        assert tuple(out["logits"].shape) == (3, 2)
        assert tuple(out["lm_logits"].shape) == shape + (VOCAB,)
    # Similarity sums the two orders' BiLSTM summaries: swapping the views changes nothing.
    x = gpt_inputs((3, 2, 10), lengths=[[8, 6]] * 3)
    swapped = {k: v[:, ::-1] for k, v in x.items()}
    np.testing.assert_allclose(model(swapped)["logits"], model(x)["logits"], atol=1e-5)


def test_bilstm_keras_file_round_trip(tmp_path):
    model = build_task_model(get_task("conll2003"), bert(), bilstm_layers=2, bilstm_units=UNITS)
    x = bert_inputs((2, 10), lengths=[10, 6])
    model.save(tmp_path / "tagger.keras")
    loaded = keras.saving.load_model(tmp_path / "tagger.keras")
    assert loaded.get_config() == model.get_config()
    assert loaded.bilstm_layers == 2 and loaded.bilstm_units == UNITS
    np.testing.assert_array_equal(loaded(x)["logits"], model(x)["logits"])
    # Weights are restorable without a forward pass (built eagerly, like the heads).
    fresh = build_task_model(get_task("conll2003"), bert(), bilstm_layers=2, bilstm_units=UNITS)
    fresh.set_weights(model.get_weights())
    np.testing.assert_array_equal(fresh(x)["logits"], model(x)["logits"])


def test_bilstm_and_head_train_on_a_frozen_backbone():
    # BERT's feature-based NER: frozen top-4 features -> BiLSTM -> classifier.
    encoder = BertEncoder(configs.get_config("bert_test", num_layers=3))
    model = TokenClassifier(encoder, 5, feature_layers=4, bilstm_layers=2, bilstm_units=UNITS)
    freezing.frozen(model)
    names = [v.path for v in model.trainable_variables]
    assert names and all(n.startswith(("bilstm_", "classifier/")) for n in names)
    assert sum("bilstm_" in n for n in names) == 2 * 2 * 3  # layers x directions x 3
    assert model.bilstm[0].forward_layer.cell.kernel.shape[0] == 4 * 32
    batch = {**bert_inputs((2, 8), lengths=[8, 5]),
             "label_ids": np.array([[-1, 1, 2, 0, 4, 3, 1, -1], [-1, 2, 2, 1, -1, -1, -1, -1]])}
    with tf.GradientTape() as tape:
        loss = task_loss(get_task("conll2003"), "bert")(model(batch, training=True), batch)["loss"]
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
    assert all(np.abs(g.numpy()).sum() > 0 for g in grads)


def test_bilstm_under_mixed_precision_keeps_the_policy_and_float32_logits():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = SpanModel(bert(), bilstm_layers=1, bilstm_units=UNITS)
        out = model(bert_inputs((2, 8), lengths=[8, 5]))
        assert model.bilstm[0].forward_layer.compute_dtype == "bfloat16"
        assert model.bilstm[0].forward_layer.cell.kernel.dtype == "float32"
        assert all(v.dtype == tf.float32 for v in out.values())
        assert np.all(out["start_logits"].numpy()[1, 5:] == MASKED_LOGIT)
    finally:
        keras.config.set_dtype_policy(previous)


def test_bilstm_options_are_checked():
    with pytest.raises(ValueError, match="bilstm_layers must be >= 0"):
        SequenceClassifier(bert(), 2, bilstm_layers=-1)
    with pytest.raises(ValueError, match="bilstm_units >= 1"):
        SequenceClassifier(bert(), 2, bilstm_layers=1, bilstm_units=0)


# ---- soft F1 loss -------------------------------------------------------------------------------

def test_soft_f1_loss_by_hand():
    # p = [[.8, .2], [.4, .6], [.3, .7]], labels [0, 1, 0]:
    # class 0: tp = .8 + .3 = 1.1, fp = .4, fn = .2 + .7 = .9 -> F1 = 2.2 / 3.5 = 11/35
    # class 1: tp = .6, fp = .2 + .7 = .9, fn = .4            -> F1 = 1.2 / 2.5 = 6/25
    # loss = 1 - (11/35 + 6/25) / 2 = 1 - 97/175 = 78/175 = 0.445714...
    logits = np.log(np.array([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7]], "float32"))
    metrics = soft_f1_loss(logits, np.array([0, 1, 0]))
    assert set(metrics) == {"loss", "accuracy"}
    np.testing.assert_allclose(metrics["loss"], 78 / 175, rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], 2 / 3, rtol=1e-6)
    # task_loss picks it; [b, 1] labels work too.
    via_task = task_loss(get_task("mrpc"), "bert", loss="soft_f1")(
        {"logits": logits}, {"label": np.array([[0], [1], [0]])})
    np.testing.assert_allclose(via_task["loss"], 78 / 175, rtol=1e-5)


def test_soft_f1_loss_perfect_predictions_and_gradient():
    labels = np.array([0, 2, 1, 1, 0], "int32")
    perfect = 30.0 * (np.eye(3, dtype="float32")[labels] - 0.5)
    assert float(soft_f1_loss(perfect, labels)["loss"]) < 1e-6
    logits = tf.constant(np.random.default_rng(0).normal(size=(5, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = soft_f1_loss(logits, labels)["loss"]
    grad = tape.gradient(loss, logits).numpy()
    assert 0.0 < float(loss) < 1.0
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
    # Raising the true class's logit lowers the loss.
    assert float(soft_f1_loss(logits - 0.1 * grad, labels)["loss"]) < float(loss)


def test_soft_f1_with_gpt_aux_lm_and_wrong_kinds():
    spec = get_task("sst2")
    model = build_task_model(spec, gpt(), "gpt")
    batch = {**gpt_inputs((3, 10), lengths=[10, 7, 5]), "label": np.array([0, 1, 1], "int32")}
    out = model(batch)
    metrics = task_loss(spec, "gpt", lm_weight=0.5, loss="soft_f1")(out, batch)
    np.testing.assert_allclose(metrics["task_loss"], soft_f1_loss(out["logits"], batch["label"])
                               ["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], metrics["task_loss"] + 0.5 * metrics["lm_loss"],
                               rtol=1e-6)
    for task in ("stsb", "swag", "squad_v1", "conll2003"):
        with pytest.raises(ValueError, match="soft_f1 is for classification tasks"):
            task_loss(get_task(task), "bert", loss="soft_f1")
    with pytest.raises(ValueError, match="loss must be one of"):
        task_loss(spec, "bert", loss="focal")
