"""A real `kedro run --pipelines=distillation` on tiny generated data (offline and online)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from recflow.config_loader import replacing
from recflow.datasets import TorchModelDataset
from recflow.features import FeatureSpec
from recflow.models.payload import from_payload
from recflow.pipelines.distillation.nodes import CONTRACT_KEYS, LOGIT_PREFIX
from recflow.training.data import frame_to_tensors
from tests.conftest import make_project, run_kedro

pytestmark = pytest.mark.slow
TRAINER = {"epochs": 1, "batch_size": 256, "lr": 0.005, "embedding_lr": 0.005, "seed": 1,
           "progress": False, "max_steps_per_epoch": 6}
FAST_LATENCY = {"batches": [1], "repeats": 5, "warmup": 1, "threads": 1, "budget_s": 0.2}


def _params(mode: str) -> dict:
    return {"distillation": {
        "mode": mode,
        "trainer": TRAINER,
        "teacher": {"members": [
            {"name": "dcnv2", "params": {"embed_dim": 8, "cross_layers": 1, "hidden": [16]}},
            {"name": "esmm", "params": {"embed_dim": 4, "hidden": [8]}},  # an ensemble
        ]},
        "student": {"name": "deepfm",
                    "params": {"embed_dim": 2, "hidden": [8], "fields": ["item_id", "category"]}},
        "baseline": {"name": "lr"},
        "losses": [{"name": "kd_bce", "params": {"alpha": 0.5, "temperature": 2.0}},
                   {"name": "logit_mse", "params": {"weight": 0.05}}],
        "latency_batches": [1, 256],
    }}


@pytest.fixture(autouse=True)
def _register(monkeypatch):
    """Adds `distillation` to the project's pipelines until pipeline_registry.py wires it."""
    import recflow.pipeline_registry as registry
    from recflow.pipelines import distillation

    original = registry.register_pipelines

    def register():
        pipelines = original()
        pipelines.setdefault("distillation", distillation.create_pipeline(
            **distillation.pipeline_kwargs(registry._parameters())))
        return pipelines

    monkeypatch.setattr(registry, "register_pipelines", register)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _project(root: Path, mode: str) -> Path:
    project = make_project(root, n_users=80, n_items=100, n_impressions=3000)
    local = project / "conf" / "local"
    (local / "parameters_distillation.yml").write_text(yaml.safe_dump(replacing(_params(mode))))
    (local / "parameters_export.yml").write_text(
        yaml.safe_dump(replacing({"export": {"latency": FAST_LATENCY}})))
    run_kedro(project, "preprocessing")
    return project


def test_offline_run_writes_the_report_and_caches_teacher_logits(tmp_path: Path) -> None:
    project = _project(tmp_path / "offline", "offline")
    run_kedro(project, "distillation")
    data = project / "data"
    report = json.loads((data / "08_reporting/distillation_report.json").read_text())
    for row in ("teacher", "student_kd", "student_plain"):
        assert set(CONTRACT_KEYS) <= set(report[row]), row
        assert report[row]["onnx_p50_ms_b256"] > 0
    assert report["teacher"]["model"] == "dcnv2+esmm"
    assert report["student_kd"]["params"] < report["teacher"]["params"]
    assert report["baseline"]["model"] == "lr"
    assert (data / "07_model_output/onnx/distillation_student_kd.onnx").exists()

    # the cached teacher logits equal a fresh forward pass of the (ensembled) teacher
    spec = FeatureSpec.from_dict(json.loads((data / "05_model_input/feature_spec.json").read_text()))
    train = pd.read_parquet(data / "05_model_input/train.parquet")
    cache = pd.read_parquet(data / "07_model_output/distillation/teacher_logits_train.parquet")
    teacher = TorchModelDataset(filepath=str(data / "06_models/distillation/teacher.pt")).load()
    batch = frame_to_tensors(train, spec)
    with torch.inference_mode():
        fresh = np.mean([from_payload(p, spec)(batch.inputs)[:, 0].numpy()
                         for p in teacher["members"]], axis=0)
    np.testing.assert_allclose(cache[LOGIT_PREFIX + "click"].to_numpy(), fresh, atol=1e-5)
    assert (cache["key_user"].to_numpy() == train["key_user"].to_numpy()).all()


def test_online_run(tmp_path: Path) -> None:
    project = _project(tmp_path / "online", "online")
    run_kedro(project, "distillation")
    report = json.loads((project / "data/08_reporting/distillation_report.json").read_text())
    assert report["mode"] == "online"
    assert not (project / "data/07_model_output/distillation").exists()  # nothing cached online
    assert all(np.isfinite(report[r]["auc"]) for r in ("teacher", "student_kd", "student_plain"))


def test_bad_loss_name_fails_before_training(tmp_path: Path) -> None:
    project = _project(tmp_path / "bad", "offline")
    body = _params("offline")
    body["distillation"]["losses"] = [{"name": "kd_bec"}]
    (project / "conf/local/parameters_distillation.yml").write_text(
        yaml.safe_dump(replacing(body)))
    with pytest.raises(Exception, match="kd_bec"):
        run_kedro(project, "distillation")
    assert not (project / "data/08_reporting/distillation_report.json").exists()
