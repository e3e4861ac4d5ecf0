"""Train / valid / test assignment: temporal (global cut-offs), leave-one-out, random.

`assign_splits` is the one entry point every evaluating pipeline uses (preprocessing on
impressions, retrieval on click events), so all of them split the same way. Only the
temporal strategy keeps every test row later than every train row; leave-one-out and
random let train rows of one user be later than test rows of another (future leakage
across users), which is the usual price of those protocols.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from recflow.features.config import TIMED_STRATEGIES, SplitConfig


def temporal_cutoffs(timestamps: pd.Series, config: SplitConfig) -> dict[str, int | str]:
    """Cut-offs as timestamp quantiles; train < train_end <= valid < valid_end <= test."""
    ts = timestamps.to_numpy(np.int64)
    train_end = int(np.quantile(ts, config.valid_start, method="higher"))
    valid_end = int(np.quantile(ts, config.test_start, method="higher"))
    if not (ts.min() < train_end < valid_end <= ts.max()):
        raise ValueError(
            "temporal split is degenerate: timestamps span "
            f"[{ts.min()}, {ts.max()}] but cut-offs are train_end={train_end}, "
            f"valid_end={valid_end}; the data needs more distinct timestamps"
        )

    def iso(t: int) -> str:
        return datetime.fromtimestamp(t, tz=UTC).isoformat()

    return {
        "train_end": train_end,
        "valid_end": valid_end,
        "train_end_iso": iso(train_end),
        "valid_end_iso": iso(valid_end),
        "column": str(timestamps.name),
    }


def split_masks(timestamps: pd.Series, cutoffs: dict) -> dict[str, np.ndarray]:
    """Boolean row masks for train / valid / test."""
    ts = timestamps.to_numpy(np.int64)
    masks = {
        "train": ts < cutoffs["train_end"],
        "valid": (ts >= cutoffs["train_end"]) & (ts < cutoffs["valid_end"]),
        "test": ts >= cutoffs["valid_end"],
    }
    latest_train = ts[masks["train"]].max(initial=np.iinfo(np.int64).min)
    if latest_train >= cutoffs["train_end"]:  # the invariant the split exists for
        raise AssertionError(f"train row at {latest_train} is not before {cutoffs['train_end']}")
    return masks


SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
DROPPED = -1
GIVEN_COLUMN = "split"  # the canonical split column of a `given` split (recflow.datasets)


def assign_splits(
    frame: pd.DataFrame,
    config: SplitConfig,
    user_col: str = "user_id",
    time_col: str = "timestamp",
) -> np.ndarray:
    """int8 code per row: 0 train, 1 valid, 2 test, -1 dropped (see `SPLIT_CODES`).

    Ties in time are ordered by row position (stable), so the result is deterministic;
    the unit is one row (one impression, or one click event). Vectorised: two sorts.
    """
    n = len(frame)
    codes = np.zeros(n, dtype=np.int8)
    if config.strategy in TIMED_STRATEGIES and time_col not in frame.columns:
        raise ValueError(f"split.strategy '{config.strategy}' orders events in time, but the "
                         "log has no event time (dataset.events.time is not declared); use "
                         "strategy 'given' (your own split) or 'random'")
    if config.strategy == "given":
        if GIVEN_COLUMN not in frame.columns:
            raise ValueError("split.strategy 'given' needs the split from the data: declare "
                             "dataset.events.tables {train, valid, test} or "
                             "dataset.events.split_column")
        codes[:] = frame[GIVEN_COLUMN].map(SPLIT_CODES).to_numpy(np.int8)
    elif config.strategy == "temporal":
        masks = split_masks(frame[time_col], temporal_cutoffs(frame[time_col], config))
        codes[masks["valid"]] = SPLIT_CODES["valid"]
        codes[masks["test"]] = SPLIT_CODES["test"]
    elif config.strategy == "leave_one_out":
        users, _ = pd.factorize(frame[user_col], use_na_sentinel=False)
        by_time = np.argsort(frame[time_col].to_numpy(), kind="stable")  # ties: row order
        order = by_time[np.argsort(users[by_time], kind="stable")]  # then by user
        sorted_users = users[order]
        counts = np.bincount(users, minlength=int(users.max(initial=-1)) + 1)
        group_end = np.cumsum(counts)[sorted_users]  # one past each user's last row
        from_end = group_end - 1 - np.arange(n)  # 0 = the user's latest row
        ranked = np.where(from_end == 0, SPLIT_CODES["test"],
                          np.where(from_end == 1, SPLIT_CODES["valid"], SPLIT_CODES["train"]))
        short = counts[sorted_users] < config.min_interactions
        ranked[short] = SPLIT_CODES["train"] if config.short_users == "train" else DROPPED
        codes[order] = ranked
    else:
        n_test, n_valid = round(n * config.test_ratio), round(n * config.valid_ratio)
        shuffled = np.random.default_rng(config.seed).permutation(n)
        codes[shuffled[:n_test]] = SPLIT_CODES["test"]
        codes[shuffled[n_test:n_test + n_valid]] = SPLIT_CODES["valid"]
    return codes


def split_record(
    frame: pd.DataFrame,
    config: SplitConfig,
    user_col: str = "user_id",
    time_col: str = "timestamp",
) -> tuple[dict[str, Any], np.ndarray]:
    """(`split_cutoffs` record, codes): strategy, its parameters, rows per split.

    Temporal records also carry the cut-offs (`train_end`, `valid_end`, ...), which
    is all `recorded_splits` needs to select rows again.
    """
    codes = assign_splits(frame, config, user_col, time_col)
    record: dict[str, Any] = config.parameters()
    if config.strategy == "temporal":
        record.update(temporal_cutoffs(frame[time_col], config))
    elif config.strategy == "given":
        record.update(column=GIVEN_COLUMN)
    else:
        record.update(column=time_col, user_column=user_col,
                      dropped_rows=int((codes == DROPPED).sum()))
    record["rows"] = {name: int((codes == code).sum()) for name, code in SPLIT_CODES.items()}
    return record, codes


def recorded_splits(
    frame: pd.DataFrame,
    record: dict[str, Any],
    user_col: str = "user_id",
    time_col: str = "timestamp",
) -> np.ndarray:
    """The codes of `assign_splits` again, from a saved record (`feature_spec.split`).

    Temporal reuses the saved cut-offs; the others are a pure function of the frame
    and their parameters, so recomputing them on the same frame gives the same rows.
    """
    strategy = record.get("strategy", "temporal")  # records before strategies were temporal
    if strategy == "temporal":
        masks = split_masks(frame[time_col], record)
        codes = np.zeros(len(frame), dtype=np.int8)
        codes[masks["valid"]] = SPLIT_CODES["valid"]
        codes[masks["test"]] = SPLIT_CODES["test"]
        return codes
    config = SplitConfig.model_validate({k: v for k, v in record.items()
                                         if k in SplitConfig.model_fields})
    if strategy == "given":
        return assign_splits(frame, config, user_col, time_col)
    return assign_splits(frame, config, record.get("user_column", user_col),
                         record.get("column", time_col))
