"""Real `kedro run`s: `ranking` ends with exported models, `export` re-exports on its own.

The train/serve-skew test lives here: the serving bundle, given the raw test
records (raw parquet joined as preprocessing joins it, histories as lists),
must reproduce the offline test scores that the ranking pipeline wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import yaml

from recflow.config_loader import replacing
from recflow.features import FeatureSpec
from recflow.features.records import raw_records
from recflow.serving import Scorer
from tests.conftest import make_project, output_files, run_kedro
from tests.helpers import embedded_events

pytestmark = pytest.mark.slow
MODELS = ("lr", "ctcvr")  # DIN's raw-history skew test is in tests/unit/serving/test_serving.py
RANKING = {"ranking": {
    "baseline": "lr",
    "trainer": {"epochs": 1, "batch_size": 512, "lr": 0.005, "progress": False, "seed": 1,
                "max_steps_per_epoch": 4},
    "models": {
        "lr": {"name": "lr"},
        "ctcvr": {"name": "esmm", "params": {"embed_dim": 8, "hidden": [32]}},  # entry != model
    },
}}
FAST_LATENCY = {"batches": [1, 64, 1024], "repeats": 5, "warmup": 1, "threads": 1}


def _write_local(project: Path, name: str, body: dict) -> None:
    (project / "conf" / "local" / f"{name}.yml").write_text(yaml.safe_dump(replacing(body)))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small project where `kedro run --pipelines=ranking` trained and exported 2 models."""
    root = make_project(tmp_path_factory.mktemp("export") / "project", n_users=150,
                        n_items=200, n_impressions=8000)
    _write_local(root, "parameters_ranking", RANKING)
    _write_local(root, "parameters_export", {"export": {"latency": FAST_LATENCY}})
    run_kedro(root, "ranking")
    return root


def _report(project: Path) -> dict:
    return json.loads((project / "data/08_reporting/export_report.json").read_text())


def raw_test_records(project: Path, spec: FeatureSpec) -> pd.DataFrame:
    """What production would send: raw joined columns of the test split, histories as lists."""
    raw = {n: pd.read_parquet(project / f"data/01_raw/{n}.parquet")
           for n in ("interactions", "users", "items")}
    return raw_records(embedded_events(raw["interactions"], raw["users"], raw["items"]), spec)


def test_ranking_ends_with_onnx_bundles_and_the_report(project: Path) -> None:
    out = project / "data/07_model_output"
    report = _report(project)
    ranking = json.loads((project / "data/08_reporting/ranking_metrics.json").read_text())
    test_rows = len(pd.read_parquet(project / "data/05_model_input/test.parquet"))
    assert set(report["models"]) == set(MODELS)
    for name in MODELS:
        entry = report["models"][name]
        for key in ("max_abs_diff", "opset", "p50_ms_b1", "p50_ms_b1_torch",
                    "quantized_auc_delta", "p99_ms_b1", "p99_ms_b1_torch", "p50_ms_b1024_int8"):
            assert entry[key] is not None, (name, key)
        assert entry["max_abs_diff"] <= 1e-5 and entry["rows"] == test_rows
        assert entry["opset"] == 17 and set(entry["latency"]) == {"torch", "ort_fp32", "ort_int8"}
        assert abs(entry["quantized_auc_delta"]) < 0.05

        model = onnx.load(str(out / f"onnx/{name}.onnx"))
        onnx.checker.check_model(model)
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["model_name"] == name and meta["recflow_version"]
        assert meta["registered_model"] == {"lr": "lr", "ctcvr": "esmm"}[name]
        assert json.loads(meta["test_metrics"])["auc"] == pytest.approx(
            ranking["models"][name]["auc"])
        assert (out / f"onnx/{name}.int8.onnx").is_file()
        manifest = json.loads((out / f"serving/{name}/manifest.json").read_text())
        assert manifest["files"]["model_int8"] == "model.int8.onnx"
    assert {r["variant"] for r in report["latency_table"]} == {"torch", "ort_fp32", "ort_int8"}


def test_serving_reproduces_offline_test_scores_from_raw_records(project: Path) -> None:
    """The train/serve-skew test: raw records -> bundle -> scores == ranking's test scores."""
    spec = FeatureSpec.from_dict(json.loads(
        (project / "data/05_model_input/feature_spec.json").read_text()))
    records = raw_test_records(project, spec)
    for name in MODELS:
        offline = pd.read_parquet(
            project / f"data/07_model_output/ranking/{name}_test_scores.parquet")
        scorer = Scorer.from_bundle(project / f"data/07_model_output/serving/{name}")
        assert (offline["key_user"].to_numpy() == records["user_id"].to_numpy()).all()
        served = scorer.score_frame(records)
        assert list(served) == [c for c in offline if c.startswith("score_")]
        for column in served:
            diff = np.abs(served[column].to_numpy() - offline[column].to_numpy()).max()
            assert diff <= 1e-5, (name, column, diff)


def test_export_alone_follows_its_parameters_and_fails_cleanly(project: Path, monkeypatch) -> None:
    _write_local(project, "parameters_export",
                 {"export": {"models": ["ctcvr"], "quantize": False, "latency": FAST_LATENCY}})
    try:
        run_kedro(project, "export")
        report = _report(project)
        assert set(report["models"]) == {"ctcvr"}
        assert report["models"]["ctcvr"]["quantized_auc_delta"] is None
        manifest = json.loads(
            (project / "data/07_model_output/serving/ctcvr/manifest.json").read_text())
        assert manifest["files"]["model_int8"] is None

        # a graph that disagrees with torch fails the run, names the model, writes nothing
        import recflow.export.ranking as export_ranking

        real = export_ranking.torch_scores
        monkeypatch.setattr(export_ranking, "torch_scores", lambda *a, **k: real(*a, **k) + 1e-3)
        before = {p: (project / p).read_bytes() for p in output_files(project)}
        with pytest.raises(Exception, match=r"model 'ctcvr'.*parity_tolerance"):
            run_kedro(project, "export")
        assert {p: (project / p).read_bytes() for p in output_files(project)} == before
    finally:
        _write_local(project, "parameters_export", {"export": {"latency": FAST_LATENCY}})
