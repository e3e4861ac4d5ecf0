"""Streaming preprocessing equals the in-memory path, and its memory does not grow with data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recflow.datasets.synthetic import GeneratorConfig, write_shards
from recflow.features import FeaturesConfig
from recflow.features.out_of_core import (
    ValueCounts,
    quantile_index_higher,
    quantiles_from_counts,
    shard_cutoffs,
)
from recflow.pipelines.preprocessing import nodes
from tests.conftest import REPO, make_project, run_kedro
from tests.helpers import embedded_declaration, embedded_events

SPLITS = ("train", "valid", "test")


def _params() -> FeaturesConfig:
    text = (REPO / "conf/base/parameters_preprocessing.yml").read_text()
    return FeaturesConfig.model_validate(yaml.safe_load(text)["preprocessing"])


def in_memory(raw: Path, params: FeaturesConfig) -> tuple[dict, dict, dict[str, pd.DataFrame]]:
    """The in-memory nodes on the concatenated shards: (cutoffs, spec, split frames)."""
    log = pd.concat([pd.read_parquet(p) for p in sorted((raw / "interactions").glob("*.parquet"))],
                    ignore_index=True)
    events = embedded_events(log, pd.read_parquet(raw / "users.parquet"),
                             pd.read_parquet(raw / "items.parquet"))
    cutoffs = nodes.split_by_time(events, params)
    spec = nodes.fit_feature_spec(events, cutoffs, params, embedded_declaration())
    return cutoffs, spec, {s: nodes.transform_split(events, spec, s) for s in SPLITS}


def assert_specs_match(streamed: dict, memory: dict) -> None:
    """Identical JSON except standardize stats (merged moments: <= 1e-12 relative).

    The in-memory spec also carries a serving input example; streaming writes none.
    """
    assert "input_example" not in streamed

    def strip(spec: dict) -> dict:
        out = json.loads(json.dumps(spec))
        out.pop("hash")
        out.pop("input_example", None)
        for f in out["fields"]:
            if f["transform"] == "standardize":
                f.pop("state"), f.pop("stats")
        return out

    assert json.dumps(strip(streamed), sort_keys=True) == json.dumps(strip(memory), sort_keys=True)
    for a, b in zip(streamed["fields"], memory["fields"], strict=True):
        if a["transform"] == "vocab":  # byte-identical vocabularies, values and order
            assert json.dumps(a["state"]) == json.dumps(b["state"])
        if a["transform"] == "standardize":
            for key in ("mean", "std"):
                assert a["state"][key] == pytest.approx(b["state"][key], rel=1e-12, abs=1e-12)


def assert_frames_match(streamed: pd.DataFrame, memory: pd.DataFrame, split: str) -> None:
    assert list(streamed.columns) == list(memory.columns), split
    assert len(streamed) == len(memory), split
    for column in memory.columns:
        a, b = streamed[column].to_numpy(), memory[column].to_numpy()
        assert a.dtype == b.dtype, (split, column)
        np.testing.assert_array_equal(a, b, err_msg=f"{split}.{column}")


# ---- exact order statistics ------------------------------------------------------------
def test_quantile_helpers_reproduce_numpy_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 100, 1001, 4096):
        qs = np.r_[np.linspace(0, 1, 17)[1:-1], rng.random(8), 0.8, 0.9]
        for q in qs:
            assert quantile_index_higher(n, q) == np.quantile(np.arange(n), q, method="higher")
        x = np.round(rng.lognormal(3, 1, size=n), 1)  # many ties, like prices
        values, counts = np.unique(x, return_counts=True)
        np.testing.assert_array_equal(quantiles_from_counts(values, counts, qs),
                                      np.quantile(x, qs))


def test_value_counts_merge_exactly_then_degrade_to_a_bounded_sketch() -> None:
    rng = np.random.default_rng(1)
    chunks = [rng.normal(size=3000) for _ in range(4)]
    exact = ValueCounts(max_distinct=1_000_000)
    sketch = ValueCounts(max_distinct=1_000)
    for chunk in chunks:
        exact.add(chunk)
        sketch.add(chunk)
    x = np.concatenate(chunks)
    qs = np.linspace(0, 1, 11)[1:-1]
    np.testing.assert_array_equal(quantiles_from_counts(*exact.sorted(), qs), np.quantile(x, qs))
    values, counts = sketch.sorted()
    assert sketch.dropped_bits > 0 and len(values) <= 1_000 and counts.sum() == x.size
    bound = 2.0 ** -(52 - sketch.dropped_bits)
    np.testing.assert_allclose(quantiles_from_counts(values, counts, qs), np.quantile(x, qs),
                               rtol=4 * bound)


def test_overlapping_shards_are_refused(tmp_path: Path) -> None:
    ts = {"part-00000": lambda: pd.DataFrame({"timestamp": [1, 5, 9]}),
          "part-00001": lambda: pd.DataFrame({"timestamp": [9, 12]})}
    with pytest.raises(ValueError, match="part-00001.*disjoint time ranges"):
        shard_cutoffs(ts, _params())


# ---- parity with the in-memory pipeline, through a real kedro run -----------------------
def test_streaming_run_equals_in_memory(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", n_impressions=1_000)
    raw = project / "data/01_raw"
    written = write_shards(GeneratorConfig(n_users=300, n_items=400, n_impressions=20_000,
                                           seed=7, days=10), raw, days_per_shard=2)
    assert len(written["interactions"]) == 5
    run_kedro(project, "preprocessing_streaming")

    params = _params()
    cutoffs, spec, frames = in_memory(raw, params)
    out = project / "data/05_model_input"
    assert json.loads((project / "data/02_intermediate/split_cutoffs.json").read_text()) == cutoffs
    assert_specs_match(json.loads((out / "feature_spec.json").read_text()), spec)
    for split in SPLITS:
        parts = sorted((out / f"model_input_{split}").glob("part-*.parquet"))
        assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(len(parts))]
        streamed = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        assert_frames_match(streamed, frames[split], split)
    # histories in the test split reach back into earlier shards (the carried state)
    first_test_shard = pd.read_parquet(sorted((out / "model_input_test").glob("*"))[0])
    assert (first_test_shard.filter(like="hist_item_id__").to_numpy() > 0).any()


def test_failed_streaming_run_restores_the_previous_parts(tmp_path: Path) -> None:
    """The transform fails on the last shard after writing parts of every split: the
    run must leave the previous run's parts, not a mix (AtomicRunHooks, all three
    directories of the one `model_input_shards@splits` output)."""
    from recflow.journal import BACKUP_SUFFIX

    project = make_project(tmp_path / "project", n_impressions=1_000)
    raw = project / "data/01_raw"
    write_shards(GeneratorConfig(n_users=300, n_items=400, n_impressions=20_000, seed=7,
                                 days=10), raw, days_per_shard=2)
    run_kedro(project, "preprocessing_streaming")
    out = project / "data/05_model_input"

    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("part-*.parquet")}

    before = snapshot()
    assert {k.split("/")[0] for k in before} == {f"model_input_{s}" for s in SPLITS}
    last = sorted((raw / "interactions").glob("*.parquet"))[-1]  # test period: not fitted on
    pd.read_parquet(last).drop(columns=["click"]).to_parquet(last)
    with pytest.raises(Exception, match="click"):
        run_kedro(project, "preprocessing_streaming")
    assert snapshot() == before
    assert not list(out.rglob(f"*{BACKUP_SUFFIX}"))


# ---- bounded memory: small vs 10x larger input, through a real `kedro run` ----------------
def _peak(project: Path) -> dict:
    """Peak RSS (KiB) of `kedro run --pipelines=preprocessing_streaming` in its own process.

    A real run, not the functions: how Kedro hands a generator node's chunks to the
    catalog decides what stays alive (a multi-output generator node kept up to 57
    chunks in `itertools.tee`; this test caught it).
    """
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    env.pop("KEDRO_ENV", None)
    log = project / "kedro.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "kedro", "run", "--pipelines",
                                 "preprocessing_streaming"], cwd=project, env=env,
                                stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, log.read_text()[-3000:]
    rows = sum(len(pd.read_parquet(d)) for d in
               (project / "data/05_model_input").glob("model_input_*"))
    return {"rows": rows, "peak_kib": usage.ru_maxrss}


@pytest.mark.slow  # measures a subprocess's peak memory
def test_peak_memory_does_not_grow_with_the_number_of_shards(tmp_path: Path) -> None:
    sizes = {"small": 2, "large": 20}  # shards of ~12.5k impressions each: 25k vs 250k rows
    peaks = {}
    for name, days in sizes.items():
        project = make_project(tmp_path / name, n_impressions=1_000)
        write_shards(GeneratorConfig(n_users=300, n_items=400, n_impressions=12_500 * days,
                                     seed=3, days=days), project / "data/01_raw",
                     days_per_shard=1)
        peaks[name] = _peak(project)
        assert peaks[name]["rows"] == 12_500 * days
    # the joined 250k-row log alone is ~150 MiB in memory, its model inputs ~100 MiB
    # (what the tee kept); streaming must stay near the small run's peak
    assert peaks["large"]["peak_kib"] < peaks["small"]["peak_kib"] + 32 * 1024, peaks
