"""Real `kedro run --pipelines=ranking` on small generated data, and bad ranking YAML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recflow.config_loader import replacing
from tests.conftest import output_files, run_kedro

SMALL_TRAINER = {"epochs": 3, "batch_size": 512, "lr": 0.005, "embedding_lr": 0.02, "progress": False, "seed": 3,
                 "checkpoint_dir": "data/06_models/checkpoints"}


FAST_EXPORT = {"models": None, "opset": 17, "graph_optimization": "basic",
               "parity_tolerance": 1.0e-5, "parity_batch_size": 8192, "quantize": True,
               "quantize_per_channel": False,
               "latency": {"batches": [1, 64], "repeats": 5, "warmup": 1, "budget_s": 0.2,
                           "threads": 1}}


def _override(project: Path, ranking: dict) -> None:
    local = project / "conf" / "local"
    local.mkdir(parents=True, exist_ok=True)
    (local / "parameters_ranking.yml").write_text(yaml.safe_dump(replacing({"ranking": ranking})))
    (local / "parameters_export.yml").write_text(yaml.safe_dump(replacing({"export": FAST_EXPORT})))


@pytest.fixture(scope="module")
def ranked_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import make_project

    project = make_project(tmp_path_factory.mktemp("ranking") / "project")
    small = {"embed_dim": 8, "hidden": [32]}
    _override(project, {
        "baseline": "lr",
        "trainer": SMALL_TRAINER,
        "models": {
            "lr": {"name": "lr"},
            "deepfm": {"name": "deepfm", "params": small},
            "din": {"name": "din", "params": small},
            "esmm": {"name": "esmm", "params": small},
        },
    })
    run_kedro(project, "ranking")
    return project


@pytest.mark.slow  # kedro run from disk
def test_ranking_run_writes_contract_metrics(ranked_project: Path) -> None:
    report = json.loads((ranked_project / "data/08_reporting/ranking_metrics.json").read_text())
    assert set(report["models"]) == {"lr", "deepfm", "din", "esmm", "popularity"}
    for name, metrics in report["models"].items():
        for key in ("auc", "logloss", "gauc", "params", "train_seconds"):
            assert key in metrics, (name, key)
        assert 0.5 < metrics["auc"] <= 1.0, (name, metrics["auc"])
        assert metrics["logloss"] > 0
    assert report["models"]["deepfm"]["params"] > report["models"]["lr"]["params"] > 0
    assert all(report["models"][n]["samples_per_second"] > 0 for n in ("lr", "deepfm", "din"))
    assert "ctcvr_auc" in report["models"]["esmm"]
    assert report["baseline"] == "lr"
    assert report["models"]["lr"]["auc_lift_over_baseline"] == 0.0


@pytest.mark.slow  # kedro run from disk
def test_ranking_run_writes_models_and_plots(ranked_project: Path) -> None:
    for name in ("lr", "deepfm", "din", "esmm"):
        assert (ranked_project / f"data/06_models/ranking/{name}.pt").stat().st_size > 0
    for plot in ("roc", "calibration", "learning_curves"):
        png = ranked_project / f"data/08_reporting/ranking_{plot}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # kedro run from disk
def test_ranking_run_ends_with_parity_checked_onnx(ranked_project: Path) -> None:
    report = json.loads((ranked_project / "data/08_reporting/export_report.json").read_text())
    assert set(report["models"]) == {"lr", "deepfm", "din", "esmm"}
    for name, row in report["models"].items():
        assert (ranked_project / f"data/07_model_output/onnx/{name}.onnx").stat().st_size > 0
        assert row["max_abs_diff"] <= 1e-5, (name, row["max_abs_diff"])
        assert row["opset"] == 17
        assert row["p50_ms_b1"] > 0 and row["p50_ms_b1_torch"] > 0
        assert abs(row["quantized_auc_delta"]) < 0.05


@pytest.mark.slow  # kedro run from disk
def test_saved_model_reloads_and_refuses_other_spec(ranked_project: Path) -> None:
    import torch

    from recflow.features import FeatureSpec
    from recflow.models.payload import from_payload

    payload = torch.load(ranked_project / "data/06_models/ranking/deepfm.pt", weights_only=True)
    spec_json = json.loads((ranked_project / "data/05_model_input/feature_spec.json").read_text())
    spec = FeatureSpec.from_dict(spec_json)
    assert from_payload(payload, spec).training is False
    spec_json["fields"][0]["state"]["values"] = spec_json["fields"][0]["state"]["values"][:-1]
    with pytest.raises(ValueError, match="trained on feature spec"):
        from_payload(payload, FeatureSpec.from_dict(spec_json))


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ({"lr": {"name": "lr"}, "x": {"name": "no_such_model"}},
         ["ranking.models.x", "unknown model 'no_such_model'", "deepfm"]),
        ({"lr": {"name": "lr"}, "fm": {"name": "fm", "params": {"embed_size": 4}}},
         ["ranking.models.fm", "unknown key(s) ['embed_size']", "embed_dim"]),
        ({"lr": {"name": "lr"}, "fm": {"name": "fm", "params": {"embed_dim": "wide"}}},
         ["ranking.models.fm", "embed_dim", "'wide'"]),
        ({"lr": {"name": "lr", "trainer": {"epoch": 3}}},
         ["ranking.models.lr", "unknown key(s) ['epoch']", "epochs"]),
    ],
    ids=["unknown-model", "unknown-param", "wrong-type", "unknown-trainer-key"],
)
def test_bad_ranking_yaml_fails_before_running(project_factory, models, expected) -> None:
    project = project_factory(n_users=60, n_items=80, n_impressions=2000)
    _override(project, {"trainer": SMALL_TRAINER, "models": models})
    with pytest.raises(Exception) as info:  # noqa: PT011 - the message is what matters
        run_kedro(project, "ranking")
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, message
    assert output_files(project) == []
