"""`kedro run --pipelines=ranking` with a leave-one-out split and two seeds.

Only `split.strategy` is added to the base preprocessing block (its temporal keys stay
in place); the report must record the strategy, every seed's run, mean ± std, and a
rerun with the same seed must reproduce the metrics exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recflow.config_loader import replacing
from tests.conftest import run_kedro

pytestmark = pytest.mark.slow  # kedro runs from disk

TRAINER = {"epochs": 2, "batch_size": 256, "lr": 0.005, "embedding_lr": 0.02,
           "progress": False, "seed": 0}
MODELS = {"lr": {"name": "lr"}, "fm": {"name": "fm", "params": {"embed_dim": 4}}}
EXACT = ("auc", "logloss", "gauc")


def _same(a: float, b: float) -> bool:
    """Exact equality, NaN included (GAUC is NaN with one test row per user)."""
    return a == b or (np.isnan(a) and np.isnan(b))


def _run(project: Path, seeds: list[int]) -> dict:
    local = project / "conf" / "local"
    local.mkdir(parents=True, exist_ok=True)
    (local / "parameters_ranking.yml").write_text(yaml.safe_dump(replacing(
        {"ranking": {"baseline": "lr", "trainer": TRAINER, "models": MODELS, "seeds": seeds}})))
    run_kedro(project, "ranking", to_outputs=["ranking_metrics", "data_quality"])
    return json.loads((project / "data/08_reporting/ranking_metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    from tests.conftest import make_project

    project = make_project(tmp_path_factory.mktemp("protocols") / "project",
                           n_users=80, n_items=120, n_impressions=4_000)
    block = yaml.safe_load((project / "conf/base/parameters_preprocessing.yml").read_text())
    block["preprocessing"]["split"]["strategy"] = "leave_one_out"
    (project / "conf/local").mkdir(parents=True, exist_ok=True)
    (project / "conf/local/parameters_preprocessing.yml").write_text(
        yaml.safe_dump(replacing(block)))
    first = _run(project, [1, 2])
    again = _run(project, [2])
    return project, first, again


def test_leave_one_out_selects_each_users_last_impression(runs) -> None:
    project, report, _ = runs
    raw = pd.read_parquet(project / "data/01_raw/interactions.parquet")
    counts = raw["user_id"].value_counts()
    eligible = set(counts[counts >= 3].index)
    cutoffs = json.loads((project / "data/02_intermediate/split_cutoffs.json").read_text())
    assert cutoffs["strategy"] == "leave_one_out" and cutoffs["short_users"] == "train"
    assert "train_end" not in cutoffs

    test = pd.read_parquet(project / "data/05_model_input/test.parquet")
    valid = pd.read_parquet(project / "data/05_model_input/valid.parquet")
    assert set(test["key_user"]) == eligible and test["key_user"].is_unique
    assert set(valid["key_user"]) == eligible and valid["key_user"].is_unique
    latest = raw.groupby("user_id")["timestamp"].max()
    assert (test["key_timestamp"].to_numpy() == latest[test["key_user"]].to_numpy()).all()
    assert cutoffs["rows"] == {"train": len(raw) - 2 * len(eligible),
                               "valid": len(eligible), "test": len(eligible)}

    protocol = report["split_strategy"]
    assert protocol["strategy"] == "leave_one_out" and protocol["min_interactions"] == 3
    assert protocol["rows"] == cutoffs["rows"]
    stats = report["statistics"]
    assert stats["interactions"] == len(raw)
    assert stats["users"] == raw["user_id"].nunique()
    assert stats["splits"]["test"]["interactions"] == stats["splits"]["test"]["users"]
    assert 0 <= stats["cold_items_test"]["rows"] <= 1
    assert stats["sequence_length"]["max"] == counts.max()
    quality = json.loads((project / "data/08_reporting/data_quality.json").read_text())
    assert quality["statistics"] == stats


def test_report_has_every_seed_and_mean_std(runs) -> None:
    _, report, _ = runs
    assert report["seeds"] == [1, 2] and "ddof=1" in report["std"]
    for name in MODELS:
        model = report["models"][name]
        seeds = model["seeds"]
        assert seeds["n"] == 2 and [r["seed"] for r in seeds["runs"]] == [1, 2]
        aucs = np.array([r["auc"] for r in seeds["runs"]])
        assert aucs[0] != aucs[1], (name, aucs)  # seeds change the run
        assert seeds["mean"]["auc"] == pytest.approx(aucs.mean())
        assert seeds["std"]["auc"] == pytest.approx(aucs.std(ddof=1))
        assert seeds["std"]["auc"] > 0
        for key in EXACT:  # the exported model is the first seed's
            assert _same(model[key], seeds["runs"][0][key]), (name, key)
    assert "seeds" not in report["models"]["popularity"]
    # leave-one-out has one test row per user: per-user AUC (GAUC) is undefined
    assert np.isnan(report["models"]["lr"]["gauc"])


def test_same_seed_reproduces_exactly(runs) -> None:
    _, first, again = runs
    assert again["seeds"] == [2]
    for name in MODELS:
        before = first["models"][name]["seeds"]["runs"][1]
        assert before["seed"] == 2
        seeds = again["models"][name]["seeds"]
        assert seeds["n"] == 1 and seeds["std"]["auc"] is None  # one run: no error bar
        for key in EXACT:
            assert _same(seeds["runs"][0][key], before[key]), (name, key)
            assert _same(again["models"][name][key], before[key]), (name, key)  # seed 2 exported
