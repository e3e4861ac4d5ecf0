#!/usr/bin/env bash
# Build the user guide into site/ with warnings as errors (what CI runs).
# The YAML reference and the model zoo are regenerated from the code on every build.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null \
  || .venv/bin/python -m pip install --quiet -e ".[docs]"
export KEDRO_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 NO_MKDOCS_2_WARNING=1
.venv/bin/python -m mkdocs build --strict --site-dir site "$@"
echo "Docs: site/index.html"
