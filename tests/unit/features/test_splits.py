"""Split strategies: leave-one-out on a hand-made log, seeded random, temporal unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recflow.features.config import FeaturesConfig, SplitConfig
from recflow.features.split import (
    DROPPED,
    SPLIT_CODES,
    assign_splits,
    recorded_splits,
    split_masks,
    split_record,
    temporal_cutoffs,
)

TRAIN, VALID, TEST = SPLIT_CODES["train"], SPLIT_CODES["valid"], SPLIT_CODES["test"]


def _log() -> pd.DataFrame:
    """a: 4 rows (two tied at t=30), b: 3 rows, c: 2 rows, d: 1 row; not in time order."""
    return pd.DataFrame({
        "user_id": ["a", "b", "a", "a", "b", "c", "a", "c", "b", "d"],
        "timestamp": [10, 5, 30, 20, 7, 1, 30, 2, 9, 4],
    })


def _loo(**kwargs) -> SplitConfig:
    return SplitConfig(strategy="leave_one_out", **kwargs)


# --------------------------------------------------------------------------- #
# Leave-one-out
# --------------------------------------------------------------------------- #
def test_leave_one_out_assigns_exact_rows_per_split() -> None:
    codes = assign_splits(_log(), _loo())
    assert codes.dtype == np.int8
    # a: 0(10) 3(20) -> train, 2(30) valid, 6(30, later in row order) test
    # b: 1(5) train, 4(7) valid, 8(9) test; c and d have < 3 rows -> all train
    expected = [TRAIN, TRAIN, VALID, TRAIN, VALID, TRAIN, TEST, TRAIN, TEST, TRAIN]
    assert codes.tolist() == expected
    assert np.flatnonzero(codes == TEST).tolist() == [6, 8]
    assert np.flatnonzero(codes == VALID).tolist() == [2, 4]


def test_leave_one_out_drops_short_users_when_asked() -> None:
    codes = assign_splits(_log(), _loo(short_users="drop"))
    expected = [TRAIN, TRAIN, VALID, TRAIN, VALID, DROPPED, TEST, DROPPED, TEST, DROPPED]
    assert codes.tolist() == expected


def test_leave_one_out_min_interactions_is_configurable() -> None:
    codes = assign_splits(_log(), _loo(min_interactions=4, short_users="drop"))
    # b has 3 rows: now short
    assert codes[[1, 4, 8]].tolist() == [DROPPED] * 3
    assert codes[[0, 3, 2, 6]].tolist() == [TRAIN, TRAIN, VALID, TEST]


def test_leave_one_out_breaks_time_ties_by_row_order() -> None:
    log = _log()
    swapped = log.iloc[[0, 1, 6, 3, 4, 5, 2, 7, 8, 9]].reset_index(drop=True)  # rows 2 <-> 6
    codes = assign_splits(swapped, _loo())
    # the tied pair keeps "later row = test": now position 6 is the original row 2
    assert codes.tolist() == assign_splits(log, _loo()).tolist()
    assert codes[6] == TEST and codes[2] == VALID
    # deterministic
    assert assign_splits(swapped, _loo()).tolist() == codes.tolist()


def test_leave_one_out_on_other_column_names_and_datetimes() -> None:
    log = _log().rename(columns={"user_id": "u", "timestamp": "t"})
    log["t"] = pd.to_datetime(log["t"], unit="D")
    codes = assign_splits(log, _loo(), user_col="u", time_col="t")
    assert codes.tolist() == assign_splits(_log(), _loo()).tolist()


def test_leave_one_out_test_row_is_each_users_latest() -> None:
    rng = np.random.default_rng(0)
    log = pd.DataFrame({"user_id": rng.integers(0, 50, 2_000),
                        "timestamp": rng.integers(0, 10_000, 2_000)})
    codes = assign_splits(log, _loo())
    counts = log["user_id"].value_counts()
    eligible = counts[counts >= 3].index
    test = log[codes == TEST]
    assert sorted(test["user_id"]) == sorted(eligible)  # exactly one test row per user
    assert (log[codes == VALID]["user_id"].value_counts() == 1).all()
    latest = log.groupby("user_id")["timestamp"].max()
    assert (test.set_index("user_id")["timestamp"] == latest[test["user_id"]]).all()
    valid = log[codes == VALID].set_index("user_id")["timestamp"]
    train_max = log[codes == TRAIN].groupby("user_id")["timestamp"].max()
    assert (valid <= test.set_index("user_id")["timestamp"][valid.index]).all()
    assert (train_max[valid.index] <= valid).all()


# --------------------------------------------------------------------------- #
# Random
# --------------------------------------------------------------------------- #
def test_random_split_has_exact_ratios_and_is_seeded() -> None:
    frame = pd.DataFrame({"user_id": np.arange(1_000) % 7, "timestamp": np.arange(1_000)})
    config = SplitConfig(strategy="random", valid_ratio=0.1, test_ratio=0.2, seed=5)
    codes = assign_splits(frame, config)
    assert np.bincount(codes).tolist() == [700, 100, 200]
    assert codes.tolist() == assign_splits(frame, config).tolist()  # same seed: same rows
    other = assign_splits(frame, config.model_copy(update={"seed": 6}))
    assert np.bincount(other).tolist() == [700, 100, 200]
    assert (other != codes).mean() > 0.2  # a different seed picks different rows


# --------------------------------------------------------------------------- #
# Temporal: unchanged behaviour
# --------------------------------------------------------------------------- #
def test_temporal_assignment_matches_the_cutoff_masks() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"user_id": rng.integers(0, 9, 3_000),
                          "timestamp": 1_700_000_000 + rng.integers(0, 400, 3_000) * 60})
    config = SplitConfig(valid_start=0.7, test_start=0.85)
    codes = assign_splits(frame, config)
    masks = split_masks(frame["timestamp"], temporal_cutoffs(frame["timestamp"], config))
    for name, code in SPLIT_CODES.items():
        assert ((codes == code) == masks[name]).all(), name
    record, recorded = split_record(frame, config)
    assert record["strategy"] == "temporal"
    assert record["valid_start"] == 0.7 and record["test_start"] == 0.85
    assert record["train_end"] == temporal_cutoffs(frame["timestamp"], config)["train_end"]
    assert "min_interactions" not in record and "seed" not in record
    assert record["rows"] == {n: int(m.sum()) for n, m in masks.items()}
    assert (recorded == codes).all()
    assert (recorded_splits(frame, record) == codes).all()
    legacy = {k: v for k, v in record.items() if k not in ("strategy", "valid_start", "test_start")}
    assert (recorded_splits(frame, legacy) == codes).all()  # records from before strategies


@pytest.mark.parametrize("config", [
    SplitConfig(strategy="leave_one_out", short_users="drop"),
    SplitConfig(strategy="random", valid_ratio=0.3, test_ratio=0.3, seed=2),
], ids=["leave_one_out", "random"])
def test_records_reproduce_the_assignment(config: SplitConfig) -> None:
    log = pd.concat([_log()] * 3, ignore_index=True)
    record, codes = split_record(log, config)
    assert record["strategy"] == config.strategy
    assert record["rows"] == {n: int((codes == c).sum()) for n, c in SPLIT_CODES.items()}
    assert record["dropped_rows"] == int((codes == DROPPED).sum())
    assert "train_end" not in record
    assert (recorded_splits(log, record) == codes).all()


# --------------------------------------------------------------------------- #
# YAML errors
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(("split", "fragments"), [
    ({"strategy": "leave_one_out", "valid_start": 0.5},
     ["split.valid_start", "strategy 'temporal'", "split.min_interactions"]),
    ({"seed": 3}, ["split.seed", "strategy 'random'", "'temporal'"]),
    ({"strategy": "random", "valid_ratio": 0.6, "test_ratio": 0.5},
     ["split.valid_ratio + split.test_ratio"]),
    ({"strategy": "leave_one_out", "min_interactions": 2}, ["min_interactions", "3"]),
    ({"strategy": "leave_one_out", "short_users": "valid"}, ["short_users", "'drop'"]),
    ({"strategy": "loo"}, ["strategy", "'leave_one_out'", "'random'"]),
    ({"valid_start": 0.9, "test_start": 0.8}, ["split.valid_start (0.9)"]),
], ids=["foreign-key", "foreign-seed", "ratios", "min-interactions", "short-users",
        "unknown-strategy", "unordered"])
def test_bad_split_yaml_names_the_key(split: dict, fragments: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        FeaturesConfig.model_validate({"fields": {"item_id": {"transform": "vocab"}},
                                       "split": split})
    message = str(info.value)
    assert "split" in message
    for fragment in fragments:
        assert fragment in message, message


def test_other_strategies_keys_at_their_defaults_are_accepted() -> None:
    """The base YAML's temporal keys stay valid when only `strategy` is overridden."""
    config = SplitConfig(strategy="leave_one_out", valid_start=0.8, test_start=0.9)
    assert config.parameters() == {"strategy": "leave_one_out", "min_interactions": 3,
                                   "short_users": "train"}
    with pytest.raises(ValidationError, match="has no effect"):
        SplitConfig(strategy="leave_one_out", valid_start=0.7)
