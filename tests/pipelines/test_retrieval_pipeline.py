"""Real `kedro run --pipeline=retrieval` (semantic IDs + popularity, SASRec, TIGER) on small data."""

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
    assert set(report["models"]) == {"popularity", "sasrec", "tiger"}
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
    for name in ("popularity", "sasrec", "tiger"):
        payload = torch.load(retrieval_project / f"data/06_models/retrieval/{name}.pt",
                             weights_only=True)
        assert payload["model"] == name
    tiger = torch.load(retrieval_project / "data/06_models/retrieval/tiger.pt", weights_only=True)
    assert tiger["state_dict"]["semantic_ids"].shape[1] == 3  # 2 levels + digit
