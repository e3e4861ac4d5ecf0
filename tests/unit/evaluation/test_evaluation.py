"""Seed aggregation (mean ± std) and dataset statistics, checked against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recflow.evaluation import dataset_statistics, mean_std, split_statistics
from recflow.evaluation.aggregate import format_mean_std


# --------------------------------------------------------------------------- #
# mean ± std
# --------------------------------------------------------------------------- #
def test_mean_std_is_the_sample_std_over_runs() -> None:
    runs = [
        {"seed": 1, "auc": 0.7, "logloss": 0.5, "model": "din", "best_epoch": 2, "ok": True},
        {"seed": 2, "auc": 0.8, "logloss": 0.3, "model": "din", "best_epoch": 3, "ok": True},
        {"seed": 3, "auc": 0.9, "logloss": 0.4, "model": "din", "best_epoch": 4, "ok": False},
    ]
    out = mean_std(runs)
    assert out["n"] == 3
    assert set(out["mean"]) == {"auc", "logloss", "best_epoch"}  # no seed, text or bools
    assert out["mean"]["auc"] == pytest.approx(0.8)
    assert out["mean"]["logloss"] == pytest.approx(0.4)
    assert out["mean"]["best_epoch"] == pytest.approx(3.0)
    # sample std: sqrt(((-0.1)^2 + 0 + 0.1^2) / (3 - 1)) = 0.1
    assert out["std"]["auc"] == pytest.approx(0.1)
    assert out["std"]["logloss"] == pytest.approx(0.1)
    assert out["std"]["best_epoch"] == pytest.approx(1.0)
    assert out["runs"] == runs and out["runs"] is not runs
    assert "ddof=1" in out["std_kind"]
    assert format_mean_std(out, "auc") == "0.8000 ± 0.1000 (n=3)"


def test_mean_std_skips_keys_not_numeric_in_every_run() -> None:
    runs = [{"auc": 0.6, "rare": None, "only_first": 1.0, "n": np.int64(4)},
            {"auc": 0.7, "rare": 0.5, "n": np.int64(6)}]
    out = mean_std(runs)
    assert set(out["mean"]) == {"auc", "n"}
    assert out["mean"]["n"] == 5.0 and isinstance(out["mean"]["n"], float)
    assert out["std"]["auc"] == pytest.approx(math.sqrt(2 * 0.05**2))


def test_mean_std_of_one_run_has_no_std_and_nan_propagates() -> None:
    single = mean_std([{"auc": 0.75}])
    assert single["mean"] == {"auc": 0.75} and single["std"] == {"auc": None}
    assert format_mean_std(single, "auc") == "0.7500 (n=1)"
    with_nan = mean_std([{"auc": float("nan")}, {"auc": 0.5}])
    assert math.isnan(with_nan["mean"]["auc"])
    with pytest.raises(ValueError, match="at least one run"):
        mean_std([])


# --------------------------------------------------------------------------- #
# Dataset statistics
# --------------------------------------------------------------------------- #
def _log() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": ["a", "a", "b", "b", "a", "b", "c", "c", "a"],
        "item_id": ["x", "y", "x", "z", "z", "x", "w", "w", "x"],
        "timestamp": [1, 2, 3, 4, 5, 6, 7, 8, 9],
        "click": [1, 0, 0, 1, 1, 0, 0, 1, 0],
        "split": [0, 0, 0, 1, 2, 2, 2, -1, 2],  # row 7 dropped
    })


def test_dataset_statistics_on_a_hand_made_log() -> None:
    stats = dataset_statistics(_log(), label_col="click", split="split")
    assert stats["users"] == 3 and stats["items"] == 4
    assert stats["interactions"] == 8 and stats["dropped_rows"] == 1
    # distinct pairs (a,x) (a,y) (b,x) (b,z) (a,z) (c,w) = 6 of 3 * 4
    assert stats["density"] == pytest.approx(0.5)
    # rows per user: a 4, b 3, c 1
    assert stats["sequence_length"] == {
        "min": 1, "p25": 2.0, "median": 3.0, "p75": 3.5, "p95": pytest.approx(3.9),
        "max": 4, "mean": pytest.approx(8 / 3),
    }
    assert stats["label_rate"] == pytest.approx(3 / 8)
    assert stats["time_range"] == [1, 9]
    assert stats["splits"]["train"] == {"interactions": 3, "users": 2, "items": 2,
                                        "label_rate": pytest.approx(1 / 3)}
    assert stats["splits"]["valid"]["interactions"] == 1
    assert stats["splits"]["test"] == {"interactions": 4, "users": 3, "items": 3,
                                       "label_rate": pytest.approx(1 / 4)}
    # test rows z, x, w, x: z and w never in train -> 2 of 4 rows, 2 of 3 items
    assert stats["cold_items_test"] == {"rows": pytest.approx(0.5), "items": pytest.approx(2 / 3)}


def test_split_names_frames_and_codes_agree() -> None:
    log = _log()
    by_code = dataset_statistics(log, label_col="click", split=log["split"].to_numpy())
    names = log["split"].map({0: "train", 1: "valid", 2: "test", -1: "dropped"})
    by_name = dataset_statistics(log, label_col="click", split=names.to_numpy())
    assert by_code == by_name
    kept = log[log["split"] >= 0]
    frames = {name: kept[kept["split"] == code] for name, code in
              (("train", 0), ("valid", 1), ("test", 2))}
    by_frames = split_statistics(frames, label_col="click")
    assert {k: v for k, v in by_frames.items() if k != "dropped_rows"} == \
        {k: v for k, v in by_code.items() if k != "dropped_rows"}


def test_statistics_without_split_or_label() -> None:
    stats = dataset_statistics(_log(), time_col=None)
    assert stats["interactions"] == 9 and stats["label_rate"] is None
    assert stats["cold_items_test"] is None and "splits" not in stats
    assert "time_range" not in stats
    with pytest.raises(ValueError, match="split codes"):
        dataset_statistics(_log(), split=np.array([0, 1, 2, 3, 0, 0, 0, 0, 0]))


def test_unknown_split_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="split names") as info:
        dataset_statistics(_log(), split=np.array(["train"] * 8 + ["holdout"], dtype=object))
    assert "holdout" in str(info.value)


def test_split_statistics_read_parquet_parts_chunk_by_chunk(tmp_path, monkeypatch) -> None:
    """A split too big to load (parquet parts, read in chunks) gives the frames' numbers."""
    from recflow.datasets.sharded import ParquetParts
    from recflow.evaluation import stats

    rng = np.random.default_rng(0)
    n = 5_000
    log = pd.DataFrame({"user_id": rng.integers(0, 300, n), "item_id": rng.integers(0, 900, n),
                        "timestamp": np.arange(n), "click": rng.integers(0, 2, n)})
    frames = {"train": log.iloc[:3000], "valid": log.iloc[3000:4000], "test": log.iloc[4000:]}
    parts = {}
    for name, frame in frames.items():
        files = []
        for k, rows in enumerate(np.array_split(np.arange(len(frame)), 3)):
            files.append(tmp_path / f"{name}-{k}.parquet")
            frame.iloc[rows].to_parquet(files[-1], index=False)
        parts[name] = ParquetParts(tuple(files))
    expected = split_statistics(frames, label_col="click")
    assert expected["density"] < 1 and expected["cold_items_test"]["rows"] > 0
    # several chunks per part, and the distinct-pair set merged whenever it doubles
    monkeypatch.setattr(stats, "CHUNK_ROWS", 300)
    monkeypatch.setattr(stats, "PAIR_MERGE_ROWS", 0)
    assert split_statistics(parts, label_col="click") == expected
