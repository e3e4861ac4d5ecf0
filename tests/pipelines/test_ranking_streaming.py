"""`kedro run --pipelines=ranking_streaming`: the ranking pipeline on parquet parts.

One project, one generated log in time-ordered shards; the streaming pipeline and the
in-memory `ranking` pipeline both run on it. Whatever does not depend on the training
order (splits, statistics, per-item counts, the popularity baseline, test rows) must
agree exactly; the trained models must be as good within noise.
"""

from __future__ import annotations

import json
import logging

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from recflow.config_loader import replacing
from recflow.datasets.synthetic import GeneratorConfig, write_shards
from tests.conftest import make_project, run_kedro
from tests.pipelines.test_ranking_pipeline import FAST_EXPORT

pytestmark = pytest.mark.slow  # kedro runs from disk, DDP processes

TRAINER = {"epochs": 2, "batch_size": 256, "lr": 0.01, "embedding_lr": 0.01,
           "progress": False, "seed": 3, "shuffle_buffer": 2_000}
MODELS = {"lr": {"name": "lr"},
          "din": {"name": "din", "params": {"embed_dim": 8, "hidden": [32],
                                              "sequence_field": "hist_subcategory",
                                              "candidate_field": "subcategory"}}}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    project = make_project(tmp_path_factory.mktemp("ranking_streaming") / "project",
                           n_impressions=1_000)
    raw = project / "data/01_raw"
    written = write_shards(GeneratorConfig(n_users=300, n_items=400, n_impressions=20_000,
                                           seed=7, days=10), raw, days_per_shard=2)
    assert len(written["interactions"]) == 5
    # the in-memory pipeline reads the same log as one file
    pq.write_table(pq.read_table(raw / "interactions"), raw / "interactions.parquet")
    local = project / "conf/local"
    local.mkdir(parents=True, exist_ok=True)
    (local / "parameters_ranking.yml").write_text(yaml.safe_dump(replacing(
        {"ranking": {"baseline": "lr", "trainer": TRAINER, "models": MODELS}})))
    (local / "parameters_export.yml").write_text(yaml.safe_dump(replacing({"export": FAST_EXPORT})))

    out, found = project / "data", {}
    for pipeline_name in ("ranking_streaming", "ranking"):
        run_kedro(project, pipeline_name)
        found[pipeline_name] = {
            name: json.loads((out / f"08_reporting/{name}.json").read_text())
            for name in ("ranking_metrics", "export_report")}
        found[pipeline_name]["item_stats"] = pd.read_parquet(
            out / "07_model_output/ranking/item_train_stats.parquet")
        if pipeline_name == "ranking_streaming":
            train_parts = sorted((out / "05_model_input/model_input_train").glob("part-*"))
            found[pipeline_name]["train_parts"] = len(train_parts)
    found["project"] = project
    return found


def test_streaming_ranking_trains_scores_and_exports(reports: dict[str, dict]) -> None:
    streamed = reports["ranking_streaming"]
    assert streamed["train_parts"] >= 3  # the train split really was several parts
    metrics = streamed["ranking_metrics"]
    assert set(metrics["models"]) == {"lr", "din", "popularity"}
    for name in ("lr", "din"):
        m = metrics["models"][name]
        assert m["auc"] > 0.6, (name, m["auc"])
        assert m["samples_per_second"] > 0 and m["train_seconds"] > 0
    export = streamed["export_report"]["models"]
    for name in ("lr", "din"):
        assert export[name]["max_abs_diff"] <= 1e-5
        assert export[name]["rows"] == metrics["rows"]  # below parity_rows: every test row


def test_streaming_and_in_memory_agree(reports: dict[str, dict]) -> None:
    streamed, memory = reports["ranking_streaming"], reports["ranking"]
    a, b = streamed["ranking_metrics"], memory["ranking_metrics"]
    # same splits, same rows: statistics and the order-free baseline are identical
    assert a["rows"] == b["rows"] > 0
    assert a["statistics"] == b["statistics"]
    assert a["split_strategy"] == b["split_strategy"]
    lift = "auc_lift_over_baseline"  # relative to the trained lr: order-dependent
    assert {k: v for k, v in a["models"]["popularity"].items() if k != lift} == \
        {k: v for k, v in b["models"]["popularity"].items() if k != lift}
    pd.testing.assert_frame_equal(streamed["item_stats"], memory["item_stats"])
    for name in ("lr", "din"):  # different shuffles, same data: close, not equal
        assert a["models"][name]["auc"] == pytest.approx(b["models"][name]["auc"], abs=0.03)
        assert a["models"][name]["rare_items_rows"] == b["models"][name]["rare_items_rows"]


def test_two_ddp_workers_stream_their_own_parts(reports: dict, caplog) -> None:
    """`trainer.workers: 2` from YAML: each rank streams its own train parts (DDP, gloo);
    the checkpointed result is written once and exported like any other."""
    project = reports["project"]
    with caplog.at_level(logging.INFO, logger="recflow.training.distributed"):
        run_kedro(project, "ranking_streaming",
                  extra_params={"ranking": {"trainer": {"workers": 2}}}, namespaces=["ranking.lr"])
    assert "training on 2 gloo workers" in caplog.text
    metrics = json.loads((project / "data/08_reporting/ranking/lr_metrics.json").read_text())
    single = reports["ranking_streaming"]["ranking_metrics"]["models"]["lr"]
    assert metrics["auc"] == pytest.approx(single["auc"], abs=0.03)
    history = json.loads((project / "data/08_reporting/ranking/lr_history.json").read_text())
    assert len(history["epochs"]) == TRAINER["epochs"] and history["epochs"][-1]["samples_per_s"] > 0
