#!/usr/bin/env bash
# The README's main-job command: create a virtualenv, install the package, and run the end to
# end job on the demo data the project ships (tools/demo_data). Extra arguments go to the job.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
export KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/bert-gpt-main-job "$@"
