#!/usr/bin/env bash
# kedro-viz end to end in headless Chromium (Debian's chromium; CI installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  echo "viz_test: /usr/bin/chromium is missing; install it with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y chromium chromium-driver" >&2
  exit 1
fi
[ -x .venv/bin/python ] || bash scripts/setup.sh dev
export KEDRO_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 GX_ANALYTICS_ENABLED=False
.venv/bin/python -m pytest -q tests/e2e/test_viz.py "$@"
echo "Screenshot: docs/img/ranking_dag.png"
