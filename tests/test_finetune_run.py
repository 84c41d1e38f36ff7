"""The fine-tuning loop and binary (finetune.trainer, finetune.run_finetune).

End-to-end runs use tiny configs (bert_test / gpt_test resized to the real vocabularies) or the
real MiniLM on 64-example slices of the shared data, one task of each kind; the lr sweep's
selection and mean/std are checked against hand-computed numbers with a fake single-run
function.
"""
import csv
import dataclasses
import json
import os
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from finetune.features import encode_examples
from finetune.readers.common import holdout_split
from finetune.tasks import get_task
from finetune.config import FinetuneConfig
from finetune.data import load_task_data
from finetune.kinds import Decoded
from finetune.trainer import RunResult, load_pretrained, run_finetune, summarize_runs
from tfmodels import configs
from tfmodels.bert import BertEncoder
from tfmodels.checkpoints.formats import detect_checkpoint_format, load_checkpoint
from tfmodels.gpt import GptLanguageModel
from tfmodels.tokenizers.wordpiece import WordPieceTokenizer
from tests.support import finetune_config

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
QUIET = lambda message: None


@pytest.fixture(scope="module")
def files(bert_vocab_file, gpt_bpe_files):
    return {"vocab": bert_vocab_file, **gpt_bpe_files}


def tiny(files, model, **overrides):
    """A 64-example, one-epoch config on the tiny model of `model`, real vocabulary."""
    values = dict(model=model, model_config=f"{model}_test", seq_length=32, train_batch_size=8,
                  eval_batch_size=4, epochs=1.0, max_train_examples=64, learning_rates=(1e-3,),
                  log_every=1000)
    if model == "bert":
        values["vocab_file"] = files["vocab"]
    else:
        values.update(bpe_encoder_file=files["encoder"], bpe_merges_file=files["merges"])
    values.update(overrides)
    return finetune_config(**values)


def read_results(output_dir):
    with open(os.path.join(output_dir, "results.json"), encoding="utf-8") as f:
        return json.load(f)


def check_common(results, output_dir, n_eval):
    assert os.path.isfile(os.path.join(output_dir, "model.keras"))
    assert results == read_results(output_dir)
    assert len(results["runs"]) == 1 and results["chosen_learning_rate"] == 1e-3
    assert results["seconds_per_step"] > 0 and results["runs"][0]["train_steps"] >= 1
    assert results["num_eval_examples"] == n_eval
    assert np.isfinite(results["runs"][0]["final_loss"])
    return results["selected_run"]["metrics"]


# ---- end to end, one task of each kind ----------------------------------------------------------

def test_sst2_bert_end_to_end_with_test_predictions_and_reloadable_model(files, shared_data,
                                                                        tmp_path):
    config = tiny(files, "bert", task="sst2", data_dir=str(shared_data / "glue" / "SST-2"),
                  output_dir=str(tmp_path))
    results = run_finetune(config, log=QUIET)
    metrics = check_common(results, str(tmp_path), n_eval=6)
    assert results["eval_source"] == "holdout" and results["num_train_examples"] == 58
    assert 0.0 <= metrics["accuracy"] <= 1.0 and results["checkpoint_format"] == "random"
    with open(tmp_path / "predictions" / "eval" / "SST-2.tsv") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["index", "prediction"] and len(rows) == 7
    with open(tmp_path / "predictions" / "test" / "SST-2.tsv") as f:
        test_rows = f.read().splitlines()
    assert len(test_rows) == 1 + 1821 and test_rows[1].split("\t")[0] == "0"
    # The saved model reproduces the written predictions and accuracy.
    model = keras.saving.load_model(str(tmp_path / "model.keras")).task_model
    task = get_task("sst2")
    _, held = holdout_split(task.read(config.data_dir, "train")[:64], 0.1)
    features = encode_examples(held, "classification", "bert",
                               WordPieceTokenizer(files["vocab"]), 32, task.label_names)
    predicted = np.argmax(model(features.inputs(), training=False)["logits"], -1)
    assert [task.label_names[p] for p in predicted] == [r[1] for r in rows[1:]]
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted == features.labels()["label"]))
    # Beside the model's figure, what always answering the commonest held-out label scores.
    gold = list(features.labels()["label"])
    commonest = max(sorted(set(gold)), key=gold.count)
    assert results["constant_answer"]["accuracy"] == pytest.approx(gold.count(commonest) / 6)
    assert results["diverged_runs"] == 0 and results["runs"][0]["diverged"] is None
    # model.keras carries its tokenizer: with results.json gone and no tokenizer flag, the
    # export (and keras.saving, as a TextClassifier on raw text) answer as the run did.
    from finetune import TextClassifier, export
    os.rename(tmp_path / "results.json", tmp_path / "results.moved")
    version = export.export_from_source(export.Source(str(tmp_path / "model.keras")),
                                        str(tmp_path / "serving"))
    served = tf.saved_model.load(version).signatures["serving_default"](
        text=tf.constant([ex.text_a for ex in held]))
    assert [label.decode() for label in served["labels"].numpy()] == [r[1] for r in rows[1:]]
    reloaded = keras.saving.load_model(str(tmp_path / "model.keras"))
    assert isinstance(reloaded, TextClassifier) and reloaded.seq_length == 32
    assert reloaded.predict_labels([ex.text_a for ex in held]) == [r[1] for r in rows[1:]]


def scalar_tags(folder):
    """{run: tags} of the TensorBoard event files under `folder` (train/, eval/)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = {}
    for run in sorted(os.listdir(folder)):
        events = EventAccumulator(str(folder / run))
        events.Reload()
        tags[run] = set(events.Tags()["tensors"])
    return tags


def test_fine_tuning_writes_train_and_eval_runs_for_tensorboard(files, shared_data, tmp_path,
                                                                 monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from finetune import trainer
    calls = []
    evaluate_split = trainer.evaluate_split
    monkeypatch.setattr(trainer, "evaluate_split",
                        lambda *args: calls.append(1) or evaluate_split(*args))
    config = tiny(files, "bert", task="sst2", data_dir=str(shared_data / "glue" / "SST-2"),
                  output_dir=str(tmp_path), epochs=2.0, eval_every_epoch=True,
                  predict_test=False, save_model=False)
    results = run_finetune(config, log=QUIET)
    folder = tmp_path / "tensorboard" / "lr0.001_seed0"
    tags = scalar_tags(folder)
    assert tags["train"] >= {"loss", "accuracy", "learning_rate", "grad_norm",
                             "examples_per_second"}
    assert tags["eval"] == {"accuracy"}   # SST-2's metric
    # One evaluation per epoch; the last epoch's is the run's, not evaluated a second time.
    run = results["runs"][0]
    assert len(calls) == 2 and [m["step"] for m in run["epoch_metrics"]] == [
        run["train_steps"] // 2, run["train_steps"]]
    assert run["epoch_metrics"][-1]["accuracy"] == run["metrics"]["accuracy"]
    events = EventAccumulator(str(folder / "eval"))
    events.Reload()
    assert [e.step for e in events.Tensors("accuracy")] == [m["step"]
                                                            for m in run["epoch_metrics"]]


def test_a_diverging_run_stops_is_marked_and_never_chosen(files, shared_data, tmp_path):
    data_dir = str(shared_data / "glue" / "SST-2")
    config = tiny(files, "bert", task="sst2", data_dir=data_dir, output_dir=str(tmp_path / "a"),
                  learning_rates=(1e-3, 1e6), predict_test=False)
    messages = []
    results = run_finetune(config, log=messages.append)
    assert results["chosen_learning_rate"] == 1e-3 and results["diverged_runs"] == 1
    diverged = results["runs"][1]["diverged"]
    assert diverged.startswith("fine-tune lr 1e+06 seed 0: diverged at step ")
    assert "at learning rate 1e+06" in diverged or "at learning rate" in diverged
    assert results["per_learning_rate"][repr(1e6)]["diverged"] is True
    assert any("1 of 2 runs diverged" in m for m in messages)
    model = keras.saving.load_model(str(tmp_path / "a" / "model.keras"))
    assert all(np.isfinite(w).all() for w in model.get_weights())
    with pytest.raises(ValueError, match="every run diverged \\(1 of 1\\): fine-tune lr 1e\\+06"):
        run_finetune(dataclasses.replace(config, learning_rates=(1e6,),
                                         output_dir=str(tmp_path / "b")), log=QUIET)
    assert not (tmp_path / "b" / "results.json").exists()


@pytest.mark.slow
def test_sst2_real_minilm_end_to_end(minilm_dir, shared_data, tmp_path):
    config = finetune_config(task="sst2", model="bert", init_checkpoint=str(minilm_dir),
                            data_dir=str(shared_data / "glue" / "SST-2" / "train.tsv"),
                            output_dir=str(tmp_path), seq_length=32, train_batch_size=16,
                            epochs=1.0, max_train_examples=64, learning_rates=(5e-5,),
                            save_model=False, log_every=1000,
                            export_dir=str(tmp_path / "exports"))
    results = run_finetune(config, log=QUIET)
    assert results["checkpoint_format"] == "hf_bert" and results["model_file"] is None
    # --export_dir: the selected model goes straight to a TF Serving version folder.
    assert results["export"] == str(tmp_path / "exports" / "sst2" / "1")
    assert os.path.isfile(tmp_path / "exports" / "sst2" / "1" / "saved_model.pb")
    assert os.stat(tmp_path / "results.json").st_mode & 0o044  # readable, not mkstemp's 0600
    assert results["runs"][0]["train_steps"] == 58 // 16
    assert 0.0 <= results["selected_run"]["metrics"]["accuracy"] <= 1.0
    assert results["config"]["warmup_fraction"] == 0.1
    # The vocabulary as resolved beside the checkpoint: export and predict find it from here.
    assert results["config"]["vocab_file"] == str(minilm_dir / "vocab.txt")
    assert os.path.isfile(tmp_path / "predictions" / "eval" / "SST-2.tsv")


def test_sst2_gpt_end_to_end(files, shared_data, tmp_path):
    config = tiny(files, "gpt", task="sst2", output_dir=str(tmp_path),
                  data_dir=str(shared_data / "glue" / "SST-2" / "train.tsv"))
    results = run_finetune(config, log=QUIET)
    assert 0.0 <= check_common(results, str(tmp_path), 6)["accuracy"] <= 1.0
    assert results["config"]["warmup_fraction"] == 0.002
    assert results["num_test_examples"] == 0  # a single file: no test split


def test_stsb_gpt_symmetric_regression(files, shared_data, tmp_path):
    config = tiny(files, "gpt", task="stsb", output_dir=str(tmp_path),
                  data_dir=str(shared_data / "glue" / "STS-B" / "train.tsv"))
    metrics = check_common(run_finetune(config, log=QUIET), str(tmp_path), 6)
    assert -1.0 <= metrics["pearson"] <= 1.0 and -1.0 <= metrics["spearman"] <= 1.0
    model = keras.saving.load_model(str(tmp_path / "model.keras")).task_model
    assert model.symmetric and model.regression and model.aux_lm
    values = [float(line.split("\t")[1]) for line in
              (tmp_path / "predictions" / "eval" / "STS-B.tsv").read_text().splitlines()[1:]]
    assert len(values) == 6 and all(0.0 <= v <= 5.0 for v in values)


def test_squad_span_end_to_end(files, shared_data, tmp_path):
    config = tiny(files, "bert", task="squad_v1", output_dir=str(tmp_path),
                  data_dir=str(shared_data / "squad" / "train-v1.1-subset.json"),
                  max_train_examples=20, seq_length=64, doc_stride=32, max_query_length=16)
    metrics = check_common(run_finetune(config, log=QUIET), str(tmp_path), 2)
    assert 0.0 <= metrics["exact_match"] <= metrics["f1"] <= 100.0
    answers = json.loads((tmp_path / "predictions" / "eval" / "predictions.json").read_text())
    held = get_task("squad_v1").read(config.data_dir, "train")[18:20]
    assert sorted(answers) == sorted(ex.qid for ex in held)
    for ex in held:  # every answer is a span of its context
        assert answers[ex.qid] in ex.context


def test_story_cloze_gpt_multiple_choice(files, shared_data, tmp_path):
    config = tiny(files, "gpt", task="story_cloze", output_dir=str(tmp_path),
                  data_dir=str(shared_data / "storycloze"), lm_weight=0.0)
    metrics = check_common(run_finetune(config, log=QUIET), str(tmp_path), 6)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    lines = (tmp_path / "predictions" / "eval" / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 6 and all(r["prediction"] in (0, 1) for r in records)
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-5 for r in records)
    correct = np.mean([r["prediction"] == r["label"] for r in records])
    assert metrics["accuracy"] == pytest.approx(correct)


def test_conll_token_classification_uses_the_dev_file(files, shared_data, tmp_path):
    config = tiny(files, "bert", task="conll2003", output_dir=str(tmp_path),
                  data_dir=str(shared_data / "conll2003"), max_eval_examples=24,
                  eval_every_epoch=True)
    results = run_finetune(config, log=QUIET)
    metrics = check_common(results, str(tmp_path), 24)
    assert results["eval_source"] == "dev" and results["num_train_examples"] == 64
    assert 0.0 <= metrics["f1"] <= 1.0 and 0.0 <= metrics["accuracy"] <= 1.0
    assert results["runs"][0]["epoch_metrics"][-1]["f1"] == metrics["f1"]
    records = [json.loads(line) for line in
               (tmp_path / "predictions" / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 24
    assert all(len(r["predictions"]) == len(r["words"]) == len(r["tags"]) for r in records)


def test_mrpc_bilstm_with_soft_f1_end_to_end(files, shared_data, tmp_path):
    # The two ablation switches together: a BiLSTM between encoder and head, soft-F1 loss.
    config = tiny(files, "bert", task="mrpc", output_dir=str(tmp_path),
                  data_dir=str(shared_data / "glue" / "MRPC" / "train.tsv"),
                  bilstm_layers=1, bilstm_units=16, loss="soft_f1")
    results = run_finetune(config, log=QUIET)
    metrics = check_common(results, str(tmp_path), 6)
    assert results["main_metric"] == "f1" and np.isfinite(metrics["f1"])
    assert 0.0 <= metrics["f1"] <= 1.0 and 0.0 <= results["runs"][0]["final_loss"] <= 1.0
    assert results["config"]["loss"] == "soft_f1" and results["config"]["bilstm_layers"] == 1
    model = keras.saving.load_model(str(tmp_path / "model.keras")).task_model
    assert model.bilstm_layers == 1 and model.bilstm_units == 16


@pytest.mark.slow
def test_gradual_unfreezing_under_mirrored_strategy(files, shared_data, tmp_path,
                                                     mirrored_strategy):
    """7 steps, a stage every 3: the head alone, then + layer 1 (step 3), + layer 0 (step 6);
    the embeddings never unfreeze. Batches and eval are split over two replicas."""
    config = tiny(files, "bert", task="sst2", output_dir=str(tmp_path),
                  data_dir=str(shared_data / "glue" / "SST-2" / "train.tsv"),
                  freezing="gradual", unfreeze_steps_per_stage=3, classifier_dropout=0.0)
    results = run_finetune(config, strategy=mirrored_strategy, log=QUIET)
    assert results["runs"][0]["train_steps"] == 7
    assert 0.0 <= results["selected_run"]["metrics"]["accuracy"] <= 1.0
    trained = keras.saving.load_model(str(tmp_path / "model.keras")).task_model.backbone
    initial = load_pretrained(config, log=QUIET).build(seed=0)
    same = lambda layer: all(np.array_equal(a, b) for a, b in zip(
        getattr(trained, layer).get_weights(), getattr(initial, layer).get_weights()))
    assert same("token_embedding") and same("position_embedding")
    for i in (0, 1):
        assert not all(np.array_equal(a, b) for a, b in zip(
            trained.transformer_layers[i].get_weights(),
            initial.transformer_layers[i].get_weights()))


# ---- the sweep -----------------------------------------------------------------------------------

# accuracy by (lr, seed): means 0.6, 0.7, 0.7 -> 2e-3 wins the tie with 3e-3 (listed first)
TABLE = {(1e-3, 0): 0.5, (1e-3, 1): 0.7, (1e-3, 2): 0.6,
         (2e-3, 0): 0.8, (2e-3, 1): 0.6, (2e-3, 2): 0.7,
         (3e-3, 0): 0.9, (3e-3, 1): 0.5, (3e-3, 2): 0.7}


def fake_run(ctx, lr, seed):
    n = len(ctx.data.eval.examples)
    marker = 1 if (lr, seed) == (2e-3, 0) else 0  # the run selection must pick
    return RunResult(lr, seed, {"accuracy": TABLE[(lr, seed)]}, train_steps=10,
                     seconds_per_step=0.1 * (seed + 1), decoded=Decoded([marker] * n))


def test_sweep_chooses_the_best_mean_and_writes_the_selected_run(files, shared_data, tmp_path):
    config = tiny(files, "bert", task="sst2", output_dir=str(tmp_path),
                  data_dir=str(shared_data / "glue" / "SST-2" / "train.tsv"),
                  learning_rates=(1e-3, 2e-3, 3e-3), seeds=(0, 1, 2))
    results = run_finetune(config, run_fn=fake_run, log=QUIET)
    assert results["chosen_learning_rate"] == 2e-3
    assert results["selected_run"]["seed"] == 0 and results["mean"] == pytest.approx(0.7)
    assert results["std"] == pytest.approx(0.1)  # sample std of 0.8, 0.6, 0.7
    per_lr = results["per_learning_rate"]
    assert per_lr["0.001"]["mean"] == pytest.approx(0.6)
    assert per_lr["0.001"]["std"] == pytest.approx(0.1)
    assert per_lr["0.003"]["std"] == pytest.approx(np.std([0.9, 0.5, 0.7], ddof=1))
    assert results["seconds_per_step"] == pytest.approx(0.2)
    assert [(r["learning_rate"], r["seed"]) for r in results["runs"]] == list(TABLE)
    rows = (tmp_path / "predictions" / "eval" / "SST-2.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[1] for r in rows] == ["1"] * 6  # the (2e-3, seed 0) run's file
    assert results["model_file"] is None  # the fake runs have no model


def test_summarize_runs_by_hand():
    runs = [RunResult(lr, seed, {"f1": value}) for (lr, seed), value in TABLE.items()]
    summary = summarize_runs(runs, "f1", (3e-3, 2e-3, 1e-3))
    assert summary["chosen_learning_rate"] == 3e-3  # tie 0.7 / 0.7: the first listed
    assert summary["selected_seed"] == 0
    single = summarize_runs([RunResult(1e-3, 5, {"f1": 0.25})], "f1", (1e-3,))
    assert (single["mean"], single["std"], single["selected_seed"]) == (0.25, 0.0, 5)
    with pytest.raises(ValueError, match="no runs"):
        summarize_runs([], "f1", (1e-3,))


def test_flags_build_the_config():
    values = flags.FlagValues()
    from tfmodels.config_flags import dataclass_from_flags, define_flags_from_dataclass
    define_flags_from_dataclass(FinetuneConfig, flag_values=values)
    values(["prog", "--task=rte", "--data_dir=d", "--output_dir=o", "--learning_rates=5e-5,3e-5",
            "--seeds=1,2", "--jit_compile", "--epochs=1.5"])
    config = dataclass_from_flags(FinetuneConfig, values)
    assert config.learning_rates == (5e-5, 3e-5) and config.seeds == (1, 2)
    assert config.jit_compile and config.epochs == 1.5 and config.model == "bert"
    assert finetune_config(task="rte", data_dir="d", output_dir="o",
                          model="gpt").resolved_learning_rates == (6.25e-5,)


# ---- checkpoints -------------------------------------------------------------------------------

def write_tf1_bert(folder, encoder, vocab_file):
    from tfmodels.checkpoints import slots as slot_lib
    from tfmodels.checkpoints.tf1_bert import canonical_to_tf1
    cfg = encoder.config
    variables = canonical_to_tf1(slot_lib.read_slots(slot_lib.bert_slots(encoder)), cfg.num_layers)
    with tf.Graph().as_default():
        tf_vars = [tf.compat.v1.Variable(v, name=k) for k, v in variables.items()]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(tf_vars).save(session, str(folder / "bert_model.ckpt"),
                                                   write_meta_graph=False)
    (folder / "bert_config.json").write_text(json.dumps({
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size, "hidden_act": "gelu",
        "max_position_embeddings": cfg.max_positions, "type_vocab_size": 2}))
    (folder / "vocab.txt").write_text(pathlib.Path(vocab_file).read_text())


def test_checkpoint_formats_are_detected_and_loaded(minilm_dir, files, tmp_path):
    assert detect_checkpoint_format("") == "random"
    assert detect_checkpoint_format(str(minilm_dir)) == "hf_bert"
    assert isinstance(load_checkpoint(str(minilm_dir)), BertEncoder)
    for source, fmt in (("npy", "openai_gpt"), ("hf", "hf_gpt")):
        folder = str(FIXTURES / "tiny_openai_gpt" / source)
        assert detect_checkpoint_format(folder) == fmt
        lm = load_checkpoint(folder, num_heads=4)
        assert isinstance(lm, GptLanguageModel) and lm.config.num_heads == 4
    # TF1 BERT: a tiny encoder written in google-research/bert's layout.
    cfg = configs.get_config("bert_test", vocab_size=30522)
    keras.utils.set_random_seed(1)
    encoder = BertEncoder(cfg)
    (tmp_path / "tf1").mkdir()
    write_tf1_bert(tmp_path / "tf1", encoder, files["vocab"])
    assert detect_checkpoint_format(str(tmp_path / "tf1")) == "tf1_bert"
    loaded = load_checkpoint(str(tmp_path / "tf1"))
    for a, b in zip(loaded.get_weights(), encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    # .keras files, and pretraining model_dirs holding pretrained.keras.
    (tmp_path / "pre").mkdir()
    encoder.save(str(tmp_path / "pre" / "pretrained.keras"))
    assert detect_checkpoint_format(str(tmp_path / "pre" / "pretrained.keras")) == "keras"
    assert detect_checkpoint_format(str(tmp_path / "pre")) == "keras"
    # The vocab beside the checkpoint is found, the weights become the runs' start point.
    config = finetune_config(task="sst2", init_checkpoint=str(tmp_path / "tf1"), data_dir="d",
                            output_dir="o", seq_length=32)
    pretrained = load_pretrained(config, log=QUIET)
    assert pretrained.checkpoint_format == "tf1_bert"
    rebuilt = pretrained.build(seed=3)
    for a, b in zip(rebuilt.get_weights(), encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    # transfer_layers=1: embeddings and layer 0 copied, layer 1 re-initialised.
    partial = pretrained.build(seed=3, transfer_layers=1)
    np.testing.assert_array_equal(partial.transformer_layers[0].get_weights()[0],
                                  encoder.transformer_layers[0].get_weights()[0])
    assert not np.array_equal(partial.transformer_layers[1].get_weights()[0],
                              encoder.transformer_layers[1].get_weights()[0])


def test_undetectable_checkpoints_are_named(tmp_path):
    with pytest.raises(ValueError, match="cannot tell the checkpoint format"):
        detect_checkpoint_format(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        detect_checkpoint_format(str(tmp_path / "absent"))
    (tmp_path / "w.h5").write_text("")
    with pytest.raises(ValueError, match="not a .keras model"):
        detect_checkpoint_format(str(tmp_path / "w.h5"))


# ---- bad input -----------------------------------------------------------------------------------

def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown task 'sst3'"):
        finetune_config(task="sst3", data_dir="d", output_dir="o")
    with pytest.raises(ValueError, match="squad_v1.*only BERT"):
        finetune_config(task="squad_v1", model="gpt", data_dir="d", output_dir="o")
    with pytest.raises(ValueError, match="conll2003.*only BERT"):
        finetune_config(task="conll2003", model="gpt", data_dir="d", output_dir="o")
    with pytest.raises(ValueError, match="data_dir is required.*output_dir is required"):
        finetune_config(task="rte")
    with pytest.raises(ValueError, match="freezing must be one of"):
        finetune_config(task="rte", data_dir="d", output_dir="o", freezing="half")
    with pytest.raises(ValueError, match="transfer_layers needs an init_checkpoint"):
        finetune_config(task="rte", data_dir="d", output_dir="o", transfer_layers=2)


def test_loss_and_bilstm_options_are_checked_and_become_flags():
    with pytest.raises(ValueError, match="loss must be one of"):
        finetune_config(task="mrpc", data_dir="d", output_dir="o", loss="focal")
    for task in ("stsb", "squad_v1", "conll2003", "swag"):
        with pytest.raises(ValueError, match=f"soft_f1 is for classification tasks; task "
                                             f"'{task}'"):
            finetune_config(task=task, data_dir="d", output_dir="o", loss="soft_f1")
    with pytest.raises(ValueError, match="bilstm_layers must be >= 0"):
        finetune_config(task="mrpc", data_dir="d", output_dir="o", bilstm_layers=-1)
    with pytest.raises(ValueError, match="bilstm_units >= 1"):
        finetune_config(task="mrpc", data_dir="d", output_dir="o", bilstm_units=0)
    values = flags.FlagValues()
    from tfmodels.config_flags import dataclass_from_flags, define_flags_from_dataclass
    define_flags_from_dataclass(FinetuneConfig, flag_values=values)
    values(["prog", "--task=cola", "--data_dir=d", "--output_dir=o", "--loss=soft_f1",
            "--bilstm_layers=2", "--bilstm_units=64"])
    config = dataclass_from_flags(FinetuneConfig, values)
    assert (config.loss, config.bilstm_layers, config.bilstm_units) == ("soft_f1", 2, 64)
    default = finetune_config(task="cola", data_dir="d", output_dir="o")
    assert (default.loss, default.bilstm_layers, default.bilstm_units) == ("cross_entropy", 0, 768)


def test_loading_errors_name_the_problem(minilm_dir, files, shared_data, tmp_path):
    base = dict(task="sst2", data_dir=str(shared_data / "glue" / "SST-2"),
                output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="needs a WordPiece vocabulary: pass --vocab_file"):
        load_pretrained(finetune_config(model_config="bert_test", **base), log=QUIET)
    with pytest.raises(ValueError, match="needs its BPE files"):
        load_pretrained(finetune_config(model="gpt", model_config="gpt_test", **base), log=QUIET)
    with pytest.raises(ValueError, match="hf_bert checkpoint.*model is 'gpt'"):
        load_pretrained(finetune_config(model="gpt", init_checkpoint=str(minilm_dir),
                                       bpe_encoder_file=files["encoder"],
                                       bpe_merges_file=files["merges"], **base), log=QUIET)
    with pytest.raises(ValueError, match="40481 ids.*203 rows"):  # real BPE, 200-token GPT
        load_pretrained(finetune_config(
            model="gpt", init_checkpoint=str(FIXTURES / "tiny_openai_gpt" / "hf"),
            bpe_encoder_file=files["encoder"], bpe_merges_file=files["merges"], **base),
            log=QUIET)
    with pytest.raises(ValueError, match="seq_length 128 exceeds"):
        load_pretrained(tiny(files, "bert", seq_length=128, **base), log=QUIET)


def test_data_errors_name_the_problem(files, tmp_path):
    (tmp_path / "empty.tsv").write_text("")
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="empty.tsv: file is empty"):
        run_finetune(tiny(files, "bert", task="sst2", data_dir=str(tmp_path / "empty.tsv"),
                          output_dir=out), log=QUIET)
    with pytest.raises(FileNotFoundError, match="data_dir .*absent does not exist"):
        run_finetune(tiny(files, "bert", task="sst2", data_dir=str(tmp_path / "absent"),
                          output_dir=out), log=QUIET)
    (tmp_path / "one.tsv").write_text("sentence\tlabel\ngood film\t1\n")
    with pytest.raises(ValueError, match="1 training and 0 evaluation examples"):
        run_finetune(tiny(files, "bert", task="sst2", data_dir=str(tmp_path / "one.tsv"),
                          output_dir=out), log=QUIET)
    (tmp_path / "few.tsv").write_text("sentence\tlabel\n" + "good film\t1\nbad\t0\n" * 5)
    with pytest.raises(ValueError, match="fewer than one batch of 32"):
        run_finetune(tiny(files, "bert", task="sst2", data_dir=str(tmp_path / "few.tsv"),
                          output_dir=out, train_batch_size=32), log=QUIET)
    assert not os.path.exists(os.path.join(out, "results.json"))


def test_holdout_before_cap_keeps_the_evaluation_set_fixed(files, shared_data):
    """By default the held-out slice is cut from the capped examples (it shrinks with the
    budget); holdout_before_cap cuts it from the whole file first, so every training budget is
    scored on the same examples and trains on exactly max_train_examples."""
    task = get_task("mrpc")
    tokenizer = WordPieceTokenizer(files["vocab"])
    data_dir = str(shared_data / "glue" / "MRPC" / "train.tsv")
    everything = task.read(data_dir, "train")
    _, tail = holdout_split(everything, 0.1)
    config = dict(task="mrpc", data_dir=data_dir, output_dir="unused")
    capped = load_task_data(tiny(files, "bert", max_train_examples=100, **config),
                                    task, tokenizer, QUIET)
    assert (len(capped.train.examples), len(capped.eval.examples)) == (90, 10)
    for cap in (100, 200):
        fixed = load_task_data(
            tiny(files, "bert", max_train_examples=cap, holdout_before_cap=True,
                 max_eval_examples=50, **config), task, tokenizer, QUIET)
        assert len(fixed.train.examples) == cap
        assert fixed.eval.examples == tail[:50]
        assert fixed.train.examples == everything[:cap]
