"""Bring your own data, for real: `recflow scaffold` + `kedro run` on three generated shapes.

Criteo-shaped (given split as three CSVs, no user/item/time), reviews-shaped (string ids,
ratings, an items table with gaps) and retail-shaped (ISO-8601 times, a users table that
lacks some users). The scaffolded YAML is used as written, except that the model lists are
cut to what each test checks (what a user tuning the YAML would do) to keep CI short.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recflow.config_loader import REPLACE
from recflow.datasets import examples
from recflow.datasets.scaffold import main as scaffold
from recflow.hooks.hints import MissingInputError
from recflow.serving.scorer import Scorer
from tests.conftest import make_project, output_files, run_kedro
from tests.unit.features.test_out_of_core import assert_frames_match, assert_specs_match

pytestmark = pytest.mark.slow


def _keep_models(project: Path, env: str, names: list[str], epochs: int | None = None) -> None:
    path = project / "conf" / env / "parameters_ranking.yml"
    params = yaml.safe_load(path.read_text())
    params["ranking"]["models"] = {REPLACE: True, **{n: params["ranking"]["models"][n]
                                                    for n in names}}
    if epochs:
        params["ranking"]["trainer"]["epochs"] = epochs
    path.write_text(yaml.safe_dump(params))


def _metrics(project: Path, env: str) -> dict:
    return json.loads((project / "data" / env / "08_reporting/ranking_metrics.json").read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("byod") / "project", n_impressions=2_000)


def test_criteo_shaped_given_split_dcnv2_beats_lr(project: Path) -> None:
    files = examples.write("criteo", project / "data/01_raw/criteo", rows=24_000)
    train, valid, test = (str(p) for p in files)
    assert scaffold(["criteo", "--train", train, "--valid", valid, "--test", test,
                     "--conf", str(project / "conf")]) == 0
    decl = yaml.safe_load((project / "conf/criteo/parameters_dataset.yml").read_text())
    assert decl["dataset"]["events"]["labels"] == {"click": {"column": "label"}}
    assert "user" not in decl["dataset"]["events"]  # no roles were invented
    fields = yaml.safe_load((project / "conf/criteo/parameters_preprocessing.yml").read_text())
    fields = fields["preprocessing"]["fields"]
    blanks = pd.read_csv(train).isna().any()  # the whole file: under scaffold's sample size
    tokens = {n for n, f in fields.items() if n != REPLACE and f.get("missing") == "token"}
    assert tokens and tokens == {n for n in fields if n.startswith("C") and blanks[n]}
    _keep_models(project, "criteo", ["lr", "dcnv2"])
    run_kedro(project, "ranking", env="criteo")
    report = _metrics(project, "criteo")
    models = report["models"]
    assert models["dcnv2"]["auc"] > models["lr"]["auc"] + 0.01, models
    assert models["lr"]["gauc"] is None and "popularity" not in models  # no user, no item
    assert report["split_strategy"]["strategy"] == "given"
    assert report["split_strategy"]["rows"] == {"train": 19_200, "valid": 2_400, "test": 2_400}
    # the bundle scores raw Criteo records (hex tokens, gaps) like the offline scores
    bundle = project / "data/criteo/07_model_output/serving/dcnv2"
    raw = pd.read_csv(test).head(50)
    offline = pd.read_parquet(project / "data/criteo/07_model_output/ranking/"
                              "dcnv2_test_scores.parquet")["score_ctr"].to_numpy()[:50]
    online = Scorer.from_bundle(bundle).score(raw.drop(columns=["label"]))[:, 0]
    assert abs(online - offline).max() < 1e-5


def test_criteo_refuses_models_needing_a_user(project: Path) -> None:
    path = project / "conf/criteo/parameters_ranking.yml"
    params = yaml.safe_load(path.read_text())
    params["ranking"]["models"] = {REPLACE: True, "lr": {"name": "lr"}, "din": {"name": "din"}}
    path.write_text(yaml.safe_dump(params))
    before = output_files(project)
    with pytest.raises(ValueError, match=r"ranking model 'din' cannot train on this dataset: "
                                         r"din needs a sequence field.*user and time roles"):
        run_kedro(project, "ranking", env="criteo")
    assert output_files(project) == before  # the failed run left nothing behind
    with pytest.raises(MissingInputError, match=r"dataset 'items': this pipeline needs an "
                                                r"item catalogue .*does not provide"):
        run_kedro(project, "retrieval", env="criteo",
                  extra_params={"retrieval": {"models": {"popularity": {"name": "popularity"}}}})


def test_reviews_shaped_string_ids_rank_retrieve_and_serve(project: Path) -> None:
    files = examples.write("reviews", project / "data/01_raw/reviews", rows=8_000)
    log, items = (str(p) for p in files)
    assert scaffold(["reviews", "--events", log, "--items", items,
                     "--conf", str(project / "conf")]) == 0
    decl = yaml.safe_load((project / "conf/reviews/parameters_dataset.yml").read_text())
    events = decl["dataset"]["events"]
    assert (events["user"], events["item"]) == ("reviewerID", "asin")
    assert events["labels"]["click"] == {"column": "overall", "threshold": 4.0}
    _keep_models(project, "reviews", ["lr", "din"], epochs=1)
    run_kedro(project, "ranking", env="reviews")
    models = _metrics(project, "reviews")["models"]
    assert {"lr", "din", "popularity"} <= set(models) and models["din"]["gauc"] is not None
    scorer = Scorer.from_bundle(project / "data/reviews/07_model_output/serving/din")
    assert {"reviewerID", "asin", "hist_item_id"} <= set(scorer.raw_schema)
    record = {"reviewerID": "A000000000001", "asin": "B000000042", "category": None,
              "brand": "brand_1", "price": 9.5, "title": "x", "hist_item_id": ["B000000042"]}
    assert 0 < float(scorer.score([record])[0, 0]) < 1
    run_kedro(project, "retrieval", env="reviews", extra_params={
        "retrieval": {"models": {"popularity": {"name": "popularity"},
                                 "sasrec": {"name": "sasrec", "params": {"epochs": 1}}}}})
    retrieval = json.loads((project / "data/reviews/08_reporting/retrieval_metrics.json")
                           .read_text())
    assert {"popularity", "sasrec"} <= set(retrieval["models"])


def test_retail_shaped_iso_times_and_missing_users(project: Path) -> None:
    files = examples.write("retail", project / "data/01_raw/retail", rows=6_000)
    log, users, items = (str(p) for p in files)
    assert scaffold(["retail", "--events", log, "--users", users, "--items", items,
                     "--conf", str(project / "conf")]) == 0
    decl = yaml.safe_load((project / "conf/retail/parameters_dataset.yml").read_text())
    assert decl["dataset"]["events"]["time"] == {"column": "event_time", "format": "iso8601"}
    _keep_models(project, "retail", ["lr", "deepfm"], epochs=1)
    run_kedro(project, "ranking", env="retail")
    report = _metrics(project, "retail")
    assert report["split_strategy"]["strategy"] == "temporal"
    assert report["models"]["deepfm"]["auc"] > 0.5


def test_declared_csv_shards_stream_like_the_in_memory_log(tmp_path: Path) -> None:
    """The streaming preprocessing reads the declaration: renamed roles, ISO-8601 times and
    CSV shards give the same feature spec and model inputs as the in-memory pipeline."""
    project = make_project(tmp_path / "project", n_impressions=500)
    raw = project / "data/01_raw/retail"
    log, users, items = examples.write("retail", raw, rows=6_000)
    frame = pd.read_parquet(log)
    day = pd.to_datetime(frame["event_time"]).dt.floor("20D")
    (raw / "shards").mkdir()
    for i, (_, shard) in enumerate(frame.groupby(day, sort=True)):  # time-ordered shards
        shard.to_csv(raw / "shards" / f"part-{i:05d}.csv", index=False)
    assert scaffold(["retail", "--events", str(log), "--users", str(users), "--items",
                     str(items), "--conf", str(project / "conf")]) == 0
    env = project / "conf/retail"
    catalog = yaml.safe_load((env / "catalog.yml").read_text())
    shards = {"type": "partitions.PartitionedDataset", "path": str(raw / "shards"),
              "filename_suffix": ".csv"}
    catalog["raw_interaction_shards"] = shards | {"dataset": "pandas.CSVDataset"}
    catalog["raw_interaction_timestamps"] = shards | {"dataset": {
        "type": "pandas.CSVDataset", "load_args": {"usecols": ["event_time"]}}}
    (env / "catalog.yml").write_text(yaml.safe_dump(catalog))
    run_kedro(project, "preprocessing", env="retail")
    out = project / "data/retail/05_model_input"
    memory = {s: pd.read_parquet(out / f"{s}.parquet") for s in ("train", "valid", "test")}
    memory_spec = json.loads((out / "feature_spec.json").read_text())
    run_kedro(project, "preprocessing_streaming", env="retail")
    streamed_spec = json.loads((out / "feature_spec.json").read_text())
    assert streamed_spec["raw_names"] == {"user_id": "customer", "item_id": "sku",
                                          "timestamp": "event_time"}
    assert_specs_match(streamed_spec, memory_spec)
    for split, frame in memory.items():
        parts = sorted((out / f"model_input_{split}").glob("part-*.parquet"))
        streamed = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        assert_frames_match(streamed[frame.columns], frame.reset_index(drop=True), split)
