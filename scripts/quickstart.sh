#!/usr/bin/env bash
# Clone -> trained, evaluated ranking models on the embedded data, in one command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/kedro run --pipelines=ranking "$@"
echo "Metrics: data/08_reporting/ranking_metrics.json"
