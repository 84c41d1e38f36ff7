"""The pretraining binary and loop: learning on real records, strategies (one device, mirrored
over two logical CPUs, multi-worker as two local processes), kill-and-resume equality, the
128 -> 512 init_checkpoint phase, optimizer / precision / accumulation options, bad configs."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from pretraining.create_data import DataConfig, create_pretraining_data
from pretraining.trainer import PretrainConfig, build_model, dataset_function, run_pretraining
from tests.support import PROJECT_ROOT, SEQ, finetune_config, pretrain_config
from tfmodels.folder_lock import FolderLocked, exclusive_folder
from tfmodels.training import TrainingDiverged

PREDICTIONS = 10
BERT_VOCAB = "bert_vocab/bert-base-uncased-vocab.txt"


@pytest.fixture(scope="module")
def bert_records(tmp_path_factory, wiki_corpus, bert_vocab_file):
    folder = tmp_path_factory.mktemp("pretrain_records")
    config = DataConfig(vocab_file=bert_vocab_file, max_seq_length=SEQ,
                        max_predictions_per_seq=PREDICTIONS, dupe_factor=1,
                        chunk_bytes=32 << 10)
    create_pretraining_data([str(wiki_corpus(30))], str(folder / "bert"), config,
                            log=lambda m: None)
    return str(folder / "bert" / "*.tfrecord")


@pytest.fixture(scope="module")
def gpt_records(shakespeare_gpt_records):
    return shakespeare_gpt_records


def bert_config(records, model_dir, **overrides):
    values = dict(model="bert", model_config="bert_test", vocab_size=30522,
                  input_files=(records,), seq_length=SEQ, max_predictions_per_seq=PREDICTIONS,
                  global_batch_size=8, train_steps=30, warmup_steps=3, learning_rate=2e-3,
                  model_dir=str(model_dir), checkpoint_every=10, log_every=5,
                  shuffle_buffer=200)
    values.update(overrides)
    return pretrain_config(**values)


def mean_loss(history, key, first):
    rows = history[:5] if first else history[-5:]
    return float(np.mean([row[key] for row in rows]))


def test_bert_learns_and_writes_everything(bert_records, tmp_path):
    history = run_pretraining(bert_config(bert_records, tmp_path), log=lambda m: None)
    assert len(history) == 30 and history[-1]["step"] == 30
    assert {"loss", "mlm_loss", "mlm_accuracy", "mlm_replaced_accuracy", "nsp_loss",
            "nsp_accuracy"} <= set(history[0])
    assert mean_loss(history, "mlm_loss", False) < mean_loss(history, "mlm_loss", True) - 0.5
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-30")
    logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [row["step"] for row in logged] == list(range(1, 31))
    assert "tokens_per_second" in logged[-1]
    assert os.listdir(tmp_path / "train")  # TensorBoard events
    # pretrained.keras holds the final step's weights: those of the step-30 checkpoint.
    reloaded = keras.saving.load_model(str(tmp_path / "pretrained.keras"))
    from_checkpoint = build_model(bert_config(bert_records, tmp_path))
    tf.train.Checkpoint(model=from_checkpoint).read(
        tf.train.latest_checkpoint(str(tmp_path))).expect_partial()
    assert type(reloaded) is type(from_checkpoint)
    assert len(reloaded.weights) == len(from_checkpoint.weights) > 0
    for saved, restored in zip(reloaded.weights, from_checkpoint.weights):
        assert saved.path.split("/", 1)[1] == restored.path.split("/", 1)[1]
        np.testing.assert_array_equal(saved.numpy(), restored.numpy(), err_msg=saved.path)


def test_a_diverging_pretraining_stops_and_keeps_its_last_good_checkpoint(bert_records,
                                                                          tmp_path):
    """At lr 1e6 the loss leaves the finite numbers within a few steps: the run stops with one
    line naming the step, loss and learning rate; no checkpoint or pretrained.keras of the
    diverged weights is written and metrics.jsonl stays strict JSON."""
    config = bert_config(bert_records, tmp_path, learning_rate=1e6, warmup_steps=0,
                         train_steps=30, checkpoint_every=2, log_every=2)
    with pytest.raises(TrainingDiverged, match="pretraining: diverged at step [0-9]+: loss "
                                               ".* at learning rate .*earlier ones are kept"):
        run_pretraining(config, log=lambda m: None)
    assert not (tmp_path / "pretrained.keras").exists()
    rows = [json.loads(line, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
            for line in open(tmp_path / "metrics.jsonl")]
    latest = tf.train.latest_checkpoint(str(tmp_path))
    if latest:  # every checkpoint kept holds finite weights
        model = build_model(config)
        tf.train.Checkpoint(model=model).read(latest).expect_partial()
        assert all(np.isfinite(w).all() for w in model.get_weights())
    assert any(row["loss"] is None or not np.isfinite(row["loss"]) for row in rows)


def test_pretraining_logs_learning_rate_grad_norm_and_eval_to_tensorboard(bert_records,
                                                                          tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    config = bert_config(bert_records, tmp_path, train_steps=4, log_every=2,
                         eval_input_files=(bert_records,), eval_every=2, eval_batches=1)
    run_pretraining(config, log=lambda m: None)
    tags = {}
    for run in ("train", "eval"):
        events = EventAccumulator(str(tmp_path / run))
        events.Reload()
        tags[run] = set(events.Tags()["tensors"])
    assert {"loss", "learning_rate", "grad_norm", "tokens_per_second"} <= tags["train"]
    assert {"loss", "mlm_accuracy", "nsp_accuracy"} <= tags["eval"]
    assert not any(tag.startswith("eval_") for tag in tags["train"])


def test_two_pretrainings_on_one_model_dir(bert_records, tmp_path):
    with exclusive_folder(str(tmp_path), "pretraining"):
        with pytest.raises(FolderLocked, match=f"is being written by pid {os.getpid()}"):
            run_pretraining(bert_config(bert_records, tmp_path), log=lambda m: None)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_gpt_learns(gpt_records, tmp_path):
    config = pretrain_config(model="gpt", model_config="gpt_test", vocab_size=40481,
                            input_files=(gpt_records,), seq_length=SEQ, global_batch_size=8,
                            train_steps=30, warmup_steps=3, learning_rate=3e-3,
                            model_dir=str(tmp_path), checkpoint_every=100, log_every=10,
                            shuffle_buffer=200)
    assert config.decay_shape == "cosine"  # GPT-1's schedule by default
    history = run_pretraining(config, log=lambda m: None)
    assert {"lm_loss", "perplexity", "lm_accuracy"} <= set(history[0])
    assert mean_loss(history, "lm_loss", False) < mean_loss(history, "lm_loss", True) - 1.0


def test_bert_ltr_learns_and_fine_tunes_left_to_right(bert_records, tmp_path, shared_data):
    from finetune.models import build_task_model
    from finetune.tasks import get_task
    from finetune.trainer import FinetuneConfig, load_pretrained
    config = bert_config(bert_records, tmp_path, objective="ltr", use_nsp=False,
                         eval_input_files=(bert_records,), eval_every=30, eval_batches=2)
    # The same records with their static masks undone: the original text, no MLM features.
    batch = next(iter(dataset_function(config, 8)(tf.distribute.InputContext())))
    assert set(batch) == {"input_ids", "input_mask", "segment_ids"}
    assert not (batch["input_ids"].numpy() == 103).any()  # no [MASK] left
    history = run_pretraining(config, log=lambda m: None)
    assert {"lm_loss", "perplexity", "lm_accuracy"} <= set(history[0])
    assert "mlm_loss" not in history[0] and "eval_lm_loss" in history[-1]
    assert mean_loss(history, "lm_loss", False) < mean_loss(history, "lm_loss", True) - 0.5
    saved = keras.saving.load_model(str(tmp_path / "pretrained.keras"))
    assert type(saved).__name__ == "BertCausalLM" and saved.config.causal
    # Fine-tuning's own loading path (a pretraining model_dir) keeps the left-only mask.
    finetune = finetune_config(task="sst2", model="bert", init_checkpoint=str(tmp_path),
                              vocab_file=str(shared_data / BERT_VOCAB), seq_length=SEQ,
                              data_dir=str(tmp_path), output_dir=str(tmp_path / "ft"))
    pretrained = load_pretrained(finetune, log=lambda m: None)
    backbone = pretrained.build(seed=0)
    assert backbone.config.causal
    for a, b in zip(backbone.weights, saved.encoder.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    model = build_task_model(get_task("sst2"), backbone)
    assert model.unused_backbone_layers == [backbone.pooler]
    inputs = {"input_ids": batch["input_ids"][:4], "segment_ids": batch["segment_ids"][:4],
              "input_mask": batch["input_mask"][:4]}
    encoded = model.encode(inputs, training=False)
    last = inputs["input_mask"].numpy().sum(1) - 1
    expected = backbone(inputs)["sequence_output"].numpy()[np.arange(4), last]
    np.testing.assert_allclose(encoded.summary.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert model(inputs)["logits"].shape == (4, 2)


def test_pretraining_objective_errors(bert_records, tmp_path):
    with pytest.raises(ValueError) as error:
        bert_config(bert_records, tmp_path, objective="ltr", dynamic_masking=True,
                    vocab_file="vocab.txt")
    message = str(error.value)
    assert "objective ltr needs use_nsp=False" in message
    assert "dynamic_masking does not apply" in message
    with pytest.raises(ValueError, match="objective 'ltr' is not one for model 'gpt'"):
        pretrain_config(model="gpt", model_config="gpt_test", objective="ltr", use_nsp=False,
                       input_files=(bert_records,), model_dir=str(tmp_path))
    with pytest.raises(ValueError, match="objective 'lm' is not one for model 'bert'"):
        bert_config(bert_records, tmp_path, objective="lm")
    with pytest.raises(ValueError, match="model bert needs a BERT config"):
        build_model(bert_config(bert_records, tmp_path, objective="ltr", use_nsp=False,
                                model_config="gpt_test"))
    with pytest.raises(ValueError) as error:
        bert_config(bert_records, tmp_path, mask_token_rate=1.2, random_token_rate=-0.1)
    assert "mask_token_rate must be in [0, 1], got 1.2" in str(error.value)
    assert "random_token_rate must be in [0, 1], got -0.1" in str(error.value)
    with pytest.raises(ValueError, match=r"mask_token_rate \+ random_token_rate must be <= 1"):
        bert_config(bert_records, tmp_path, mask_token_rate=0.8, random_token_rate=0.3)
    with pytest.raises(ValueError, match="static masks are fixed when the records are made"):
        bert_config(bert_records, tmp_path, mask_token_rate=1.0, random_token_rate=0.0)
    assert build_model(bert_config(bert_records, tmp_path)).config.causal is False


@pytest.mark.parametrize("mask_token_rate, random_token_rate", [(1.0, 0.0), (0.0, 0.0)])
def test_dynamic_masking_mix_reaches_the_pipeline(bert_records, tmp_path, shared_data,
                                                  mask_token_rate, random_token_rate):
    config = bert_config(bert_records, tmp_path, dynamic_masking=True,
                         vocab_file=str(shared_data / BERT_VOCAB),
                         mask_token_rate=mask_token_rate, random_token_rate=random_token_rate)
    batch = next(iter(dataset_function(config, 8)(tf.distribute.InputContext())))
    weights = batch["masked_lm_weights"].numpy() > 0
    rows = np.nonzero(weights)[0]
    shown = batch["input_ids"].numpy()[rows, batch["masked_lm_positions"].numpy()[weights]]
    expected = 103 if mask_token_rate else batch["masked_lm_ids"].numpy()[weights]
    assert weights.sum() > 20 and (shown == expected).all()


# BERT Table 5's rows: MLM + NSP, "No NSP" and "LTR & No NSP". Without NSP some weights get
# no gradient, which the cross-replica all-reduce of the gradients must not see.
# (LTR scores the whole vocabulary at every position, several times the cost of 10 MLM
# predictions: fewer steps, compared first to last.)
@pytest.mark.parametrize("options, loss, steps", [
    (dict(), "mlm_loss", 20),
    (dict(use_nsp=False), "mlm_loss", 20),
    (dict(objective="ltr", use_nsp=False), "lm_loss", 6),
])
def test_mirrored_over_two_logical_cpus(bert_records, tmp_path, mirrored_strategy, options,
                                        loss, steps):
    strategy = mirrored_strategy
    messages = []
    history = run_pretraining(bert_config(bert_records, tmp_path, train_steps=steps,
                                          strategy="mirrored", **options),
                              strategy=strategy, log=messages.append)
    assert any("2 replica(s)" in m for m in messages)
    if steps >= 10:
        assert mean_loss(history, loss, False) < mean_loss(history, loss, True)
    else:
        assert history[-1][loss] < history[0][loss]


@pytest.mark.parametrize("options", [
    dict(optimizer="lamb", gradient_accumulation_steps=2),
    dict(mixed_precision="mixed_bfloat16", jit_compile=True),
    dict(mixed_precision="mixed_float16", dynamic_masking=True, whole_word_masking=True),
])
def test_options_run(bert_records, tmp_path, shared_data, options):
    if options.get("dynamic_masking"):
        options["vocab_file"] = str(shared_data / BERT_VOCAB)
    history = run_pretraining(bert_config(bert_records, tmp_path, train_steps=4,
                                          log_every=1, **options), log=lambda m: None)
    accumulation = options.get("gradient_accumulation_steps", 1)
    assert len(history) == 4 * accumulation
    assert all(np.isfinite(row["loss"]) for row in history)


def test_init_checkpoint_takes_weights_only(bert_records, tmp_path):
    phase1 = tmp_path / "phase1"
    run_pretraining(bert_config(bert_records, phase1, train_steps=4), log=lambda m: None)
    # learning_rate 0: the phase-2 model must still hold phase 1's weights after its step.
    phase2 = tmp_path / "phase2"
    messages = []
    run_pretraining(bert_config(bert_records, phase2, train_steps=1, warmup_steps=0,
                                learning_rate=0.0,
                                init_checkpoint=str(phase1)), log=messages.append)
    assert any("initialised from" in m and "ckpt-4" in m for m in messages)
    first = keras.saving.load_model(str(phase1 / "pretrained.keras"))
    second = keras.saving.load_model(str(phase2 / "pretrained.keras"))
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no checkpoint"):
        run_pretraining(bert_config(bert_records, tmp_path / "p3", train_steps=1, warmup_steps=0,
                                    init_checkpoint=str(empty)), log=lambda m: None)


def test_bad_config_names_every_problem(tmp_path):
    with pytest.raises(ValueError) as error:
        pretrain_config(model="t5", input_files=(), model_dir="", strategy="horovod",
                       global_batch_size=10, gradient_accumulation_steps=3)
    message = str(error.value)
    for part in ("model must be one of bert, gpt, lstm", "input_files is empty", "model_dir is required",
                 "unknown strategy 'horovod'", "not divisible"):
        assert part in message


# ---- the binary, in fresh processes -------------------------------------------------------

def binary_command(records, model_dir, *extra):
    return [sys.executable, "-m", "pretraining.run_pretraining", "--model=bert",
            "--model_config=bert_test", "--vocab_size=30522", f"--input_files={records}",
            f"--seq_length={SEQ}", f"--max_predictions_per_seq={PREDICTIONS}",
            "--global_batch_size=8", "--train_steps=8", "--warmup_steps=2",
            "--learning_rate=2e-3", f"--model_dir={model_dir}", "--checkpoint_every=2",
            "--log_every=1", "--deterministic", "--shuffle_buffer=200", *extra]


def subprocess_env(**extra):
    return {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(PROJECT_ROOT), **extra}


def final_losses(model_dir):
    """Step -> loss, the last logged value of each step (a resumed run re-logs some)."""
    losses = {}
    for line in open(os.path.join(model_dir, "metrics.jsonl")):
        row = json.loads(line)
        losses[row["step"]] = row["loss"]
    return losses


@pytest.mark.slow
def test_killed_run_resumes_to_identical_losses(bert_records, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(binary_command(bert_records, straight), check=True, cwd=PROJECT_ROOT,
                   env=subprocess_env(), capture_output=True)
    process = subprocess.Popen(binary_command(bert_records, killed), cwd=PROJECT_ROOT,
                               env=subprocess_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "ckpt-4.index").exists():
        assert process.poll() is None and time.time() < deadline, "run ended before step 4"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "pretrained.keras").exists()  # it really was cut short
    resumed = subprocess.run(binary_command(bert_records, killed), cwd=PROJECT_ROOT,
                             env=subprocess_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    expected, got = final_losses(straight), final_losses(killed)
    assert sorted(got) == list(range(1, 9))
    assert got == expected


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_two_local_processes(bert_records, tmp_path):
    workers = [f"localhost:{free_port()}", f"localhost:{free_port()}"]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers},
                                "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(
            binary_command(bert_records, tmp_path, "--strategy=multi_worker",
                           "--train_steps=4"),
            cwd=PROJECT_ROOT, env=subprocess_env(TF_CONFIG=tf_config),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
        assert "2 replica(s)" in out  # one per worker, all-reduced together
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")
    assert sorted(final_losses(tmp_path)) == [1, 2, 3, 4]
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".scratch")]


def test_mlm_accuracy_by_input_splits_mask_random_and_kept_positions():
    from pretraining.diagnostics import mlm_accuracy_by_input
    mask_id = 4
    # Predictions at [MASK] (positions 1, 2), random (3) and kept (4) inputs; the last one
    # is padding (weight 0). The model answers 7 everywhere.
    batch = {"input_ids": np.array([[2, 4, 4, 30, 9, 0]]),
             "masked_lm_positions": np.array([[1, 2, 3, 4, 0]]),
             "masked_lm_ids": np.array([[7, 8, 7, 9, 7]]),
             "masked_lm_weights": np.array([[1.0, 1.0, 1.0, 1.0, 0.0]])}

    def always_seven(inputs, training):
        return {"mlm_logits": tf.one_hot(tf.fill([1, 5], 7), 40)}

    result = mlm_accuracy_by_input(always_seven, [batch], mask_id)
    assert result["mask_accuracy"] == 0.5 and result["mask_share"] == 0.5
    assert result["random_accuracy"] == 1.0 and result["kept_accuracy"] == 0.0
    assert result["positions"] == 4 and result["unigram_accuracy"] == 0.5
    with pytest.raises(ValueError, match="no weighted MLM predictions"):
        mlm_accuracy_by_input(always_seven, [{**batch, "masked_lm_weights": np.zeros((1, 5))}],
                              mask_id)


def test_recovery_resumes_from_the_last_good_checkpoint_at_a_lower_learning_rate(bert_records,
                                                                                tmp_path):
    """--recovery_max_trials (TF Model Garden's recovery): a diverging run goes back to its
    last good checkpoint with the learning rate times the factor, a bounded number of times."""
    lines = []
    config = bert_config(bert_records, tmp_path, learning_rate=1e6, warmup_steps=0,
                         train_steps=12, checkpoint_every=4, log_every=2,
                         recovery_max_trials=2, recovery_lr_factor=2e-9)
    history = run_pretraining(config, log=lines.append)
    assert any(re.search(r"recovery 1 of 2: resuming from the last good checkpoint \(.*\) at "
                         r"learning rate 0.002$", line) for line in lines), lines
    assert history[-1]["step"] == 12 and all(np.isfinite(row["loss"]) for row in history)
    model = keras.saving.load_model(str(tmp_path / "pretrained.keras"))
    assert all(np.isfinite(w).all() for w in model.get_weights())
    with open(tmp_path / "pretrain_config.json") as f:
        assert json.load(f)["learning_rate"] == pytest.approx(2e-3)
    # Still diverging after its trials: the error, as without recovery.
    with pytest.raises(TrainingDiverged, match="diverged at step"):
        run_pretraining(bert_config(bert_records, tmp_path / "b", learning_rate=1e6,
                                    warmup_steps=0, checkpoint_every=2, log_every=2,
                                    recovery_max_trials=1, recovery_lr_factor=0.5),
                        log=lambda m: None)
