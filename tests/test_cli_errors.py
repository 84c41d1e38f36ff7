"""Errors a user can act on (issue 15, cases 11 and 12): every binary prints an expected error
as one line on stderr with exit code 2 and no traceback (tfmodels.cli.run_binary), and
fine-tuning / serving name a missing checkpoint, a vocabulary of another size, a bad flag
value, a truncated .keras file, a SavedModel without variables and an output_dir that holds
an earlier run's results."""
import os
import subprocess
import sys

import keras
import pytest
import tensorflow as tf

from finetune.trainer import FinetuneConfig, load_pretrained, run_finetune
from tfmodels.checkpoints.formats import load_checkpoint
from tests.support import PROJECT_ROOT, finetune_config
from tfmodels import cli
from tfmodels.model_files import check_saved_model


def quiet(message):
    del message


def run_module(module, *args, stdin=""):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, input=stdin)


def error_lines(result, program):
    """Our lines on stderr (TensorFlow's C++ start-up logging may precede them)."""
    return [line for line in result.stderr.splitlines() if line.startswith(program)]


# ---- case 12: one line, exit code 2, traceback on request --------------------------------------

def test_guarded_main_reports_expected_errors_in_one_line(capsys, monkeypatch):
    def main(argv):
        raise ValueError("records/x.txt: line 3\nexpected two fields")

    with pytest.raises(SystemExit) as exit_info:
        cli.guarded(main)(["prog"])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.endswith(": error: records/x.txt: line 3 expected two fields\n")
    assert "Traceback" not in stderr and stderr.count("\n") == 1

    monkeypatch.setattr(sys, "argv", ["prog", "--verbose_errors"])  # flags unparsed here
    with pytest.raises(SystemExit):
        cli.guarded(main)(["prog"])
    stderr = capsys.readouterr().err
    assert "Traceback (most recent call last)" in stderr and "ValueError" in stderr
    assert stderr.endswith(": error: records/x.txt: line 3 expected two fields\n")

    def buggy(argv):
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        cli.guarded(buggy)(["prog"])




def test_importing_a_binary_defines_no_flags():
    """Binaries define their flags when they run (tfmodels.cli.run_binary), so tests, other
    tools and the ablation workspace can import them, and two of them, side by side."""
    script = f"""
import importlib, pkgutil
from absl import flags
import finetune, pretraining, tfmodels, tools
names = [m.name for package in (finetune, pretraining, tfmodels, tools)
         for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
defining = []
for name in sorted(names):
    before = set(flags.FLAGS)
    importlib.import_module(name)
    if set(flags.FLAGS) != before:
        defining.append(name)
print("defining:", defining)
"""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "defining: []" in result.stdout, result.stdout


def test_tensorflow_errors_lose_their_decorations():
    error = tf.errors.DataLossError(
        None, None, "{{function_node __wrapped__IteratorGetNext_output_types_1_device_/job:"
                    "localhost/replica:0/task:0/device:CPU:0}} truncated record at 42543 "
                    "[Op:IteratorGetNext]")
    assert cli.is_expected_error(error)
    assert cli.one_line_message(error) == "truncated record at 42543"


def test_binaries_print_one_line_and_exit_2(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    (records / "manifest.json").write_text("{}")
    bad_flag = run_module("pretraining.create_pretraining_data", "--input_files=x",
                          f"--output_dir={tmp_path / 'o'}", "--n_ctx=abc")
    assert bad_flag.returncode == 2, bad_flag.stderr[-2000:]
    assert error_lines(bad_flag, "create_pretraining_data.py") == [
        "create_pretraining_data.py: error: flag --n_ctx=abc: invalid literal for int() "
        "with base 10: 'abc'"]
    (tmp_path / "empty.txt").write_text("")
    args = ["pretraining.create_pretraining_data", f"--input_files={tmp_path / 'empty.txt'}",
            f"--output_dir={tmp_path / 'o'}", f"--vocab_file={tmp_path / 'missing-vocab.txt'}"]
    data = run_module(*args)
    assert data.returncode == 2 and "Traceback" not in data.stderr
    assert len(error_lines(data, "create_pretraining_data.py")) == 1
    assert "missing-vocab.txt" in data.stderr
    pretrain = run_module("pretraining.run_pretraining", "--model=gpt",
                          "--model_config=gpt_test", f"--input_files={records}/*",
                          f"--model_dir={tmp_path / 'model'}")
    assert pretrain.returncode == 2 and "Traceback" not in pretrain.stderr
    assert error_lines(pretrain, "run_pretraining.py") == [
        f"run_pretraining.py: error: record file pattern '{records}/*' matches no record "
        f"file (only {records}/manifest.json); name the shards, e.g. '<folder>/*.tfrecord'"]
    predict = run_module("tools.predict", f"--saved_model={tmp_path}", stdin="")
    assert predict.returncode == 2 and predict.stderr == (
        "predict.py: error: stdin: no input lines (empty); expected one example per line\n")
    renamed = run_module("finetune.run_finetune", "--task=sst2", "--strategy=frozen",
                         f"--data_dir={tmp_path}", f"--output_dir={tmp_path / 'ft'}")
    assert renamed.returncode == 2 and error_lines(renamed, "run_finetune.py") == [
        "run_finetune.py: error: --strategy is now --freezing (full | frozen | top_k | "
        "gradual); tf.distribute strategies are --distribution_strategy"]


# ---- case 11: fine-tuning and serving inputs ------------------------------------------------

def test_missing_checkpoint_is_named_before_the_vocabulary(tmp_path):
    config = finetune_config(task="sst2", data_dir="d", output_dir=str(tmp_path),
                            init_checkpoint=str(tmp_path / "no-such-run"))
    with pytest.raises(FileNotFoundError, match=r"init_checkpoint .*no-such-run does not exist"):
        load_pretrained(config, log=quiet)


def test_vocabulary_must_match_the_embedding_exactly(minilm_dir, tmp_path):
    vocab = tmp_path / "vocab.txt"
    tokens = open(minilm_dir / "vocab.txt", encoding="utf-8").read().split("\n")[:30000]
    vocab.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    config = finetune_config(task="sst2", data_dir="d", output_dir=str(tmp_path),
                            init_checkpoint=str(minilm_dir), vocab_file=str(vocab))
    with pytest.raises(ValueError, match="30000 ids but the model's embedding has 30522 rows"):
        load_pretrained(config, log=quiet)


def test_bad_learning_rates_name_the_flag():
    with pytest.raises(ValueError, match=r"learning_rates must be a tuple of numbers, "
                                         r"got \('abc',\)"):
        finetune_config(task="sst2", data_dir="d", output_dir="o", learning_rates=("abc",))
    with pytest.raises(ValueError, match=r"seeds must be a tuple of ints, got \[1\]"):
        finetune_config(task="sst2", data_dir="d", output_dir="o", seeds=[1])
    # The flag parses its items: a bad one is a flag error naming the flag.
    from absl import flags
    from tfmodels.config_flags import define_flags_from_dataclass
    values = flags.FlagValues()
    define_flags_from_dataclass(FinetuneConfig, flag_values=values)
    with pytest.raises(flags.IllegalFlagValueError,
                       match=r"--learning_rates=5e-5,abc: expected a comma-separated list of "
                             r"floats, got '5e-5,abc'"):
        values(["prog", "--learning_rates=5e-5,abc"])


def test_truncated_keras_file_is_called_truncated(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(tmp_path / "model.keras")
    data = (tmp_path / "model.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.keras is not a readable .keras file: truncated "
                                         r"or corrupt"):
        load_checkpoint(str(tmp_path / "cut.keras"))


def test_saved_model_without_variables(tmp_path):
    module = tf.Module()
    module.weight = tf.Variable(1.0)
    module.call = tf.function(lambda x: x * module.weight,
                              input_signature=[tf.TensorSpec([], tf.float32)])
    export = tmp_path / "export" / "1"
    tf.saved_model.save(module, str(export))
    check_saved_model(str(export))
    for name in os.listdir(export / "variables"):
        os.remove(export / "variables" / name)
    os.rmdir(export / "variables")
    with pytest.raises(ValueError, match=r"SavedModel .*export/1 has no variables \(.*variables"
                                         r"\.index is missing\)"):
        check_saved_model(str(export))


def test_finetune_refuses_an_output_dir_with_earlier_results(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    config = finetune_config(task="sst2", data_dir="d", output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"already holds fine-tuning results \(results.json\); "
                                         r"pass --overwrite_output_dir"):
        run_finetune(config, log=quiet)
    # With the flag it goes on (and fails later, on the missing vocabulary).
    with pytest.raises(ValueError, match="needs a WordPiece vocabulary"):
        run_finetune(finetune_config(task="sst2", data_dir="d", output_dir=str(tmp_path),
                                    overwrite_output_dir=True, model_config="bert_test",
                                    vocab_file=str(tmp_path / "nothing.txt")), log=quiet)
