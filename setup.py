"""Installs the checkout's four folders under one name: bert_gpt_tf.

In the checkout the design card's folders are top-level packages (`tfmodels`, `pretraining`,
`finetune`, `tools`) and import each other by those names, so `python -m tools.predict` works
from the repository root. Installed under those names they would take four generic top-level
names in site-packages (`finetune` is also a different project on PyPI). So the wheel holds
them as `bert_gpt_tf.tfmodels`, `bert_gpt_tf.pretraining`, ... and the build rewrites our own
import statements to match (`from tfmodels.bert import X` -> `from bert_gpt_tf.tfmodels.bert
import X`), as vendoring tools do. Only statements that start a line are rewritten; a bare
`import tfmodels.x` would bind the wrong name after rewriting, so the build refuses it.

An editable install cannot rewrite files it links to, so `pip install -e .` is refused with a
pointer to the two ways that work: `python -m tools.<binary>` from the checkout, or
`pip install .`. tests/test_packaging.py builds the wheel and imports every module from it.
"""
import os
import re
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel
from setuptools.errors import SetupError

NAMESPACE = "bert_gpt_tf"
FOLDERS = ("tfmodels", "pretraining", "finetune", "tools")
_FOLDER = "|".join(FOLDERS)
FROM_IMPORT = re.compile(rf"^([ \t]*from )({_FOLDER})(\.|\s)", re.MULTILINE)
BARE_IMPORT = re.compile(rf"^[ \t]*import ({_FOLDER})\b", re.MULTILINE)
INIT = '"""GPT-1 and BERT in TensorFlow / Keras 3 (installed from the bert-gpt-tf checkout)."""\n'


def namespaced_source(source: str, path: str) -> str:
    """`source` with every `from <folder>` import statement moved under bert_gpt_tf."""
    bare = BARE_IMPORT.search(source)
    if bare:
        line = source.count("\n", 0, bare.start()) + 1
        raise SetupError(f"{path}:{line}: write `from {bare.group(1)} import ...`: a bare "
                         f"`import {bare.group(1)}...` cannot be moved under {NAMESPACE}")
    return FROM_IMPORT.sub(rf"\g<1>{NAMESPACE}.\g<2>\g<3>", source)


class NamespacedBuildPy(build_py):
    """Copies each module as build_py does, then rewrites its imports in the build folder."""

    def build_module(self, module, module_file, package):
        outfile, copied = super().build_module(module, module_file, package)
        with open(outfile, encoding="utf-8") as f:
            source = f.read()
        with open(outfile, "w", encoding="utf-8") as f:
            f.write(namespaced_source(source, module_file))
        return outfile, copied

    def run(self):
        # pip builds in the checkout's build/: start clean, or a module deleted from the
        # source would live on in the next wheel.
        shutil.rmtree(os.path.join(self.build_lib, NAMESPACE), ignore_errors=True)
        super().run()
        # bert_gpt_tf has no folder in the checkout: its __init__ is written here.
        init = os.path.join(self.build_lib, NAMESPACE, "__init__.py")
        with open(init, "w", encoding="utf-8") as f:
            f.write(INIT)


class RefuseEditable(editable_wheel):
    def run(self):
        raise SetupError(
            f"bert-gpt-tf installs its folders as {NAMESPACE}.<folder> with rewritten imports, "
            "which an editable install cannot do: run `python -m tools.<binary>` from the "
            "checkout, or `pip install .`")


setup(
    packages=[f"{NAMESPACE}.{p}" for p in find_packages(include=[f"{f}*" for f in FOLDERS])],
    package_dir={f"{NAMESPACE}.{f}": f for f in FOLDERS},
    # presets.json: the pretrained-preset registry (tfmodels/presets.py reads it).
    package_data={f"{NAMESPACE}.tools": ["demo_data/*"],
                  f"{NAMESPACE}.tfmodels": ["presets.json"]},
    cmdclass={"build_py": NamespacedBuildPy, "editable_wheel": RefuseEditable},
)
