#!/usr/bin/env bash
# Installs everything freshrank needs into .venv (idempotent): Python deps at the versions of
# constraints.txt (within pyproject.toml's ranges),
# and the Java jars (Kafka connector, Kafka broker) from Maven Central into .cache/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test,plots,progress,compare]'
if [ "${FRESHRANK_SKIP_JARS:-0}" != "1" ]; then
  .venv/bin/python -m job.jars >/dev/null
fi
