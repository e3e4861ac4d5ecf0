"""Spark preprocessing (`kedro run --env spark`) equals the in-memory pipeline on the same data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from recflow.datasets.synthetic import GeneratorConfig, write_shards
from tests.conftest import make_project, run_kedro
from tests.unit.features.test_out_of_core import (
    SPLITS,
    _params,
    assert_frames_match,
    assert_specs_match,
)
from tests.unit.features.test_out_of_core import in_memory as in_memory_run

pytestmark = pytest.mark.slow  # starts a Spark session

pyspark = pytest.importorskip("pyspark", reason="the `spark` extra (in `dev`) installs pyspark")


@pytest.fixture(scope="module")
def spark():
    """One small local session per module; `kedro run --env spark` reuses it (getOrCreate)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers: this venv, not PATH's
    session = (SparkSession.builder.master("local[2]").appName("recflow-test")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.default.parallelism", "2")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.driver.memory", "1g")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_run_equals_in_memory(spark, tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", n_impressions=1_000)
    raw = project / "data/01_raw"
    # two time-ordered input files: Spark must keep the in-memory (file, row) order
    write_shards(GeneratorConfig(n_users=200, n_items=300, n_impressions=6_000, seed=11,
                                 days=4), raw, days_per_shard=2)
    catalog = project / "conf/spark/catalog.yml"
    catalog.write_text(catalog.read_text().replace(
        "data/01_raw/interactions.parquet", "data/01_raw/interactions"))
    run_kedro(project, "preprocessing_spark", env="spark")

    cutoffs, spec, frames = in_memory_run(raw, _params())
    out = project / "data/05_model_input"
    assert json.loads((project / "data/02_intermediate/split_cutoffs.json").read_text()) == cutoffs
    assert_specs_match(json.loads((out / "feature_spec.json").read_text()), spec)
    for split in SPLITS:
        parts = sorted((out / f"model_input_{split}").glob("part-*.parquet"))
        assert parts, split
        streamed = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        assert_frames_match(streamed, frames[split], split)
