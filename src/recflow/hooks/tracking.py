"""Experiment tracking with kedro-mlflow (optional extra `tracking`).

kedro-mlflow opens one MLflow run per `kedro run` (settings in conf/base/mlflow.yml) and
logs the node parameters. `MlflowArtifactsHook` adds what recflow produces, as each
dataset is saved:

* metrics: every numeric leaf of the JSON reports (`ranking_metrics`, `export_report`,
  `retrieval_metrics`, ...), e.g. `ranking_metrics.din.auc`;
* artifacts: the reports and plots of `08_reporting/` and the ONNX models and serving
  bundles of `07_model_output/`.

Without kedro-mlflow (or with tracking disabled for the pipeline) there is no active run and
the hook does nothing, so it is safe to register unconditionally.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from recflow.hooks.runs import dataset_filepath

logger = logging.getLogger(__name__)

# conf/base/mlflow.yml uses a local file store (mlruns/); MLflow >= 3.7 refuses one unless
# this is set (its suggested default is a SQLite database: see docs/tracking.md).
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

#: JSON datasets whose numbers are logged as metrics
METRIC_DATASETS = re.compile(r"(^|\.)(\w*metrics|\w*report|data_quality)$")
#: files logged as artifacts, by suffix; directories (serving bundles) are logged whole
ARTIFACT_SUFFIXES = {".json", ".png", ".svg", ".html", ".onnx"}
ARTIFACT_LAYERS = ("07_model_output", "08_reporting")
_KEY = re.compile(r"[^\w.\- /]")


def flatten_metrics(data: Any, prefix: str) -> dict[str, float]:
    """Numeric leaves of nested dicts/lists -> {"prefix.a.b": value} with MLflow-safe keys."""
    out: dict[str, float] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, int | float):
            if math.isfinite(value):
                out[_KEY.sub("_", key.replace("@", "_at_"))] = float(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}")
        elif isinstance(value, list) and len(value) <= 50:
            for i, v in enumerate(value):
                walk(v, f"{key}.{i}")

    walk(data, prefix)
    return out


def flatten_params(data: Any, prefix: str) -> dict[str, str]:
    """Leaves of nested dicts -> {"prefix.a.b": "value"}; lists stay one value."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten_params(value, f"{prefix}.{key}"))
        return out
    return {_KEY.sub("_", prefix): str(data)[:500]}


def _active_mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        return None
    return mlflow if mlflow.active_run() is not None else None


def _artifact_dir(path: Path) -> str | None:
    """`07_model_output/onnx` for data/07_model_output/onnx/x.onnx; None outside the layers."""
    parts = path.parts
    for layer in ARTIFACT_LAYERS:
        if layer in parts:
            return "/".join(parts[parts.index(layer):-1])
    return None


class MlflowArtifactsHook:
    """Log recflow's metrics, plots, reports and ONNX bundles to the active MLflow run."""

    def __init__(self) -> None:
        self._catalog: Any = None
        self._logged_params: set[str] = set()

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        self._catalog = catalog
        self._logged_params = set()

    @hook_impl
    def before_node_run(self, inputs: dict[str, Any]) -> None:
        """Typed parameters (pydantic models) as one MLflow param per YAML leaf.

        kedro-mlflow logs a node's `params:` inputs itself, but a typed block reaches it as
        an object and is logged as one long string; its leaves are what runs differ in.
        """
        mlflow = _active_mlflow()
        if mlflow is None:
            return
        leaves: dict[str, str] = {}
        for name, value in inputs.items():
            if name.startswith("params:") and hasattr(value, "model_dump"):
                leaves.update(flatten_params(value.model_dump(mode="json"), name[7:]))
        new = {k: v for k, v in leaves.items() if k not in self._logged_params}
        if new:
            try:
                mlflow.log_params(new)
                self._logged_params.update(new)
            except Exception as exc:  # noqa: BLE001 - tracking must never fail a run
                logger.warning("MLflow: could not log parameters: %s", exc)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        mlflow = _active_mlflow()
        if mlflow is None or self._catalog is None:
            return
        try:
            self._log(mlflow, dataset_name, data)
        except Exception as exc:  # noqa: BLE001 - tracking must never fail a run
            logger.warning("MLflow: could not log dataset '%s': %s", dataset_name, exc)

    def _log(self, mlflow: Any, name: str, data: Any) -> None:
        if isinstance(data, dict) and METRIC_DATASETS.search(name):
            metrics = flatten_metrics(data, name)
            if metrics:
                mlflow.log_metrics(metrics)
        path = dataset_filepath(self._catalog, name)
        if path is None or not path.exists():
            return
        artifact_dir = _artifact_dir(path)
        if artifact_dir is None:
            return
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=f"{artifact_dir}/{path.name}")
        elif path.suffix in ARTIFACT_SUFFIXES:
            mlflow.log_artifact(str(path), artifact_path=artifact_dir)
