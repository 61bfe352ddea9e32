#!/usr/bin/env bash
# The embedded default: install, then generate a stream and learn from it on a local Flink.
set -euo pipefail
cd "$(dirname "$0")/.."
FRESHRANK_SKIP_JARS=1 scripts/setup.sh
exec .venv/bin/freshrank demo "$@"
