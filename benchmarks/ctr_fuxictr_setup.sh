#!/usr/bin/env bash
# The peer for benchmarks/bench_ctr.py: FuxiCTR 2.3.10 in its own venv (it pulls ray and
# pins its own pandas/numpy, so it never shares recflow's). torch first, pinned to recflow's
# version, so fuxictr's unpinned `torch` requirement cannot pull another (CUDA) build.
set -euo pipefail
VENV="${1:-/work/fuxictr-venv}"
PY="${PYTHON:-python3.11}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q fuxictr==2.3.10 pyarrow
# fuxictr 2.3.10 calls pl.scan_csv(dtypes=...), an argument polars 2 removed
"$VENV/bin/pip" install -q "polars<2"
"$VENV/bin/python" -c "import fuxictr, torch; print('fuxictr', fuxictr.__version__, 'torch', torch.__version__)"
