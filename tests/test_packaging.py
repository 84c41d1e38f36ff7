"""The installed package: one top-level name (bert_gpt_tf), our imports rewritten to it, every
console script resolvable, and `.keras` files portable between a checkout and an install.

Each test builds from a copy of the checkout's packaging files and folders, so no `build/` or
egg-info is left in the repository."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FOLDERS = ("tfmodels", "pretraining", "finetune", "tools")


def copy_project(dest: pathlib.Path) -> pathlib.Path:
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, dest / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def pip(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> pathlib.Path:
    """The wheel, unpacked as pip would install it (a pure-Python wheel is its site layout)."""
    work = tmp_path_factory.mktemp("packaging")
    (work / "project").mkdir()
    project = copy_project(work / "project")
    built = pip("wheel", "--no-deps", "--quiet", "-w", str(work / "dist"), ".", cwd=project)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (work / "dist").glob("*.whl")
    site = work / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_the_wheel_has_one_top_level_name(installed):
    top = sorted(p.name for p in installed.iterdir())
    assert top[0] == "bert_gpt_tf" and len(top) == 2 and top[1].endswith(".dist-info"), top
    assert sorted(p.name for p in (installed / "bert_gpt_tf").iterdir()
                  if p.is_dir()) == sorted(FOLDERS)
    assert (installed / "bert_gpt_tf" / "tools" / "demo_data" / "sst2_sample.tsv").is_file()
    assert (installed / "bert_gpt_tf" / "tfmodels" / "presets.json").is_file()  # the registry
    module = (installed / "bert_gpt_tf" / "finetune" / "export" / "loading.py").read_text()
    assert "from bert_gpt_tf.tfmodels.tokenizers.loading import load_tokenizer" in module
    assert "\nfrom tfmodels" not in module


def test_every_module_imports_from_the_install_alone(installed, tmp_path):
    """A fresh interpreter that sees only the install (not the checkout) imports every module,
    resolves every console script, never loads a top-level tfmodels/pretraining/finetune/tools,
    and loads a `.keras` model this checkout saved, with the same outputs."""
    from tfmodels.bert import BertEncoder
    model = BertEncoder("bert_test")
    ids = np.array([[2, 7, 9, 11, 3, 0]], "int32")
    inputs = {"input_ids": ids, "segment_ids": np.zeros_like(ids),
              "input_mask": (ids > 0).astype("int32")}
    expected = model(inputs)["pooled_output"].numpy()
    model.save(tmp_path / "encoder.keras")
    np.save(tmp_path / "inputs.npy", np.stack([inputs[k] for k in sorted(inputs)]))

    script = f"""
import importlib, json, pkgutil, sys
import numpy as np
from absl import flags
import bert_gpt_tf
names = [m.name for m in pkgutil.walk_packages(bert_gpt_tf.__path__, "bert_gpt_tf.")]
for name in names:
    before = set(flags.FLAGS)
    importlib.import_module(name)
    for flag in set(flags.FLAGS) - before:  # the few tools that still define flags on import
        delattr(flags.FLAGS, flag)
from importlib.metadata import entry_points
scripts = {{e.name: e.value for e in entry_points(group="console_scripts")
           if e.value.startswith("bert_gpt_tf.")}}
for value in scripts.values():
    module, function = value.split(":")
    assert callable(getattr(importlib.import_module(module), function)), value
import keras
model = keras.saving.load_model({str(tmp_path / 'encoder.keras')!r})
stacked = np.load({str(tmp_path / 'inputs.npy')!r})
inputs = dict(zip(sorted(["input_ids", "input_mask", "segment_ids"]), stacked))
np.save({str(tmp_path / 'pooled.npy')!r}, model(inputs)["pooled_output"].numpy())
print(json.dumps({{"modules": len(names), "scripts": sorted(scripts), "model": type(model).__module__,
                  "leaks": sorted({{m.split(".")[0] for m in sys.modules}} & {set(FOLDERS)!r})}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(installed), KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["leaks"] == []
    assert report["model"] == "bert_gpt_tf.tfmodels.bert"
    assert report["modules"] >= 100
    assert {"bert-gpt-main-job", "bert-gpt-finetune", "bert-gpt-predict"} <= set(report["scripts"])
    np.testing.assert_allclose(np.load(tmp_path / "pooled.npy"), expected, atol=1e-6)


def test_a_bare_import_of_our_folders_fails_the_build_naming_the_line(tmp_path):
    project = copy_project(tmp_path)
    module = project / "finetune" / "export" / "loading.py"
    module.write_text(module.read_text() + "\n\ndef late():\n\n    import tfmodels.bert\n")
    built = pip("wheel", "--no-deps", "-w", str(tmp_path / "dist"), ".", cwd=project)
    assert built.returncode != 0
    line = module.read_text().count("\n")
    assert f"finetune/export/loading.py:{line}: write `from tfmodels import ...`" in (
        built.stdout + built.stderr)


def test_an_editable_install_is_refused_with_the_ways_that_work(tmp_path):
    project = copy_project(tmp_path)
    target = tmp_path / "target"
    done = pip("install", "--no-deps", "--target", str(target), "-e", ".", cwd=project)
    assert done.returncode != 0
    assert "an editable install cannot do" in done.stdout + done.stderr
    assert "python -m tools.<binary>" in done.stdout + done.stderr
