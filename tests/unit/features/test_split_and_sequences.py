"""Temporal split and behaviour histories: nothing from the future, nothing from others."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recflow.features.config import SplitConfig
from recflow.features.sequences import build_histories
from recflow.features.split import split_masks, temporal_cutoffs


def _timestamps(n: int = 5_000, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    # coarse timestamps: many ties, including at the cut-offs
    return pd.Series(1_700_000_000 + rng.integers(0, 500, n) * 60, name="timestamp")


# --------------------------------------------------------------------------- #
# Split
# --------------------------------------------------------------------------- #
def test_cutoffs_are_ordered_and_no_train_row_reaches_train_end() -> None:
    ts = _timestamps()
    cut = temporal_cutoffs(ts, SplitConfig(valid_start=0.7, test_start=0.85))
    assert ts.min() < cut["train_end"] < cut["valid_end"] <= ts.max()
    assert cut["column"] == "timestamp"
    assert cut["train_end_iso"].startswith("2023-11-")
    masks = split_masks(ts, cut)
    values = ts.to_numpy()
    assert (values[masks["train"]] < cut["train_end"]).all()
    assert (values[masks["valid"]] >= cut["train_end"]).all()
    assert (values[masks["valid"]] < cut["valid_end"]).all()
    assert (values[masks["test"]] >= cut["valid_end"]).all()
    # a partition: every row in exactly one split
    total = masks["train"].astype(int) + masks["valid"].astype(int) + masks["test"].astype(int)
    assert (total == 1).all()
    # ties at a cut-off all land on the same (later) side
    assert values[masks["valid"]].min() == cut["train_end"]
    assert (values == cut["train_end"]).sum() == (values[masks["valid"]] == cut["train_end"]).sum()
    # sizes follow the quantiles (up to the ties)
    assert masks["train"].mean() == pytest.approx(0.7, abs=0.01)
    assert masks["test"].mean() == pytest.approx(0.15, abs=0.01)


def test_every_train_timestamp_precedes_every_valid_and_test_one() -> None:
    ts = _timestamps(seed=3).sample(frac=1.0, random_state=1)  # unsorted input
    masks = split_masks(ts, temporal_cutoffs(ts, SplitConfig()))
    values = ts.to_numpy()
    assert values[masks["train"]].max() < values[masks["valid"]].min()
    assert values[masks["valid"]].max() < values[masks["test"]].min()


def test_degenerate_timestamps_are_rejected() -> None:
    with pytest.raises(ValueError, match="degenerate") as info:
        temporal_cutoffs(pd.Series([5, 5, 5, 5], name="timestamp"), SplitConfig())
    assert "more distinct timestamps" in str(info.value)


def test_split_config_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="valid_start"):
        SplitConfig(valid_start=0.9, test_start=0.8)


# --------------------------------------------------------------------------- #
# Histories
# --------------------------------------------------------------------------- #
def _log(n: int = 600, n_users: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": rng.integers(0, n_users, n),
        "item_id": rng.integers(1_000, 1_050, n),
        "timestamp": rng.integers(0, 120, n),  # many same-time events per user
        "click": rng.integers(0, 2, n),
    })  # fmt: skip


def _reference(log: pd.DataFrame, queries: pd.DataFrame, length: int) -> list[list]:
    """Brute force: per query, the same user's clicked items strictly earlier, oldest first."""
    clicks = log[log["click"] == 1]
    out = []
    for user, t in zip(queries["user_id"], queries["timestamp"], strict=True):
        mine = clicks[(clicks["user_id"] == user) & (clicks["timestamp"] < t)]
        mine = mine.sort_values("timestamp", kind="stable")  # stable: log order within a tie
        items = mine["item_id"].tolist()[-length:]
        out.append([None] * (length - len(items)) + items)
    return out


@pytest.mark.parametrize("length", [1, 4, 30])
def test_histories_equal_a_brute_force_reference(length: int) -> None:
    log = _log()
    got = build_histories(log, length)
    assert got.shape == (len(log), length) and got.dtype == object
    assert got.tolist() == _reference(log, log, length)


def test_histories_for_separate_queries() -> None:
    log = _log(seed=4)
    queries = pd.DataFrame({
        "user_id": [0, 0, 5, 99, 3],  # 99 never appears in the log
        "item_id": [1, 2, 3, 4, 5],
        "timestamp": [0, 60, 200, 50, 119],
    })  # fmt: skip
    got = build_histories(log, 5, queries=queries)
    assert got.tolist() == _reference(log, queries, 5)
    assert got[0].tolist() == [None] * 5  # nothing before t=0
    assert got[3].tolist() == [None] * 5  # unknown user: empty, never someone else's


def test_histories_exclude_ties_pad_left_and_put_most_recent_last() -> None:
    log = pd.DataFrame({
        "user_id":   [1,  1,  1,  1,  2,  1],
        "item_id":   [10, 11, 12, 13, 20, 14],
        "timestamp": [1,  2,  3,  3,  2,  4],
        "click":     [1,  1,  1,  1,  1,  0],
    })  # fmt: skip
    got = build_histories(log, 3).tolist()
    assert got[0] == [None, None, None]  # first event: no history
    assert got[1] == [None, None, 10]
    assert got[2] == [None, 10, 11]  # item 13 happened at the same time: excluded
    assert got[3] == [None, 10, 11]  # and vice versa
    assert got[4] == [None, None, None]  # user 2 never sees user 1's clicks
    assert got[5] == [11, 12, 13]  # most recent last; 12/13 tie kept in log order
    # only rows with event == 1 count
    assert build_histories(log.assign(click=0), 3).tolist() == [[None] * 3] * 6
    purchases = log.assign(purchase=[0, 1, 0, 0, 0, 0])
    assert build_histories(purchases, 2, event="purchase").tolist()[5] == [None, 11]


def test_histories_do_not_depend_on_row_order_or_other_users() -> None:
    log = _log(seed=7)
    length = 300  # never truncates: which of two same-time events is kept is log order
    base = build_histories(log, length)
    shuffled = log.sample(frac=1.0, random_state=3)
    again = build_histories(shuffled, length)

    # compare as per-row multisets keyed by (user, time): ties may reorder within a time
    def keyed(frame: pd.DataFrame, hist: np.ndarray) -> dict:
        return {
            (u, t): sorted(map(str, h))
            for u, t, h in zip(frame["user_id"], frame["timestamp"], hist.tolist(), strict=True)
        }

    assert keyed(log, base) == keyed(shuffled, again)
    # removing every other user changes nothing for user 0
    alone = log[log["user_id"] == 0]
    only = build_histories(alone, length)
    assert only.tolist() == base[(log["user_id"] == 0).to_numpy()].tolist()


def test_histories_with_no_events_at_all() -> None:
    log = _log().assign(click=0)
    assert (build_histories(log, 3) == None).all()  # noqa: E711 - elementwise on object array


def test_histories_keep_a_missing_item_missing() -> None:
    log = pd.DataFrame({
        "user_id": [1, 1, 1, 1],
        "item_id": ["a", None, "b", "c"],
        "timestamp": [1, 2, 3, 4],
        "click": [1, 1, 1, 1],
    })  # fmt: skip
    last = build_histories(log, 3)[3].tolist()
    assert last[0] == "a" and pd.isna(last[1]) and last[2] == "b"  # not some other item
