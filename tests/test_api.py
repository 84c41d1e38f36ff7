"""finetune.TextClassifier / TextRegressor: raw texts in through the shared in-graph packer,
Keras fit on the project's TrainStep, task metrics, keras.saving round trip, TF Serving export,
tf.data input, a MirroredStrategy scope and XLA (tests/test_readme.py runs the README's quick
start as written)."""

from typing import List

import keras
import numpy as np
import pytest
import tensorflow as tf

from finetune import TextClassifier, TextRegressor
from tfmodels import configs
from tfmodels.bert import BertEncoder

POSITIVE = ["a warm and funny film", "great acting and a lovely story", "funny , warm , great",
            "a lovely , great film", "warm performances and great fun", "great fun"]
NEGATIVE = ["a dull and tired mess", "boring , dull and badly acted", "a tired , boring plot",
            "dull mess", "badly written and boring", "a boring mess"]
TEXTS = POSITIVE + NEGATIVE
LABELS = [1] * len(POSITIVE) + [0] * len(NEGATIVE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A small random BERT saved as .keras with its WordPiece vocab.txt beside it."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    words = sorted({w for t in TEXTS for w in t.split()} | {"film", "plot", "the", "a"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    keras.utils.set_random_seed(0)
    encoder = BertEncoder(configs.get_config("bert_test", vocab_size=len(vocab)))
    encoder.save(folder / "encoder.keras")
    return str(folder / "encoder.keras")


def test_fit_predict_evaluate_on_raw_texts(checkpoint):
    clf = TextClassifier.from_checkpoint(checkpoint, num_classes=2, seq_length=16,
                                         label_names=("negative", "positive"))
    before = clf.evaluate(TEXTS, LABELS)
    history = clf.fit(TEXTS * 8, LABELS * 8, epochs=5, batch_size=8, learning_rate=3e-3,
                      verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    after = clf.evaluate(TEXTS, ["positive" if y else "negative" for y in LABELS])
    assert set(after) >= {"accuracy", "f1"} and after["accuracy"] == 1.0 > before["accuracy"]
    # Beside each metric, what the commonest label scores (6 of 12 texts are each class).
    assert after["constant_answer_accuracy"] == 0.5
    probabilities = clf.predict(["great fun", "a dull mess"])
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-6)
    assert clf.predict_labels(["great fun", "a dull mess"]) == ["positive", "negative"]


def test_progress_lines_follow_keras_verbose(checkpoint, capfd):
    """As Keras's predict: "auto" draws a progress line only when the rows take more than one
    batch, 1 always, 0 never; a bad value is refused."""
    clf = TextClassifier.from_checkpoint(checkpoint, num_classes=2, seq_length=16)
    capfd.readouterr()

    def progress_lines(call) -> List[str]:
        call()
        return [line for line in capfd.readouterr().err.splitlines() if "rows/s" in line]
    assert progress_lines(lambda: clf.predict(TEXTS[:2])) == []
    assert progress_lines(lambda: clf.predict_labels(TEXTS[:2])) == []
    assert progress_lines(lambda: clf.evaluate(TEXTS, LABELS, batch_size=64)) == []
    many = progress_lines(lambda: clf.predict(TEXTS, batch_size=4))
    assert many and all(line.startswith("predict [") for line in many)
    assert progress_lines(lambda: clf.predict(TEXTS, batch_size=4, verbose=0)) == []
    (line,) = progress_lines(lambda: clf.evaluate(TEXTS[:2], LABELS[:2], verbose=1))
    assert line.startswith("evaluate [") and "2/2 rows" in line
    with pytest.raises(ValueError, match="verbose must be"):
        clf.predict(TEXTS[:2], verbose=2)


class RecordWeights(keras.callbacks.Callback):
    """The classifier head's kernel at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.kernels = []

    def on_epoch_end(self, epoch, logs=None):
        self.kernels.append(self.model.task_model.classifier.kernel.numpy().copy())


def test_fit_keeps_the_keras_contract(checkpoint, tmp_path):
    """validation_data gives val_* epoch means; EarlyStopping restores the best epoch's weights;
    ModelCheckpoint saves; unknown keyword arguments are refused, not swallowed."""
    clf = TextClassifier.from_checkpoint(checkpoint, num_classes=2, seq_length=16)
    kernels = RecordWeights()
    # A learning rate this high overshoots within a few epochs (val_loss 0.74, 0.70, 0.71 on
    # this data): training stops and the best epoch's weights come back.
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1,
                                         restore_best_weights=True)
    saved = keras.callbacks.ModelCheckpoint(str(tmp_path / "epoch.keras"))
    history = clf.fit(TEXTS * 4, LABELS * 4, epochs=6, batch_size=8, learning_rate=0.05,
                      validation_data=(TEXTS, LABELS), callbacks=[kernels, stop, saved],
                      verbose=0)
    logs = history.history
    assert {"loss", "accuracy", "grad_norm", "val_loss", "val_accuracy", "val_f1"} <= set(logs)
    epochs = len(logs["val_loss"])
    assert epochs == len(kernels.kernels) == len(logs["loss"])
    assert stop.stopped_epoch == epochs - 1 < 5   # stopped early, after `patience` worse epochs
    best = int(np.argmin(logs["val_loss"]))
    assert best == stop.best_epoch < epochs - 1
    np.testing.assert_array_equal(clf.task_model.classifier.kernel.numpy(), kernels.kernels[best])
    assert isinstance(keras.saving.load_model(tmp_path / "epoch.keras"), TextClassifier)
    with pytest.raises(TypeError, match="fit\\(\\) got unexpected keyword arguments: steps"):
        clf.fit(TEXTS, LABELS, steps=3)
    with pytest.raises(TypeError, match="unexpected keyword arguments: verbos"):
        clf.predict(TEXTS, verbos=0)


def test_datasets_of_strings_equal_lists(checkpoint):
    clf = TextClassifier.from_checkpoint(checkpoint, num_classes=2, seq_length=16)
    from_list = clf.predict(TEXTS)
    for dataset in (tf.data.Dataset.from_tensor_slices(TEXTS),
                    tf.data.Dataset.from_tensor_slices(TEXTS).batch(5)):
        np.testing.assert_allclose(clf.predict(dataset), from_list, atol=1e-6)
    labelled = tf.data.Dataset.from_tensor_slices((TEXTS, LABELS)).batch(4)
    assert clf.evaluate(labelled) == clf.evaluate(TEXTS, LABELS)
    clf.fit(labelled, epochs=1, batch_size=4, verbose=0)


def test_rows_are_the_exports_rows(checkpoint, tmp_path):
    """fit/predict encode with the packer the SavedModel runs: same rows, same probabilities."""
    clf = TextClassifier.from_checkpoint(checkpoint, num_classes=2, seq_length=16)
    clf.fit(TEXTS, LABELS, epochs=1, batch_size=4, verbose=0)
    version = clf.export(str(tmp_path / "exports" / "sentiment"))
    assert version.endswith("sentiment/1")
    loaded = tf.saved_model.load(version)
    served = loaded.signatures["serving_default"](text=tf.constant(TEXTS))
    np.testing.assert_allclose(served["probabilities"].numpy(), clf.predict(TEXTS), atol=1e-5)
    rows = loaded.signatures["preprocess"](text=tf.constant(TEXTS[:1]))
    _, features = clf.encode(TEXTS[:1])
    width = int(rows["input_ids"].shape[1])
    np.testing.assert_array_equal(rows["input_ids"].numpy(),
                                  features.arrays["input_ids"][:, :width])


def test_keras_saving_round_trip(checkpoint, tmp_path):
    clf = TextClassifier.from_checkpoint(checkpoint, num_classes=2, seq_length=16)
    clf.fit(TEXTS, LABELS, epochs=1, batch_size=4, verbose=0)
    clf.save(tmp_path / "clf.keras")
    back = keras.saving.load_model(tmp_path / "clf.keras")
    assert isinstance(back, TextClassifier) and back.seq_length == 16
    np.testing.assert_allclose(back.predict(TEXTS), clf.predict(TEXTS), atol=1e-6)
    back.fit(TEXTS, LABELS, epochs=1, batch_size=4, verbose=0)  # trains on after loading


def test_pairs_and_regression(checkpoint, tmp_path):
    pairs = [(a, b) for a, b in zip(POSITIVE, NEGATIVE)] * 2
    scores = [float(i % 5) for i in range(len(pairs))]
    reg = TextRegressor.from_checkpoint(checkpoint, seq_length=24)
    reg.fit(pairs, scores, epochs=2, batch_size=4, learning_rate=1e-3, verbose=0)
    assert reg.predict(pairs).shape == (len(pairs),)
    assert set(reg.evaluate(pairs, scores)) >= {"pearson", "spearman"}
    as_columns = {"text_a": [a for a, _ in pairs], "text_b": [b for _, b in pairs]}
    np.testing.assert_allclose(reg.predict(as_columns), reg.predict(pairs), atol=1e-6)
    nli = TextClassifier.from_checkpoint(checkpoint, task="rte", seq_length=24)
    assert nli.label_names == ("entailment", "not_entailment") and nli.pair
    with pytest.raises(ValueError, match="pairs"):
        nli.predict(["one text only"])
    reg.save(tmp_path / "reg.keras")
    assert isinstance(keras.saving.load_model(tmp_path / "reg.keras"), TextRegressor)


@pytest.mark.slow
def test_mirrored_strategy_and_xla(checkpoint, mirrored_strategy):
    with mirrored_strategy.scope():
        clf = TextClassifier.from_checkpoint(checkpoint, num_classes=2, seq_length=16)
    history = clf.fit(TEXTS * 2, LABELS * 2, epochs=1, batch_size=8, learning_rate=1e-3,
                      jit_compile=True, pad_to_max_length=True, verbose=0)  # one XLA shape
    assert np.isfinite(history.history["loss"]).all()
    assert clf.predict(TEXTS).shape == (len(TEXTS), 2)


def test_bad_inputs_are_named(checkpoint):
    clf = TextClassifier.from_checkpoint(checkpoint, num_classes=2, seq_length=16)
    with pytest.raises(ValueError, match="3 texts but 2 labels"):
        clf.fit(TEXTS[:3], [0, 1])
    with pytest.raises(ValueError, match="not a class id"):
        clf.evaluate(TEXTS[:2], [0, 2])
    with pytest.raises(ValueError, match="list of texts"):
        clf.predict("one string")
    with pytest.raises(ValueError, match="item 1: label nan is not a class id"):
        clf.fit(TEXTS[:2], [0, float("nan")])
    with pytest.raises(ValueError, match="item 0: target nan is not a finite number"):
        TextRegressor.from_checkpoint(checkpoint, seq_length=16, pair=False).fit(
            TEXTS[:2], [float("nan"), 1.0])
    with pytest.raises(ValueError, match="example .*text_a is empty"):
        clf.fit(["", "great fun"], [0, 1])     # labelled data with an empty text: a bad file


def test_an_empty_text_is_answered_as_the_export_answers_it(checkpoint, tmp_path):
    """Prediction takes "" (as TF Serving and bert-gpt-predict do): [CLS] [SEP] alone."""
    clf = TextClassifier.from_checkpoint(checkpoint, num_classes=2, seq_length=16)
    in_process = clf.predict(["", "great fun"])
    serve = tf.saved_model.load(clf.export(str(tmp_path / "export"))).signatures[
        "serving_default"]
    served = serve(text=tf.constant(["", "great fun"]))["probabilities"].numpy()
    np.testing.assert_allclose(in_process, served, atol=1e-5)


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    """A small random GPT saved as a pretraining model_dir, with learned BPE files."""
    from tfmodels.gpt import GptLanguageModel
    from tfmodels.tokenizers.bpe_vocab import learn_bpe_merges, write_bpe_files
    from tfmodels.tokenizers.gpt_bpe import GptBpeTokenizer
    folder = tmp_path_factory.mktemp("tiny_gpt")
    merges, encoder = learn_bpe_merges(TEXTS * 3, num_merges=40)
    write_bpe_files(merges, encoder, str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer = GptBpeTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    keras.utils.set_random_seed(0)
    model = GptLanguageModel(configs.get_config("gpt_test", vocab_size=tokenizer.vocab_size))
    model({"input_ids": np.zeros((1, 8), np.int32), "input_mask": np.ones((1, 8), np.int32)})
    model.save(folder / "pretrained.keras")
    return folder, tokenizer.vocab_size


def test_language_model_generates_scores_and_exports(gpt_dir, checkpoint, tmp_path):
    from finetune import LanguageModel
    folder, vocab_size = gpt_dir
    lm = LanguageModel.from_checkpoint(str(folder), seq_length=16)  # BPE files beside it
    greedy = lm.generate(["a warm film", "dull"], max_new_tokens=5)
    assert len(greedy) == 2 and greedy == lm.generate(["a warm film", "dull"], max_new_tokens=5)
    sampled = lm.generate(["a warm film"], max_new_tokens=8, top_k=10, seed=3)
    assert sampled == lm.generate(["a warm film"], max_new_tokens=8, top_k=10, seed=3)
    perplexity = lm.perplexity(TEXTS)
    assert vocab_size / 3 < perplexity < vocab_size * 3  # an untrained model: about uniform
    version = lm.export(str(tmp_path / "lm"))
    served = tf.saved_model.load(version).signatures["generate"](
        **generate_request(["a warm film"], max_new_tokens=8, top_k=10, seed=3))
    assert served["text"].numpy()[0].decode() == sampled[0]
    with pytest.raises(ValueError, match="not a GPT-1"):
        LanguageModel.from_checkpoint(checkpoint)  # a BERT encoder


def test_generation_is_bounded_and_edge_cases_are_defined(gpt_dir, tmp_path):
    """One request cannot hold the model for hours: max_new_tokens has a ceiling (seq_length
    unless set), in the API and in the exported signature alike; no prompts give no texts; an
    empty prompt is refused in both."""
    from finetune import LanguageModel
    lm = LanguageModel.from_checkpoint(str(gpt_dir[0]), seq_length=16, max_new_tokens_limit=6)
    assert lm.generate([], max_new_tokens=5) == []
    with pytest.raises(ValueError, match="max_new_tokens must be in 0..6 .*got 100000"):
        lm.generate(["a warm film"], max_new_tokens=100000)
    with pytest.raises(ValueError, match="prompt 1 \\(''\\) has no tokens"):
        lm.generate(["a warm film", ""], max_new_tokens=2)
    assert LanguageModel.from_checkpoint(str(gpt_dir[0]), seq_length=16).max_new_tokens_limit == 16
    served = tf.saved_model.load(lm.export(str(tmp_path / "lm"))).signatures["generate"]
    request = lambda texts, n: served(**generate_request(texts, max_new_tokens=n))
    assert request(["a warm film"], 6)["token_ids"].shape == (1, 6)
    assert request([], 6)["text"].shape == (0,)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_new_tokens must be in 0..6"):
        request(["a warm film"], 100000)
    with pytest.raises(tf.errors.InvalidArgumentError, match="text has no tokens"):
        request([""], 2)


def generate_request(texts, max_new_tokens=6, top_k=0, seed=0, temperature=1.0, top_p=1.0,
                     num_beams=1, do_sample=False, stop=()):
    """Every input of the `generate` signature (a Python caller of a loaded SavedModel names
    them all; TF Serving fills the decoding options from the SignatureDef's defaults)."""
    return {"text": tf.constant(texts, tf.string),
            "max_new_tokens": tf.constant(max_new_tokens, tf.int32),
            "top_k": tf.constant(top_k, tf.int32), "seed": tf.constant(seed, tf.int32),
            "temperature": tf.constant(temperature, tf.float32),
            "top_p": tf.constant(top_p, tf.float32), "num_beams": tf.constant(num_beams, tf.int32),
            "do_sample": tf.constant(do_sample), "stop": tf.constant(list(stop), tf.string)}


PROMPTS = ["a warm film", "dull"]
STEPS = 6
# One call per decoding option: (name, generate keyword arguments).
DECODINGS = [("greedy", {}), ("top_k", {"top_k": 10, "seed": 3}),
             ("temperature", {"temperature": 0.7, "seed": 1}),
             ("top_p", {"top_p": 0.9, "seed": 2}), ("do_sample", {"do_sample": True, "seed": 4}),
             ("all_sampling", {"temperature": 1.3, "top_k": 20, "top_p": 0.8, "seed": 5}),
             ("beams", {"num_beams": 4}), ("beams_stop", {"num_beams": 3, "stop": ["e", ","]}),
             ("sample_stop", {"top_k": 5, "seed": 6, "stop": ["a"]})]


@pytest.fixture(scope="module")
def tiny_lm(gpt_dir):
    from finetune import LanguageModel
    return LanguageModel.from_checkpoint(str(gpt_dir[0]), seq_length=16)


def _reference_beam_search(lm, prompt, beams, steps):
    """Beam search written out on the Keras model, one step at a time: every beam extended by
    every token, the `beams` best totals kept (top_k's order: ties to the lower index)."""
    window = lm._encode([prompt])
    ids = [int(i) for i, m in zip(window["input_ids"][0], window["input_mask"][0]) if m]
    alive = [(ids, [], 0.0)]
    for _ in range(steps):
        width = max(len(a[0]) for a in alive)
        x = np.array([a[0] + [0] * (width - len(a[0])) for a in alive], np.int32)
        mask = np.array([[1] * len(a[0]) + [0] * (width - len(a[0])) for a in alive], np.int32)
        logits = lm.model({"input_ids": x, "input_mask": mask}, training=False)["logits"]
        log_probs = tf.nn.log_softmax(logits).numpy().astype(np.float64)
        vocab = log_probs.shape[-1]
        candidates = [(a[2] + log_probs[b, len(a[0]) - 1, v], b * vocab + v)
                      for b, a in enumerate(alive) for v in range(vocab)]
        best = sorted(candidates, key=lambda c: (-c[0], c[1]))[:beams]
        alive = [(alive[i // vocab][0] + [i % vocab], alive[i // vocab][1] + [i % vocab], score)
                 for score, i in best]
    return alive[0][1], alive[0][2]


def test_each_decoding_option_changes_the_output_as_expected(tiny_lm):
    lm = tiny_lm
    greedy = lm.generate_outputs(PROMPTS, STEPS)
    assert greedy["token_ids"].shape == (2, STEPS) and (greedy["num_tokens"] == STEPS).all()
    # The deterministic limits of every option are greedy decoding.
    for limit in ({"temperature": 1e-4, "seed": 9}, {"top_p": 1e-6, "seed": 9},
                  {"num_beams": 1}, {"top_k": 1, "do_sample": True, "seed": 9}):
        out = lm.generate_outputs(PROMPTS, STEPS, **limit)
        np.testing.assert_array_equal(out["token_ids"], greedy["token_ids"], err_msg=str(limit))
    # Sampling: a seed fixes the draw; another seed draws something else.
    sample = lambda seed: lm.generate_outputs(PROMPTS, STEPS, do_sample=True,
                                              seed=seed)["token_ids"]
    np.testing.assert_array_equal(sample(0), sample(0))
    assert not np.array_equal(sample(0), sample(1))
    assert not np.array_equal(sample(0), greedy["token_ids"])
    # top_k / top_p: the first token drawn is inside the top k / the nucleus, for many seeds.
    next_log_probs = lm.module.serving_signatures["serving_default"](
        text=tf.constant(PROMPTS))["next_token_log_probs"].numpy()
    order = np.argsort(-next_log_probs, axis=-1, kind="stable")
    probs = np.exp(np.take_along_axis(next_log_probs, order, axis=-1))
    nucleus = [set(order[r, :int(np.searchsorted(np.cumsum(probs[r]), 0.3)) + 1])
               for r in range(2)]
    firsts_k, firsts_p = set(), set()
    for seed in range(12):
        k3 = lm.generate_outputs(PROMPTS, 1, top_k=3, seed=seed)["token_ids"][:, 0]
        p3 = lm.generate_outputs(PROMPTS, 1, top_p=0.3, seed=seed)["token_ids"][:, 0]
        for r in range(2):
            assert k3[r] in order[r, :3] and p3[r] in nucleus[r], (seed, r)
        firsts_k.add(int(k3[0]))
        firsts_p.add(int(p3[0]))
    assert len(firsts_k) > 1  # it does sample
    # Beam search: exactly the written-out search, and never less likely than greedy here.
    beams = lm.generate_outputs(PROMPTS, STEPS, num_beams=4)
    for r, prompt in enumerate(PROMPTS):
        tokens, total = _reference_beam_search(lm, prompt, 4, STEPS)
        assert beams["token_ids"][r].tolist() == tokens
        assert beams["log_prob"][r] == pytest.approx(total, abs=1e-3)
    assert (beams["log_prob"] >= greedy["log_prob"] - 1e-5).all()
    assert (beams["log_prob"] > greedy["log_prob"]).any()
    # log_prob is the model's log-probability of the generated tokens after the prompt.
    for r, prompt in enumerate(PROMPTS):
        window = lm._encode([prompt])
        ids = [int(i) for i, m in zip(window["input_ids"][0], window["input_mask"][0]) if m]
        full = ids + greedy["token_ids"][r].tolist()
        logits = lm.model({"input_ids": np.array([full], np.int32)}, training=False)["logits"]
        log_probs = tf.nn.log_softmax(logits[0]).numpy()
        total = sum(log_probs[t - 1, full[t]] for t in range(len(ids), len(full)))
        assert greedy["log_prob"][r] == pytest.approx(total, abs=1e-4)


def _cut_at_stop(pieces, tokens, stops):
    """What a stop should give: the tokens up to the one after which the generated text
    contains a stop string, and that text cut just before it."""
    for t in range(len(tokens)):
        text = "".join(pieces[i] for i in tokens[:t + 1]).replace("</w>", " ")
        hits = [text.find(s) for s in stops if s in text]
        if hits:
            return tokens[:t + 1], text[:min(hits)].strip()
    return tokens, "".join(pieces[i] for i in tokens).replace("</w>", " ").strip()


def test_stop_strings_end_each_row_on_its_own(tiny_lm):
    lm = tiny_lm
    pieces = [p.decode() for p in lm.module._pieces.numpy()]
    greedy = lm.generate_outputs(PROMPTS, STEPS)
    # Stop at the text of row 0's fifth token: row 0 ends by then, row 1 goes on as it was.
    stop = pieces[greedy["token_ids"][0, 4]].replace("</w>", "").strip()
    for stops in ([stop], [stop, "zzz"]):
        out = lm.generate_outputs(PROMPTS, STEPS, stop=stops)
        for r in range(2):
            tokens, text = _cut_at_stop(pieces, greedy["token_ids"][r].tolist(), stops)
            n = len(tokens)
            assert out["num_tokens"][r] == n and out["token_ids"][r, :n].tolist() == tokens
            assert (out["token_ids"][r, n:] == -1).all() and out["text"][r].decode() == text
        assert out["num_tokens"][0] <= 5
    # Every row finished at its first token: the loop stops, the rest is -1.
    first = [pieces[t].replace("</w>", "").strip() for t in greedy["token_ids"][:, 0]]
    out = lm.generate_outputs(PROMPTS, STEPS, stop=first)
    assert out["num_tokens"].tolist() == [1, 1] and (out["token_ids"][:, 1:] == -1).all()
    assert out["text"].tolist() == [b"", b""]
    # Regex characters are literal text.
    out = lm.generate_outputs(PROMPTS, STEPS, stop=[".*", "(", "\\E"])
    np.testing.assert_array_equal(out["token_ids"], greedy["token_ids"])


def test_bad_decoding_values_are_refused_in_the_api_and_in_serving(tiny_lm):
    lm = tiny_lm
    bad = [({"temperature": 0.0}, "temperature must be > 0"),
           ({"temperature": -1.0}, "temperature must be > 0"),
           ({"top_p": 0.0}, "top_p must be in \\(0, 1\\]"),
           ({"top_p": 1.5}, "top_p must be in \\(0, 1\\]"),
           ({"top_k": -1}, "top_k must be >= 0"),
           ({"num_beams": 0}, "num_beams must be in 1..16"),
           ({"num_beams": 17}, "num_beams must be in 1..16"),
           ({"num_beams": 2, "top_k": 5}, "num_beams > 1 is beam search, which does not sample"),
           ({"num_beams": 2, "do_sample": True}, "does not sample"),
           ({"stop": [""]}, "a stop string is empty")]
    generate = lm.module.serving_signatures["generate"]  # the graph the export saves
    for options, message in bad:
        with pytest.raises(ValueError, match=message):
            lm.generate(PROMPTS, STEPS, **options)
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            generate(**generate_request(PROMPTS, **options))
    with pytest.raises(ValueError, match="pass stop as a list"):
        lm.generate(PROMPTS, STEPS, stop=".")


def test_api_and_reloaded_savedmodel_give_equal_outputs(tiny_lm, tmp_path):
    """Every decoding option through the API and through the export after
    tf.saved_model.load (test_export.py repeats this in a fresh process): same seed, same
    text; the SignatureDef records the decoding options' defaults for TF Serving."""
    from tensorflow.core.protobuf import saved_model_pb2
    from finetune.export.heads import GENERATE_OPTIONS
    lm = tiny_lm
    version = lm.export(str(tmp_path / "lm"))
    served = tf.saved_model.load(version).signatures["generate"]
    for name, options in DECODINGS:
        api = lm.generate_outputs(PROMPTS, STEPS, **options)
        out = {k: v.numpy() for k, v in served(**generate_request(PROMPTS, STEPS,
                                                                  **options)).items()}
        for key in ("token_ids", "num_tokens", "text"):
            np.testing.assert_array_equal(out[key], api[key], err_msg=f"{name}/{key}")
        np.testing.assert_allclose(out["log_prob"], api["log_prob"], atol=1e-5, err_msg=name)
        assert lm.generate(PROMPTS, STEPS, **options) == [t.decode() for t in out["text"]]
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((tmp_path / "lm" / "1" / "saved_model.pb").read_bytes())
    defaults = saved.meta_graphs[0].signature_def["generate"].defaults
    assert sorted(defaults) == sorted(GENERATE_OPTIONS)
    for name, (_, value) in GENERATE_OPTIONS.items():
        assert tf.make_ndarray(defaults[name]).tolist() == value, name
    assert set(saved.meta_graphs[0].signature_def["generate"].inputs) == \
        set(GENERATE_OPTIONS) | {"text", "max_new_tokens", "top_k", "seed"}


def test_bfloat16_export_and_the_lstm_generate_with_every_option(tiny_lm, gpt_dir, tmp_path):
    """Generation runs in a mixed_bfloat16 export and through the LSTM baseline's LM head."""
    from finetune import LanguageModel
    from tfmodels.lstm import LstmLanguageModel
    served = tf.saved_model.load(tiny_lm.export(str(tmp_path / "bf16"), precision="bfloat16")
                                 ).signatures["generate"]
    for name, options in DECODINGS:
        out = served(**generate_request(PROMPTS, STEPS, **options))
        assert out["token_ids"].shape == (2, STEPS), name
        assert np.isfinite(out["log_prob"].numpy()).all(), name
    keras.utils.set_random_seed(0)
    lstm = LstmLanguageModel(configs.get_config("lstm_test", vocab_size=gpt_dir[1]))
    lm = LanguageModel(lstm, tiny_lm.tokenizer, seq_length=16)
    greedy = lm.generate_outputs(PROMPTS, STEPS)
    np.testing.assert_array_equal(lm.generate_outputs(PROMPTS, STEPS, num_beams=1)["token_ids"],
                                  greedy["token_ids"])
    beams = lm.generate_outputs(PROMPTS, STEPS, num_beams=4)
    assert (beams["log_prob"] >= greedy["log_prob"] - 1e-5).all()
    assert lm.generate(PROMPTS, STEPS, top_p=0.9, seed=1) == \
        lm.generate(PROMPTS, STEPS, top_p=0.9, seed=1)


def test_score_per_text_and_perplexity_over_it(tiny_lm):
    lm = tiny_lm
    texts = TEXTS + ["a", ""]
    scores = lm.score(texts, batch_size=5)
    assert scores.total_log_prob.shape == scores.num_tokens.shape == (len(texts),)
    # Each text by hand on the Keras model: its window, every token but the first predicted.
    for i in (0, 3):
        window = lm._encode([texts[i]])
        n = int(window["input_mask"].numpy().sum())
        logits = lm.model(window, training=False)["logits"][0]
        log_probs = tf.nn.log_softmax(logits).numpy()
        ids = window["input_ids"].numpy()[0]
        total = sum(log_probs[t - 1, ids[t]] for t in range(1, n))
        assert scores.num_tokens[i] == n - 1
        assert scores.total_log_prob[i] == pytest.approx(total, abs=1e-4)
        assert scores.mean_log_prob[i] == pytest.approx(total / (n - 1), abs=1e-5)
    assert scores.num_tokens[-2:].tolist() == [0, 0] and np.isnan(scores.mean_log_prob[-2:]).all()
    # perplexity is today's figure: exp(mean NLL over every predicted token of every text).
    total, count = 0.0, 0
    for start in range(0, len(texts), 32):
        inputs = lm._encode(texts[start:start + 32])
        logits = lm.model(inputs, training=False)["logits"]
        log_probs = tf.nn.log_softmax(tf.cast(logits[:, :-1], tf.float32), axis=-1)
        mask = tf.cast(inputs["input_mask"][:, 1:], tf.float32)
        picked = tf.gather(log_probs, inputs["input_ids"][:, 1:], batch_dims=2)
        total -= float(tf.reduce_sum(picked * mask))
        count += int(tf.reduce_sum(mask))
    assert lm.perplexity(texts) == pytest.approx(np.exp(total / count), rel=1e-6)
    assert lm.perplexity(texts) == pytest.approx(
        np.exp(-scores.total_log_prob.sum() / scores.num_tokens.sum()), rel=1e-12)
    assert lm.score([]).total_log_prob.shape == (0,)
    with pytest.raises(ValueError, match="no text has two tokens"):
        lm.perplexity(["a", ""])
    with pytest.raises(ValueError, match="a list of texts"):
        lm.score("one string")


def test_model_must_name_the_checkpoints_architecture(gpt_dir, checkpoint):
    # An unknown name is refused, not read as BERT; an LSTM asked of a GPT checkpoint (the same
    # input format) is a mismatch too.
    with pytest.raises(ValueError, match="model must be one of bert, gpt, lstm, got 'gtp'"):
        TextClassifier.from_checkpoint(checkpoint, num_classes=2, model="gtp")
    with pytest.raises(ValueError, match="holds a BertEncoder, not a gpt model"):
        TextClassifier.from_checkpoint(checkpoint, num_classes=2, model="gpt")
    with pytest.raises(ValueError, match="holds a GptDecoder, not a lstm model"):
        TextClassifier.from_checkpoint(str(gpt_dir[0]), num_classes=2, model="lstm")
    assert TextClassifier.from_checkpoint(str(gpt_dir[0]), num_classes=2, model="gpt",
                                          seq_length=16).predict(["a warm film"]).shape == (1, 2)


def test_multiple_choice(checkpoint, tmp_path):
    from finetune import MultipleChoice
    questions = [("the film was", "", (p, n)) for p, n in zip(POSITIVE, NEGATIVE)]
    questions += [("the film was", "", (n, p)) for p, n in zip(POSITIVE, NEGATIVE)]
    answers = [0] * len(POSITIVE) + [1] * len(NEGATIVE)   # the positive ending
    mc = MultipleChoice.from_checkpoint(checkpoint, num_choices=2, seq_length=24)
    mc.fit(questions * 4, answers * 4, epochs=4, batch_size=8, learning_rate=3e-3, verbose=0)
    assert mc.evaluate(questions, answers)["accuracy"] >= 0.75
    as_columns = {"context": [q[0] for q in questions], "question": [q[1] for q in questions],
                  "endings": [list(q[2]) for q in questions]}
    probabilities = mc.predict(as_columns)
    assert probabilities.shape == (len(questions), 2)
    np.testing.assert_allclose(mc.predict(questions), probabilities, atol=1e-6)
    dataset = tf.data.Dataset.from_tensor_slices((as_columns, answers))
    np.testing.assert_allclose(mc.predict(dataset.batch(5)), probabilities, atol=1e-6)
    served = tf.saved_model.load(mc.export(str(tmp_path / "mc"))).signatures["serving_default"](
        **{k: tf.constant(v) for k, v in as_columns.items()})
    np.testing.assert_allclose(served["probabilities"].numpy(), probabilities, atol=1e-5)
    mc.save(tmp_path / "mc.keras")
    back = keras.saving.load_model(tmp_path / "mc.keras")
    assert isinstance(back, MultipleChoice) and back.num_choices == 2
    np.testing.assert_allclose(back.predict(questions), probabilities, atol=1e-6)
    with pytest.raises(ValueError, match="has 3 endings"):
        mc.predict([("c", "q", ("a", "b", "c"))])


def test_token_tagger_learns_tags_and_round_trips(checkpoint, tmp_path):
    from finetune import TokenTagger
    sentences = [t.split() for t in TEXTS]
    tags = [["B-MISC" if w == "film" else "B-PER" if w == "great" else "O" for w in s]
            for s in sentences]
    tagger = TokenTagger.from_checkpoint(checkpoint, tags=("O", "B-PER", "B-MISC"),
                                         seq_length=16)
    before = tagger.evaluate(sentences, tags)["f1"]
    tagger.fit(sentences * 8, tags * 8, epochs=6, batch_size=8, learning_rate=3e-3, verbose=0)
    assert tagger.predict(["a lovely , great film"]) == [["O", "O", "O", "B-PER", "B-MISC"]]
    after = tagger.evaluate(TEXTS, tags)["f1"]
    assert after == 1.0 > before
    tagger.save(tmp_path / "tagger.keras")
    reloaded = keras.saving.load_model(tmp_path / "tagger.keras")
    assert reloaded.predict(TEXTS) == tagger.predict(TEXTS)


def test_question_answerer_finds_the_span_over_strided_windows(checkpoint, tmp_path):
    from finetune import QuestionAnswerer
    contexts = [f"{t} film" if i % 2 else f"film {t}" for i, t in enumerate(TEXTS)]
    answers = [(c, c.index("film")) for c in contexts]
    questions = [("the film", c) for c in contexts]
    qa = QuestionAnswerer.from_checkpoint(checkpoint, seq_length=10, doc_stride=2,
                                          max_query_length=3)
    _, features = qa.encode(questions, [("film", c.index("film")) for c in contexts])
    assert len(features) > len(contexts)  # long contexts became several windows
    qa.fit(questions * 6, [("film", c.index("film")) for c in contexts] * 6, epochs=8,
           batch_size=8, learning_rate=3e-3, verbose=0)
    predicted = qa.predict(questions)
    assert all(p in c for p, c in zip(predicted, contexts))
    metrics = qa.evaluate(questions, [[("film", i)] for _, i in answers])
    assert metrics["exact_match"] >= 0.75, (metrics, predicted)  # fractions, as every metric
    path = qa.export(str(tmp_path / "exports" / "qa"))
    served = tf.saved_model.load(path).signatures["serving_default"](
        question=tf.constant(["the film"]), context=tf.constant(["great fun film"]))
    assert served["answer"].numpy()[0].decode() in "great fun film"
