"""`recflow benchmark`: a real grid run (separate kedro processes) and its table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recflow.config_loader import replacing
from recflow.evaluation.benchmark import (
    BenchmarkGrid,
    cell_parameters,
    load_grid,
    markdown_table,
    rebase_outputs,
    run_grid,
)
from tests.conftest import make_project
from tests.pipelines.test_semantic_ids_pipeline import SMALL_SIDS

pytestmark = pytest.mark.slow  # runs kedro in subprocesses

BASE = {"preprocessing": {"split": {"strategy": "temporal", "valid_start": 0.7,
                                    "test_start": 0.85}, "fields": {}},
        "retrieval": {"baseline": "popularity", "models": {"popularity": {}, "sasrec": {}}}}


def test_cell_parameters_override_split_seeds_and_models() -> None:
    grid = BenchmarkGrid(pipeline="retrieval", datasets={"d": "base"},
                         protocols=["leave_one_out"], seeds=[3, 4], models=["sasrec"])
    params = cell_parameters(BASE, grid, "leave_one_out")
    assert params["retrieval"]["split"] == {"strategy": "leave_one_out"}
    assert params["retrieval"]["seeds"] == [3, 4]
    assert list(params["retrieval"]["models"]) == ["sasrec"]
    assert params["retrieval"]["baseline"] == "sasrec"  # the baseline left the grid
    assert BASE["retrieval"]["models"].keys() == {"popularity", "sasrec"}  # input untouched
    ranking = BenchmarkGrid(pipeline="ranking", datasets={"d": "base"}, protocols=["temporal"])
    base = {**BASE, "ranking": {"baseline": "lr", "models": {"lr": {}}}}
    split = cell_parameters(base, ranking, "temporal")["preprocessing"]["split"]
    assert split == {"strategy": "temporal", "valid_start": 0.7, "test_start": 0.85}


def test_outputs_under_the_env_root_move_to_the_cell_root() -> None:
    params = {"retrieval": {"training": {"checkpoint_dir": "data/ml/06_models/retrieval/ckpt"},
                            "models": {"a": {"params": {"note": "data/mlx/other"}}}},
              "ranking": {"trainer": {"checkpoint_dir": "data/ml"}, "ks": [1, 2]}}
    moved = rebase_outputs(params, "data/ml", "/tmp/cell")
    assert moved["retrieval"]["training"]["checkpoint_dir"] == "/tmp/cell/06_models/retrieval/ckpt"
    assert moved["retrieval"]["models"]["a"]["params"]["note"] == "data/mlx/other"  # not a child
    assert moved["ranking"]["trainer"]["checkpoint_dir"] == "/tmp/cell"
    assert moved["ranking"]["ks"] == [1, 2]


def test_grid_errors_name_the_key(tmp_path: Path) -> None:
    grid = BenchmarkGrid(pipeline="retrieval", datasets={"d": "base"}, protocols=["temporal"],
                         models=["nope"])
    with pytest.raises(KeyError, match=r"\['nope'\] are not entries of retrieval.models"):
        cell_parameters(BASE, grid, "temporal")
    bad = tmp_path / "grid.yml"
    bad.write_text("pipeline: retrieval\ndatasets: {d: base}\nprotocols: [temporal]\nsede: 1\n")
    with pytest.raises(ValueError, match="sede"):
        load_grid(bad)


def test_markdown_table_shows_mean_and_std_of_seeds() -> None:
    runs = [{"seed": 0, "auc": 0.70, "logloss": 0.3, "gauc": 0.6, "train_seconds": 2.0,
             "samples_per_second": 1000.0, "params": 10},
            {"seed": 1, "auc": 0.72, "logloss": 0.3, "gauc": 0.6, "train_seconds": 4.0,
             "samples_per_second": 3000.0, "params": 10}]
    table = markdown_table("ranking", [{"dataset": "d", "protocol": "temporal", "model": "lr",
                                        "wall_seconds": 9.0, "peak_rss_gib": 1.5,
                                        "metrics": runs}])
    row = table.splitlines()[2]
    assert "0.7100 ± 0.0141" in row  # sample std of (0.70, 0.72)
    assert "| 3.0 | 2,000 | 1.50 | 10 | 9 |" in row and row.count("–") == 1  # no rare AUC


def test_benchmark_runs_a_grid_in_separate_processes(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", n_users=120, n_items=150, n_impressions=6_000)
    tiny = project / "conf" / "tiny"
    tiny.mkdir()
    (tiny / "parameters_semantic_ids.yml").write_text(yaml.safe_dump(replacing({"semantic_ids": {
        **SMALL_SIDS, "tokenizers": {"rq_kmeans": SMALL_SIDS["tokenizers"]["rq_kmeans"]}}})))
    (tiny / "parameters_retrieval.yml").write_text(yaml.safe_dump(replacing({"retrieval": {
        "baseline": "popularity", "models": {"popularity": {"name": "popularity"}}}})))
    grid = BenchmarkGrid(pipeline="retrieval", datasets={"tiny": "tiny"},
                         protocols=["leave_one_out"], seeds=[0, 1], output="bench")
    conf_mtime = (project / "conf").stat().st_mtime_ns
    result = run_grid(grid, project, name="t", log=lambda _: None)
    (row,) = result["rows"]
    assert (row["dataset"], row["protocol"], row["model"]) == ("tiny", "leave_one_out",
                                                               "popularity")
    assert row["peak_rss_gib"] > 0.05 and row["wall_seconds"] > 0
    assert row["metrics"]["split"]["strategy"] == "leave_one_out"
    assert row["metrics"]["seeds"]["n"] == 2 and 0 < row["metrics"]["recall@10"] <= 1
    saved = json.loads((project / "bench" / "benchmark.json").read_text())
    assert saved["rows"][0]["model"] == "popularity"
    assert "| tiny | leave_one_out | popularity |" in (project / "bench/benchmark.md").read_text()
    assert (project / "conf").stat().st_mtime_ns == conf_mtime  # conf/ was never written
    assert not any((project / "bench" / ".conf").iterdir())  # the throw-away source is gone


def test_a_ranking_grid_prepares_every_model_input(tmp_path: Path) -> None:
    """The per-model runs read the train, valid and test splits the prepare step wrote."""
    project = make_project(tmp_path / "project", n_users=80, n_items=100, n_impressions=3_000)
    small = project / "conf" / "small"
    small.mkdir()
    (small / "parameters_ranking.yml").write_text(yaml.safe_dump(replacing({"ranking": {
        "baseline": "lr", "trainer": {"epochs": 1, "batch_size": 256, "progress": False,
                                      "checkpoint_dir": None},
        "models": {"lr": {"name": "lr"}}}})))
    grid = BenchmarkGrid(pipeline="ranking", datasets={"small": "small"},
                         protocols=["temporal"], seeds=[0], output="bench")
    (row,) = run_grid(grid, project, name="r", log=lambda _: None)["rows"]
    (run,) = row["metrics"]  # one seed's evaluation
    assert row["model"] == "lr" and run["seed"] == 0 and 0 < run["auc"] <= 1
