#!/usr/bin/env bash
# Create .venv and install recflow. Idempotent; offline at run time.
#   scripts/setup.sh        the runtime only (what `kedro run` needs): the quickstart
#   scripts/setup.sh dev    + test tools, the example plugin, pyspark (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-runtime}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "recflow needs Python 3.11; '$PYTHON' is $("$PYTHON" -V 2>&1). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first and pinned: the CPU build of 2.13.0 is what these machines carry.
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
if [ "$MODE" = dev ]; then
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  .venv/bin/python -m pip install --quiet --no-deps -e plugins/recflow-finalmlp
else
  .venv/bin/python -m pip install --quiet -e .
fi
