"""Real `kedro run --pipelines=retrieval` (semantic IDs + popularity, SASRec, two-tower, TIGER,
and the ONNX export of the last three) on small data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import make_project, run_kedro
from tests.pipelines.test_semantic_ids_pipeline import (
    SMALL_RETRIEVAL,
    SMALL_SIDS,
    wire_pipelines,
    write_params,
)

pytestmark = pytest.mark.slow  # kedro runs from disk


@pytest.fixture(scope="module")
def retrieval_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mp = pytest.MonkeyPatch()
    wire_pipelines(mp)
    project = make_project(tmp_path_factory.mktemp("retrieval") / "project", n_users=200,
                           n_items=300, n_impressions=15_000)
    sids = json.loads(json.dumps(SMALL_SIDS))
    sids["tokenizers"].pop("rq_vae")
    write_params(project, sids, SMALL_RETRIEVAL)
    try:
        torch.set_num_threads(1)
        run_kedro(project, "retrieval")
    finally:
        mp.undo()
    return project


def test_retrieval_metrics_follow_the_contract(retrieval_project: Path) -> None:
    report = json.loads((retrieval_project / "data/08_reporting/retrieval_metrics.json")
                        .read_text())
    assert report["baseline"] == "popularity"
    assert {"strategy", "event", "tie_break", "holdout_valid", "eval_history"} <= set(
        report["protocol"])
    assert report["protocol"]["exclude_seen"] == {n: False for n in report["models"]}
    one = json.loads((retrieval_project / "data/08_reporting/retrieval/sasrec_metrics.json")
                     .read_text())
    assert one["protocol"]["event"] == "click > 0" and one["exclude_seen"] is False
    assert set(report["models"]) == {"popularity", "sasrec", "two_tower", "tiger"}
    for name, m in report["models"].items():
        for key in ("recall@10", "ndcg@10", "recall@10_cold", "recall@5", "recall@20",
                    "ndcg@20", "coverage@10"):
            assert key in m, (name, key)
        assert 0.0 < m["recall@10"] <= 1.0, (name, m["recall@10"])
        assert m["recall@5"] <= m["recall@10"] <= m["recall@20"]
        assert m["users"] > 0
    # ID-only models cannot rank items they never saw; popularity never does
    assert report["models"]["popularity"]["recall@20_cold"] in (0.0, None)
    assert report["models"]["popularity"]["coverage@10"] < report["models"]["tiger"]["coverage@10"]


def test_retrieval_models_are_saved_as_weights(retrieval_project: Path) -> None:
    for name in ("popularity", "sasrec", "two_tower", "tiger"):
        payload = torch.load(retrieval_project / f"data/06_models/retrieval/{name}.pt",
                             weights_only=True)
        assert payload["model"] == name
    tiger = torch.load(retrieval_project / "data/06_models/retrieval/tiger.pt", weights_only=True)
    assert tiger["state_dict"]["semantic_ids"].shape[1] == 3  # 2 levels + digit


def test_retrieval_exports_graphs_vectors_and_parity(retrieval_project: Path) -> None:
    import numpy as np
    import onnx

    from recflow.serving.generative import GenerativeRetriever

    out = retrieval_project / "data/07_model_output/retrieval"
    assert not (out / "popularity").exists()  # nothing to export
    files = {"sasrec": {"user_encoder.onnx", "item_vectors.npy", "export_report.json"},
             "two_tower": {"user_encoder.onnx", "item_tower.onnx", "item_vectors.npy",
                           "export_report.json"},
             "tiger": {"decoder_step.onnx", "export_report.json"}}
    for name, expected in files.items():
        assert {p.name for p in (out / name).iterdir()} == expected, name
        report = json.loads((out / name / "export_report.json").read_text())
        assert report["model"] == name and report["max_abs_diff"] <= 1e-5, report
        assert report["rows"] > 0 and report["opset"] == 17
        for graph in expected - {"item_vectors.npy", "export_report.json"}:
            onnx.checker.check_model(onnx.load(str(out / name / graph)), full_check=True)
    for name in ("sasrec", "two_tower"):
        vectors = np.load(out / name / "item_vectors.npy")
        assert vectors.dtype == np.float32 and vectors.shape[0] == 301 and not vectors[0].any()
    tiger = json.loads((out / "tiger" / "export_report.json").read_text())
    assert tiger["beam_top10_identical"] >= 0.95  # float near-ties may flip a rare beam
    runtime = GenerativeRetriever(out / "tiger" / "decoder_step.onnx")
    top = runtime.recommend([np.array([1, 2, 3])], 10)
    assert top.shape == (1, 10) and ((top >= 1) & (top <= 300)).all()
