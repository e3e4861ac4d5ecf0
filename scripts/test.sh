#!/usr/bin/env bash
# Clone -> green test suite, in one command (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/ruff check src tests benchmarks plugins
.venv/bin/python -m pytest -q "$@"
