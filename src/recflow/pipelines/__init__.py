"""One folder per Kedro pipeline: `nodes.py` (pure functions) + `pipeline.py` (wiring)."""
