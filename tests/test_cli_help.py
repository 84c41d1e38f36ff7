"""`--help` of every console script lists that binary's own flags by group, each with a real
help text (tfmodels.flag_help), and every binary and the Python API start quietly
(tfmodels.quiet_logs): no TensorFlow start-up line on stderr."""
import configparser
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from absl import flags

from tfmodels import config_flags, flag_help, launcher
from tfmodels.quiet_logs import NATIVE_LOG_LINE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A placeholder help text: the config class and field name (what config_flags once generated).
PLACEHOLDER = re.compile(r"\b[A-Z]\w*Config\.\w+\b")


def _console_scripts():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines if line.strip())


def _env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("_QUIET_LOGS_FILTERING", "TF_CPP_MIN_LOG_LEVEL")}
    return dict(env, KERAS_BACKEND="tensorflow", PYTHONPATH=ROOT)


def _run_script(script, *args):
    return subprocess.run([sys.executable, "-m", "tfmodels.launcher", script, *args],
                          capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)


@pytest.fixture(scope="module")
def helps():
    scripts = sorted(_console_scripts())
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(scripts, pool.map(lambda s: _run_script(s, "--help"), scripts)))


def test_every_console_script_goes_through_the_launcher():
    scripts = _console_scripts()
    assert set(scripts) == set(launcher.CONSOLE_SCRIPTS)
    for script, target in scripts.items():
        module, attribute = target.split(":")
        assert module == "bert_gpt_tf.tfmodels.launcher", script
        assert callable(getattr(launcher, attribute)), script


def test_help_lists_the_binarys_own_flags_by_group(helps):
    for script, result in helps.items():
        assert result.returncode == 0, (script, result.stderr[-2000:])
        out = result.stdout
        groups = re.findall(r"^(\w+) flags:$", out, re.M)
        assert groups and set(groups) <= set(flag_help.GROUPS), (script, groups)
        assert f"{flag_help.UNGROUPED} flags:" not in out, (script, out)
        assert not PLACEHOLDER.search(out), (script, PLACEHOLDER.search(out).group())
        entries = re.findall(r"^  (--\S+)\n((?:      .*\n)+)", out, re.M)
        assert entries, script
        for name, text in entries:
            assert "default:" in text, (script, name)
            # A real sentence, not an empty or one-word placeholder.
            summary = re.split(r"\((?:one of|default):", text)[0]
            assert len(summary.split()) >= 2, (script, name, text)
        assert "--helpfull" in out
        assert "absl" not in "".join(n for n, _ in entries)  # only our flags, not absl's
        assert not result.stderr.strip(), (script, result.stderr[:2000])  # quiet start-up


def test_fixed_sets_are_listed_and_the_tasks_named(helps):
    finetune = helps["bert-gpt-finetune"].stdout
    task = finetune.split("  --task\n", 1)[1].split("\n  --", 1)[0]
    for name in ("mrpc", "sst2", "squad_v1", "conll2003", "story_cloze"):
        assert name in task
    assert "one of: full | frozen | top_k | gradual" in " ".join(finetune.split())
    assert "one of: sentences | plain" in " ".join(
        helps["bert-gpt-create-pretraining-data"].stdout.split())


def test_a_value_outside_a_fixed_set_is_refused_in_one_line():
    result = _run_script("bert-gpt-create-pretraining-data", "--input_files=x.txt",
                         "--output_dir=unused", "--input_format=csv")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "input_format" in lines[0] and "sentences" in lines[0], lines


def test_the_python_api_imports_quietly():
    result = subprocess.run(
        [sys.executable, "-c", "import finetune, tensorflow as tf; print(int(tf.constant(3)))"],
        capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "3", result.stderr[-2000:]
    assert not [l for l in result.stderr.splitlines() if NATIVE_LOG_LINE.match(l.encode())], \
        result.stderr
    assert "cuInit" not in result.stderr and "E0000" not in result.stderr


def test_a_config_field_without_help_is_refused():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Config:
        documented: int = config_flags.option(1, "A real help text.")
        undocumented: int = 2

    with pytest.raises(TypeError, match="Config.undocumented has no help text"):
        config_flags.define_flags_from_dataclass(Config, flag_values=flags.FlagValues())


def test_an_unknown_flag_name_prints_as_ungrouped_and_overrides_apply():
    grouped = flag_help.grouped(["seq_length", "no_such_flag", "top_k"], {"top_k": "generation"})
    assert grouped == {"data": ["seq_length"], "generation": ["top_k"],
                       flag_help.UNGROUPED: ["no_such_flag"]}
