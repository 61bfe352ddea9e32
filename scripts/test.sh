#!/usr/bin/env bash
# The test command: install, then run the whole suite (tests that need Kafka start a real KRaft
# broker themselves; Flink runs as a local MiniCluster in thread mode).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -p no:warnings "$@"
