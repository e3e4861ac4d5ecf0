"""`kedro run --pipelines=ranking --env semantic` on tiny data: the semantic_ids nodes run
first, the prefix fields reach every model, and the metrics carry the rare-item AUC."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recflow.config_loader import replacing
from tests.conftest import make_project, run_kedro
from tests.pipelines.test_ranking_pipeline import FAST_EXPORT, SMALL_TRAINER

pytestmark = pytest.mark.slow  # kedro runs from disk


def test_ranking_with_semantic_prefix_fields(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", n_users=80, n_items=120, n_impressions=4000)
    env = project / "conf" / "semantic"  # `--env semantic` reads this, not conf/local
    small = {"embed_dim": 4, "hidden": [16]}
    overrides = {
        "parameters_ranking.yml": {"ranking": {
            "baseline": "lr", "rare_item_impressions": 5,
            "trainer": {**SMALL_TRAINER, "epochs": 1},
            "models": {"lr": {"name": "lr"}, "deepfm": {"name": "deepfm", "params": small},
                       "din": {"name": "din", "params": small}}}},
        "parameters_export.yml": {"export": {**FAST_EXPORT, "quantize": False}},
        "parameters_semantic_ids.yml": {"semantic_ids": {
            "encoder": {"name": "tfidf_svd", "params": {"text_columns": ["title", "category"],
                                                        "dim": 8, "min_df": 1}},
            "tokenizers": {"rq_kmeans": {"name": "rq_kmeans",
                                         "params": {"levels": 2, "codebook_size": 6,
                                                    "seed": 0}}}}},
    }
    for name, body in overrides.items():
        (env / name).write_text(yaml.safe_dump(replacing(body)))

    run_kedro(project, "ranking", env="semantic")

    out = project / "data" / "semantic"
    spec = json.loads((out / "05_model_input/feature_spec.json").read_text())
    prefix = {f["name"]: f for f in spec["fields"] if f["transform"] == "semantic_prefix"}
    assert sorted(prefix) == ["item_sid_p1", "item_sid_p2"]  # every code level, no digit
    assert all(f["kind"] == "categorical" and f["vocab_size"] > 2 for f in prefix.values())
    assert (out / "04_feature/semantic_ids/rq_kmeans.parquet").exists()
    train = pd.read_parquet(out / "05_model_input/train.parquet")
    assert (train["item_sid_p1"] >= 2).all()  # every train item has a trained prefix

    report = json.loads((out / "08_reporting/ranking_metrics.json").read_text())
    for name in ("lr", "deepfm", "din"):
        metrics = report["models"][name]
        assert metrics["rare_items_threshold"] == 5
        assert 0 < metrics["rare_items_rows"] < report["rows"]
        assert 0.0 <= metrics["auc_rare_items"] <= 1.0
    exported = json.loads((out / "08_reporting/export_report.json").read_text())
    assert set(exported["models"]) == {"lr", "deepfm", "din"}
    assert all(row["max_abs_diff"] <= 1e-5 for row in exported["models"].values())
