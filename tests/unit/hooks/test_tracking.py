"""recflow.hooks.tracking logs metrics, plots and ONNX bundles only while an MLflow run is active."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from pydantic import BaseModel

from recflow.hooks.tracking import MlflowArtifactsHook, flatten_metrics, flatten_params


class _FakeMlflow(types.ModuleType):
    def __init__(self, active: bool = True) -> None:
        super().__init__("mlflow")
        self.active, self.metrics, self.params, self.artifacts = active, {}, {}, []

    def active_run(self):
        return object() if self.active else None

    def log_metrics(self, metrics):
        self.metrics.update(metrics)

    def log_params(self, params):
        assert not set(params) & set(self.params), "MLflow params are immutable"
        self.params.update(params)

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append((Path(path).name, artifact_path))

    def log_artifacts(self, path, artifact_path=None):
        self.artifacts.append((Path(path).name + "/", artifact_path))


class _Dataset:
    _protocol = "file"

    def __init__(self, path: Path) -> None:
        self._filepath = path


class _Catalog(dict):
    def get(self, name):
        return self[name]


@pytest.fixture
def project(tmp_path: Path) -> tuple[_Catalog, Path]:
    report = tmp_path / "data/08_reporting"
    onnx = tmp_path / "data/07_model_output/onnx"
    bundle = tmp_path / "data/07_model_output/serving/din"
    for folder in (report, onnx, bundle):
        folder.mkdir(parents=True)
    for path in (report / "ranking_metrics.json", report / "ranking_roc.png",
                 onnx / "din.onnx", bundle / "model.onnx", tmp_path / "data/06_models.pt"):
        path.write_text("x")
    catalog = _Catalog(ranking_metrics=_Dataset(report / "ranking_metrics.json"),
                       ranking_roc_plot=_Dataset(report / "ranking_roc.png"),
                       **{"export.din.onnx": _Dataset(onnx / "din.onnx"),
                          "export.din.serving_bundle": _Dataset(bundle),
                          "ranking.din.model": _Dataset(tmp_path / "data/06_models.pt")})
    return catalog, tmp_path


def _hook(monkeypatch, catalog, active=True) -> tuple[MlflowArtifactsHook, _FakeMlflow]:
    fake = _FakeMlflow(active)
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    hook = MlflowArtifactsHook()
    hook.after_catalog_created(catalog)
    return hook, fake


def test_flatteners() -> None:
    metrics = flatten_metrics({"models": {"din": {"auc": 0.7, "recall@10": 0.2, "ok": True,
                                                  "name": "x", "nan": float("nan")}}}, "r")
    assert metrics == {"r.models.din.auc": 0.7, "r.models.din.recall_at_10": 0.2}
    assert flatten_params({"a": {"b": 1, "c": [1, 2]}}, "p") == {"p.a.b": "1", "p.a.c": "[1, 2]"}


def test_logs_reports_plots_and_bundles(monkeypatch, project) -> None:
    catalog, _ = project
    hook, fake = _hook(monkeypatch, catalog)
    hook.after_dataset_saved("ranking_metrics", {"models": {"din": {"auc": 0.71}}})
    hook.after_dataset_saved("ranking_roc_plot", object())
    hook.after_dataset_saved("export.din.onnx", object())
    hook.after_dataset_saved("export.din.serving_bundle", object())
    hook.after_dataset_saved("ranking.din.model", object())  # 06_models: weights are not artifacts
    assert fake.metrics == {"ranking_metrics.models.din.auc": 0.71}
    assert fake.artifacts == [("ranking_metrics.json", "08_reporting"),
                              ("ranking_roc.png", "08_reporting"),
                              ("din.onnx", "07_model_output/onnx"),
                              ("din/", "07_model_output/serving/din")]


def test_typed_params_logged_once_per_leaf(monkeypatch, project) -> None:
    class Trainer(BaseModel):
        epochs: int = 3
        lr: float = 0.01

    hook, fake = _hook(monkeypatch, project[0])
    hook.before_node_run({"params:ranking.trainer": Trainer(), "model_input_train": object()})
    hook.before_node_run({"params:ranking.trainer": Trainer()})
    assert fake.params == {"ranking.trainer.epochs": "3", "ranking.trainer.lr": "0.01"}


def test_inert_without_an_active_run(monkeypatch, project) -> None:
    hook, fake = _hook(monkeypatch, project[0], active=False)
    hook.after_dataset_saved("ranking_metrics", {"auc": 0.7})
    hook.before_node_run({"params:x": {"a": 1}})
    assert not fake.metrics and not fake.artifacts and not fake.params


def test_inert_without_mlflow(monkeypatch, project, caplog) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    hook = MlflowArtifactsHook()
    hook.after_catalog_created(project[0])
    with caplog.at_level("DEBUG", logger="recflow.hooks.tracking"):
        hook.before_node_run({"params:x": _Params()})
        hook.after_dataset_saved("ranking_metrics", {"auc": 0.7})
    # had it tried to log (and failed on the missing module) it would have warned
    assert not [r for r in caplog.records if r.name == "recflow.hooks.tracking"]


class _Params(BaseModel):
    epochs: int = 3
