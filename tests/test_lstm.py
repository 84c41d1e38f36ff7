"""GPT-1's LSTM baseline (tfmodels.lstm; GPT-1 Section 5): the model (shapes, causality,
serialisation, tf.train.Checkpoint), pretraining with `model=lstm` on real GPT records, and
fine-tuning its `pretrained.keras` with GPT-1's framework (heads, aux LM, strategies, layer
transfer, the fine-tuning loop). Tiny configs (lstm_test), CPU."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from finetune import freezing
from finetune.losses import task_loss
from finetune.models import (SequenceClassifier, backbone_architecture, backbone_input_format,
                             build_task_model)
from finetune.tasks import get_task
from finetune.trainer import FinetuneConfig, load_pretrained, run_finetune
from pretraining.trainer import PretrainConfig, build_model, run_pretraining
from tests.support import SEQ, finetune_config, gpt_inputs, pretrain_config
from tfmodels import configs
from tfmodels.gpt import GptDecoder
from tfmodels.losses import gpt_pretraining_loss
from tfmodels.lstm import LstmDecoder, LstmLanguageModel
from tfmodels.training import TrainStep

VOCAB = 100
QUIET = lambda message: None


def ids(batch=3, seq=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, VOCAB, size=(batch, seq)).astype("int32")


def lstm(**overrides):
    return LstmDecoder(configs.get_config("lstm_test", **overrides))


# ---- configs and the model ----------------------------------------------------------------------

def test_configs():
    paper = configs.get_config("lstm_2048")
    assert (paper.num_layers, paper.lstm_units, paper.embedding_size) == (1, 2048, 768)
    assert paper.vocab_size == 40478 + 3 and paper.hidden_size == 2048
    # 40481 x 768 tied embedding + LSTM 4 x 2048 x (768 + 2048 + 1) + 2048 -> 768 projection.
    assert LstmDecoder("lstm_2048").count_params() == (
        40481 * 768 + 4 * 2048 * (768 + 2048 + 1) + 2048 * 768 + 768)
    small = configs.get_config("lstm_small")
    assert (small.embedding_size, small.lstm_units) == (256, 512)
    stored = configs.config_to_dict(configs.get_config("lstm_test", num_layers=2))
    assert stored["architecture"] == "lstm"
    assert configs.config_from_dict(stored) == configs.get_config("lstm_test", num_layers=2)
    with pytest.raises(ValueError, match="lstm_units must be positive"):
        configs.LstmConfig(lstm_units=0)
    with pytest.raises(ValueError, match="unknown LstmConfig fields"):
        configs.LstmConfig.from_dict({"num_heads": 12})
    with pytest.raises(ValueError, match="expected a LstmConfig"):
        LstmDecoder("gpt_test")


def test_shapes_dtypes_and_hidden_states():
    model = LstmLanguageModel(configs.get_config("lstm_test", num_layers=2))
    out = model({"input_ids": ids()})
    assert out["sequence_output"].shape == (3, 12, 64)
    assert [h.shape for h in out["hidden_states"]] == [(3, 12, 32), (3, 12, 64), (3, 12, 64)]
    assert model.decoder.hidden_state_sizes == (32, 64, 64)
    assert out["logits"].shape == (3, 12, VOCAB) and out["logits"].dtype == tf.float32
    np.testing.assert_allclose(
        out["logits"], model.decoder.lm_logits(out["sequence_output"]), rtol=1e-6, atol=1e-6)


def test_lstm_is_causal_and_ignores_right_padding():
    model = LstmLanguageModel("lstm_test")
    x = ids(batch=2, seq=10)
    reference = model({"input_ids": x})["logits"].numpy()
    for t in range(9):
        changed = x.copy()
        changed[:, t + 1:] = (changed[:, t + 1:] + 7) % VOCAB
        out = model({"input_ids": changed})["logits"].numpy()
        np.testing.assert_allclose(out[:, :t + 1], reference[:, :t + 1], rtol=1e-5, atol=1e-6)
        assert not np.allclose(out[:, t + 1], reference[:, t + 1])
    # A mask marking right padding changes nothing (the padding never reaches real positions).
    mask = np.ones_like(x)
    mask[:, 6:] = 0
    masked = model({"input_ids": x * mask, "input_mask": mask})["logits"].numpy()
    np.testing.assert_allclose(masked[:, :6], reference[:, :6], rtol=1e-5, atol=1e-6)


def test_keras_file_round_trip(tmp_path):
    model = LstmLanguageModel(configs.get_config("lstm_test", num_layers=2))
    x = {"input_ids": ids()}
    path = str(tmp_path / "lstm.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, LstmLanguageModel) and reloaded.config == model.config
    np.testing.assert_array_equal(reloaded(x)["logits"], model(x)["logits"])


def test_tf_checkpoint_holds_every_weight(tmp_path):
    # As tests/test_models.py checks for the Transformers: the LSTM layers are a list too.
    make = lambda: LstmLanguageModel(configs.get_config("lstm_test", num_layers=2))
    source, target = make(), make()
    path = tf.train.Checkpoint(model=source).save(str(tmp_path / "ckpt"))
    stored = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    assert sum(name.startswith("model/") for name in stored) == len(source.weights) == 9
    tf.train.Checkpoint(model=target).read(path).assert_existing_objects_matched()
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_training_reduces_loss_with_xla():
    keras.utils.set_random_seed(0)
    model = LstmLanguageModel("lstm_test")
    optimizer = keras.optimizers.Adam(1e-2)
    step = TrainStep(model, optimizer, gpt_pretraining_loss, jit_compile=True, clip_norm=1.0)
    batch = {"input_ids": ids(batch=4, seq=16)}
    losses = [float(step(batch)["loss"]) for _ in range(8)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


# ---- pretraining --------------------------------------------------------------------------------

def lstm_pretrain_config(records, model_dir, **overrides):
    values = dict(model="lstm", model_config="lstm_test", vocab_size=40481,
                  input_files=(records,), seq_length=SEQ, global_batch_size=8, train_steps=30,
                  warmup_steps=3, learning_rate=1e-2, model_dir=str(model_dir),
                  checkpoint_every=15, log_every=10, shuffle_buffer=200)
    values.update(overrides)
    return pretrain_config(**values)


@pytest.fixture(scope="module")
def lstm_pretrained(tmp_path_factory, shakespeare_gpt_records):
    model_dir = tmp_path_factory.mktemp("lstm_pretrain")
    history = run_pretraining(lstm_pretrain_config(shakespeare_gpt_records, model_dir), log=QUIET)
    return model_dir, history


def test_pretraining_learns_and_saves(lstm_pretrained):
    model_dir, history = lstm_pretrained
    assert len(history) == 30 and {"lm_loss", "perplexity", "lm_accuracy"} <= set(history[0])
    first = np.mean([row["lm_loss"] for row in history[:5]])
    last = np.mean([row["lm_loss"] for row in history[-5:]])
    assert last < first - 1.0
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-30")
    model = keras.saving.load_model(str(model_dir / "pretrained.keras"))
    assert isinstance(model, LstmLanguageModel) and model.config.vocab_size == 40481


def test_pretraining_resumes_every_weight(lstm_pretrained, shakespeare_gpt_records, tmp_path):
    """A finished run's checkpoint restores into a fresh model (assert_existing_objects_matched
    in run_pretraining) and training continues from step 30."""
    model_dir, _ = lstm_pretrained
    resumed = tmp_path / "resumed"
    import shutil
    shutil.copytree(model_dir, resumed)
    messages = []
    history = run_pretraining(lstm_pretrain_config(shakespeare_gpt_records, resumed, train_steps=32),
                              log=messages.append)
    assert any("resumed from" in m and "micro-step 30" in m for m in messages)
    assert [row["step"] for row in history] == [31, 32]


def test_pretraining_config_errors(tmp_path):
    base = dict(input_files=("x",), model_dir=str(tmp_path))
    with pytest.raises(ValueError, match="model lstm needs an LSTM config"):
        build_model(pretrain_config(model="lstm", model_config="gpt_test", **base))
    with pytest.raises(ValueError, match="model lstm needs an LSTM config"):
        build_model(pretrain_config(model="lstm", **base))  # the default bert_base
    with pytest.raises(ValueError, match="model bert needs a BERT config"):
        build_model(pretrain_config(model="bert", model_config="lstm_test", **base))
    with pytest.raises(ValueError, match="model gpt needs a GPT config"):
        build_model(pretrain_config(model="gpt", model_config="lstm_test", **base))
    with pytest.raises(ValueError, match="seq_length 128 exceeds"):
        build_model(pretrain_config(model="lstm", model_config="lstm_test", **base))
    assert pretrain_config(model="lstm", **base).decay_shape == "cosine"  # GPT-1's schedule


def test_xla_runs_use_the_generic_lstm_kernel(tmp_path):
    """Keras picks the cuDNN kernel on GPUs, which XLA cannot compile: jit_compile runs build
    the LSTM with use_cudnn=False (kept through .keras files)."""
    base = dict(model="lstm", model_config="lstm_test", seq_length=32, input_files=("x",),
                model_dir=str(tmp_path))
    assert build_model(pretrain_config(**base)).decoder.lstm_layers[0].use_cudnn == "auto"
    model = build_model(pretrain_config(jit_compile=True, **base))
    assert model.decoder.use_cudnn is False and model.decoder.lstm_layers[0].use_cudnn is False
    model.save(str(tmp_path / "m.keras"))
    assert keras.saving.load_model(str(tmp_path / "m.keras")).decoder.use_cudnn is False


# ---- fine-tuning: heads, aux LM, strategies -----------------------------------------------------

def test_backbone_type_is_gpt_and_architecture_lstm():
    decoder = lstm()
    assert backbone_input_format(decoder) == "gpt" and backbone_architecture(decoder) == "lstm"
    assert backbone_architecture(LstmLanguageModel(decoder)) == "lstm"
    assert backbone_architecture(GptDecoder("gpt_test")) == "gpt"
    model = build_task_model(get_task("sst2"), decoder, "lstm")
    assert model.aux_lm and model.input_format == "gpt"
    build_task_model(get_task("sst2"), decoder, "gpt")  # the input format is accepted too
    with pytest.raises(ValueError, match="does not match the backbone"):
        build_task_model(get_task("sst2"), decoder, "bert")


@pytest.mark.parametrize("task, shape, expected", [
    ("sst2", (3, 10), {"logits": (3, 2), "lm_logits": (3, 10, VOCAB)}),
    ("stsb", (3, 2, 10), {"predictions": (3,), "lm_logits": (3, 2, 10, VOCAB)}),
    ("story_cloze", (3, 2, 10), {"logits": (3, 2), "lm_logits": (3, 2, 10, VOCAB)}),
])
def test_heads_shapes(task, shape, expected):
    model = build_task_model(get_task(task), lstm())
    out = model(gpt_inputs(shape))
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(v.dtype == tf.float32 for v in out.values())


def test_classifier_reads_the_classify_position_and_feature_layers():
    x = gpt_inputs((2, 10), lengths=[6, 10])
    model = SequenceClassifier(lstm(), 2, dropout=0.0)
    states = model.backbone(x)["sequence_output"].numpy()
    summary = model.encode(x).summary.numpy()
    np.testing.assert_allclose(summary, states[[0, 1], [5, 9]], rtol=1e-6)
    # The embeddings (32 wide) + the LSTM layer (64 wide).
    wide = SequenceClassifier(lstm(), 2, feature_layers=2)
    assert wide.feature_size == 96 and wide(x)["logits"].shape == (2, 2)
    with pytest.raises(ValueError, match="feature_layers must be in 1..2"):
        SequenceClassifier(lstm(), 2, feature_layers=3)


def test_aux_lm_goes_through_the_projection_and_tied_embedding():
    model = SequenceClassifier(lstm(), 2, aux_lm=True)
    x = gpt_inputs((2, 8))
    out = model(x)
    backbone = model.backbone
    expected = backbone.lm_logits(backbone(x)["sequence_output"])
    np.testing.assert_allclose(out["lm_logits"], expected, rtol=1e-5, atol=1e-6)
    # Without the aux LM nothing reads the projection: it stays frozen under every strategy
    # (a None gradient would break clipping).
    plain = SequenceClassifier(lstm(), 2)
    for apply in (lambda m: m, freezing.full, freezing.frozen,
                  lambda m: freezing.top_k(m, 1)):
        apply(plain)
        assert not any("lm_projection" in v.path for v in plain.trainable_variables)
    freezing.full(model)
    assert any("lm_projection" in v.path for v in model.trainable_variables)


@pytest.mark.parametrize("lm_weight", [0.5, 0.0])
def test_train_step_learns_with_and_without_aux_lm(lm_weight):
    keras.utils.set_random_seed(0)
    spec = get_task("sst2")
    model = build_task_model(spec, lstm(), "lstm", aux_lm=lm_weight > 0, dropout=0.0)
    x = gpt_inputs((8, 10), seed=1)
    batch = {**x, "label": (x["input_ids"][:, 0] % 2).astype("int32")}
    step = TrainStep(model, keras.optimizers.Adam(1e-2), task_loss(spec, "lstm", lm_weight),
                     clip_norm=1.0)
    metrics = [step(batch) for _ in range(12)]
    assert ("lm_loss" in metrics[0]) == (lm_weight > 0)
    assert float(metrics[-1]["loss"]) < float(metrics[0]["loss"])


def _trainable_paths(model):
    return {v.path for v in model.trainable_variables}


def test_strategies_on_lstm_layers():
    model = SequenceClassifier(lstm(num_layers=2), 2, aux_lm=True)
    groups = freezing.layer_groups(model)
    assert [[layer.name for layer in g] for g in groups] == [
        ["token_embedding", "lm_projection"], ["lstm_layer_0"], ["lstm_layer_1"]]
    freezing.frozen(model)
    assert len(model.trainable_variables) == 2  # the head's kernel and bias
    assert all("classifier" in p for p in _trainable_paths(model))
    freezing.top_k(model, 1)
    paths = _trainable_paths(model)
    assert any("lstm_layer_1" in p for p in paths)
    assert not any("lstm_layer_0" in p or "token_embedding" in p for p in paths)
    with pytest.raises(ValueError, match="k must be in 0..2"):
        freezing.top_k(model, 3)
    schedule = freezing.GradualUnfreezing(model, steps_per_stage=2)
    assert schedule.num_stages == 4
    assert [schedule.groups_at(s) for s in (0, 2, 4, 6)] == [0, 1, 2, 3]
    schedule.update(4)
    assert any("lstm_layer_0" in p for p in _trainable_paths(model))
    assert not any("token_embedding" in p for p in _trainable_paths(model))


def test_transfer_layers_copies_embeddings_and_the_first_k_lstm_layers():
    keras.utils.set_random_seed(1)
    source = lstm(num_layers=2)
    keras.utils.set_random_seed(2)
    target = lstm(num_layers=2)
    copied = freezing.transfer_layers(source, target, 1)
    assert copied == ["token_embedding", "lm_projection", "lstm_layer_0"]
    same = lambda a, b: all(np.array_equal(x, y)
                            for x, y in zip(a.get_weights(), b.get_weights()))
    assert same(source.lstm_layers[0], target.lstm_layers[0])
    assert not same(source.lstm_layers[1], target.lstm_layers[1])
    with pytest.raises(ValueError, match="LstmDecoder into a GptDecoder"):
        freezing.transfer_layers(source, GptDecoder("gpt_test"), 0)
    with pytest.raises(ValueError, match="lstm_units"):
        freezing.transfer_layers(source, lstm(lstm_units=16), 0)


# ---- the fine-tuning loop from the pretrained LSTM ----------------------------------------------

@pytest.fixture(scope="module")
def bpe(shared_data):
    gpt = shared_data / "gpt1_openai"
    return dict(bpe_encoder_file=str(gpt / "encoder_bpe_40000.json"),
                bpe_merges_file=str(gpt / "vocab_40000.bpe"))


def lstm_finetune_config(bpe, shared_data, output_dir, **overrides):
    values = dict(task="sst2", model="lstm", data_dir=str(shared_data / "glue" / "SST-2" /
                                                          "train.tsv"),
                  output_dir=str(output_dir), seq_length=32, train_batch_size=8,
                  eval_batch_size=4, epochs=1.0, max_train_examples=64,
                  learning_rates=(1e-3,), log_every=1000, **bpe)
    values.update(overrides)
    return finetune_config(**values)


@pytest.mark.parametrize("lm_weight", [0.5, pytest.param(0.0, marks=pytest.mark.slow)])
def test_finetunes_the_pretrained_keras_file(lstm_pretrained, bpe, shared_data, tmp_path,
                                             lm_weight):
    model_dir, _ = lstm_pretrained
    # Without the aux LM, also under XLA (the generic LSTM kernel, see above).
    config = lstm_finetune_config(bpe, shared_data, tmp_path, init_checkpoint=str(model_dir),
                             lm_weight=lm_weight, jit_compile=lm_weight == 0.0)
    assert load_pretrained(config, log=QUIET).backbone_options == (
        {"use_cudnn": False} if config.jit_compile else {})
    results = run_finetune(config, log=QUIET)
    assert results["checkpoint_format"] == "keras" and results["model"] == "lstm"
    assert results["config"]["warmup_fraction"] == 0.002  # GPT-1's
    run = results["runs"][0]
    assert run["train_steps"] == 58 // 8 and np.isfinite(run["final_loss"])
    assert 0.0 <= results["selected_run"]["metrics"]["accuracy"] <= 1.0
    model = keras.saving.load_model(str(tmp_path / "model.keras")).task_model
    assert isinstance(model.backbone, LstmDecoder) and model.aux_lm == (lm_weight > 0)
    pretrained = keras.saving.load_model(str(model_dir / "pretrained.keras")).decoder
    # Fine-tuning started from the pretrained weights (the embedding moved only a little).
    assert np.abs(model.backbone.token_embedding.embeddings.numpy()
                  - pretrained.token_embedding.embeddings.numpy()).max() < 0.1


def test_finetunes_from_random_init_with_gradual_unfreezing(bpe, shared_data, tmp_path):
    config = lstm_finetune_config(bpe, shared_data, tmp_path, model_config="lstm_test",
                             freezing="gradual", unfreeze_steps_per_stage=2, save_model=False)
    results = run_finetune(config, log=QUIET)
    assert results["checkpoint_format"] == "random" and results["model_file"] is None
    assert 0.0 <= results["selected_run"]["metrics"]["accuracy"] <= 1.0


def test_finetuning_errors(lstm_pretrained, bpe, shared_data, tmp_path):
    model_dir, _ = lstm_pretrained
    with pytest.raises(ValueError, match="model 'lstm' needs a LstmDecoder config"):
        load_pretrained(lstm_finetune_config(bpe, shared_data, tmp_path, model_config="bert_test"),
                        log=QUIET)
    with pytest.raises(ValueError, match="model 'bert' needs a BertEncoder config"):
        load_pretrained(lstm_finetune_config(
            bpe, shared_data, tmp_path, model="bert", model_config="lstm_test",
            vocab_file=str(shared_data / "bert_vocab" / "bert-base-uncased-vocab.txt")),
            log=QUIET)
    with pytest.raises(ValueError, match="holds a LstmDecoder, but model is 'gpt'"):
        load_pretrained(lstm_finetune_config(bpe, shared_data, tmp_path, model="gpt",
                                        init_checkpoint=str(model_dir)), log=QUIET)
    with pytest.raises(ValueError, match="squad_v1.*only BERT"):
        finetune_config(task="squad_v1", model="lstm", data_dir="d", output_dir="o")
    with pytest.raises(ValueError, match="model must be one of"):
        finetune_config(task="sst2", model="rnn", data_dir="d", output_dir="o")


# ---- export -------------------------------------------------------------------------------------

def test_exported_classifier_and_language_model_match_keras(bpe, tmp_path):
    """TF Serving export (finetune.export) of an LSTM task model and of the LSTM LM: the
    SavedModel's raw-text signatures give the Keras model's outputs."""
    from finetune import export
    from finetune.examples import TextExample
    from finetune.features import encode_examples
    from tfmodels.tokenizers.gpt_bpe import GptBpeTokenizer
    tokenizer = GptBpeTokenizer(bpe["bpe_encoder_file"], bpe["bpe_merges_file"])
    decoder = LstmDecoder(configs.get_config("lstm_test", vocab_size=tokenizer.vocab_size))
    spec = get_task("sst2")
    classifier = build_task_model(spec, decoder)
    texts = ["a fine film .", "terrible , boring and far too long " * 3]
    encoded = encode_examples([TextExample(str(i), t) for i, t in enumerate(texts)],
                              "classification", "gpt", tokenizer, 32,
                              label_names=spec.label_names).inputs()
    probs = tf.nn.softmax(classifier(encoded, training=False)["logits"]).numpy()
    path = export.export_saved_model(classifier, spec, tokenizer, str(tmp_path), "sst2", 32)
    served = tf.saved_model.load(path).signatures["serving_default"](text=tf.constant(texts))
    np.testing.assert_allclose(served["probabilities"].numpy(), probs, atol=1e-5)

    lm = LstmLanguageModel(decoder)
    module = export.build_serving_module(lm, None, tokenizer, 16)
    out = module.serving_signatures["serving_default"](text=tf.constant(["the cat sat on the"]))
    ids = np.array([tokenizer.encode(["the cat sat on the"])[0]], np.int32)
    logits = lm({"input_ids": ids}, training=False)["logits"][0, -1]
    np.testing.assert_allclose(out["next_token_log_probs"].numpy()[0],
                               tf.nn.log_softmax(logits).numpy(), atol=1e-5)


def test_zero_shot_scores_the_pretrained_lstm(lstm_pretrained, bpe):
    """finetune.zero_shot loads the LSTM LM (GPT-1 Figure 2 tracks both models' zero-shot
    scores) and its batched, padded scores equal a direct unpadded pass."""
    from tfmodels.tokenizers.gpt_bpe import GptBpeTokenizer
    from finetune import zero_shot
    model_dir, _ = lstm_pretrained
    lm = zero_shot.load_language_model(str(model_dir))
    assert isinstance(lm, LstmLanguageModel)
    scorer = zero_shot.LmScorer(lm, GptBpeTokenizer(bpe["bpe_encoder_file"],
                                                    bpe["bpe_merges_file"]), batch_size=2)
    contexts, continuations = ["the king said", "a"], [" to his son", " long long story ."]
    scores = scorer.text_log_probs(contexts, continuations)
    for context, continuation, got in zip(contexts, continuations, scores):
        tokens = scorer.encode([context])[0] + scorer.encode([continuation])[0]
        logits = lm({"input_ids": np.array([tokens], np.int32)})["logits"][0].numpy()
        log_p = tf.nn.log_softmax(logits).numpy()
        first = len(scorer.encode([context])[0])
        expected = [log_p[t - 1, tokens[t]] for t in range(first, len(tokens))]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
