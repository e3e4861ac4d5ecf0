"""Dataset statistics for reports: size, density, per-user length, label rate, cold items.

Vectorised over columns (factorize + bincount), so the same function describes an
impression log of millions of rows or a handful of click events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

SPLIT_NAMES = ("train", "valid", "test")
_CODES = {0: "train", 1: "valid", 2: "test", -1: "dropped"}


def _split_codes(events: pd.DataFrame, split: str | np.ndarray | pd.Series | None) -> np.ndarray:
    """int8 split code per row (0 train, 1 valid, 2 test, -1 dropped).

    `split` is a column name or an array of codes (`assign_splits`) or of names.
    """
    if split is None:
        return np.zeros(len(events), dtype=np.int8)
    values = events[split] if isinstance(split, str) else pd.Series(np.asarray(split))
    if len(values) != len(events):
        raise ValueError(f"split has {len(values)} values for {len(events)} rows")
    if pd.api.types.is_integer_dtype(values):
        codes = values.to_numpy()
        unknown = set(np.unique(codes).tolist()) - set(_CODES)
        if unknown:
            raise ValueError(f"split codes must be in {sorted(_CODES)}; got {sorted(unknown)}")
        return codes.astype(np.int8)
    by_name = {name: code for code, name in _CODES.items()}
    codes = values.astype(str).map(by_name)
    if codes.isna().any():
        unknown = sorted(set(values[codes.isna()].astype(str)))
        raise ValueError(f"split names must be in {list(by_name)}; got {unknown}")
    return codes.to_numpy(np.int8)


def _distinct(codes: np.ndarray, size: int) -> int:
    """Number of distinct values among non-negative integer codes below `size`."""
    return int(np.count_nonzero(np.bincount(codes, minlength=size)))


def _distribution(counts: np.ndarray) -> dict[str, float]:
    if counts.size == 0:
        return {}
    q = np.quantile(counts, [0.25, 0.5, 0.75, 0.95])
    return {"min": int(counts.min()), "p25": float(q[0]), "median": float(q[1]),
            "p75": float(q[2]), "p95": float(q[3]), "max": int(counts.max()),
            "mean": float(counts.mean())}


def _rate(labels: np.ndarray | None, mask: np.ndarray) -> float | None:
    if labels is None or not mask.any():
        return None
    return float(labels[mask].mean())


def dataset_statistics(
    events: pd.DataFrame,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    label_col: str | None = None,
    split: str | np.ndarray | pd.Series | None = None,
) -> dict[str, Any]:
    """Statistics of the rows that are in some split (rows marked dropped are only counted).

    - users / items / interactions (rows), `density` = distinct (user, item) pairs
      / (users * items);
    - `sequence_length`: min/p25/median/p75/p95/max/mean of interactions per user;
    - `label_rate`: mean of `label_col` (None without one);
    - `splits`: rows, users, items, label rate per split;
    - `cold_items_test`: share of test rows (`rows`) and of distinct test items (`items`)
      whose item has no train interaction; None without a split.
    """
    codes = _split_codes(events, split)
    kept = codes != -1
    users, _ = pd.factorize(events[user_col], use_na_sentinel=False)
    items, _ = pd.factorize(events[item_col], use_na_sentinel=False)
    n_user_codes, n_item_codes = int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1
    users, items, codes = users[kept], items[kept], codes[kept]
    labels = events[label_col].to_numpy(np.float64)[kept] if label_col else None
    n = int(kept.sum())
    per_user = np.bincount(users, minlength=n_user_codes)
    n_users, n_items = int(np.count_nonzero(per_user)), _distinct(items, n_item_codes)
    pairs = pd.unique(users.astype(np.int64) * max(n_item_codes, 1) + items).size
    stats: dict[str, Any] = {
        "users": n_users,
        "items": n_items,
        "interactions": n,
        "dropped_rows": int((~kept).sum()),
        "density": pairs / (n_users * n_items) if n_users and n_items else None,
        "sequence_length": _distribution(per_user[per_user > 0]),
        "label_rate": _rate(labels, np.ones(n, dtype=bool)),
    }
    if time_col is not None and n:
        times = events[time_col].to_numpy()[kept]
        low, high = times.min(), times.max()
        plain = np.issubdtype(times.dtype, np.number)  # datetimes as ISO strings (JSON)
        stats["time_range"] = [low.item(), high.item()] if plain else [str(low), str(high)]
    if split is None:
        stats["cold_items_test"] = None
        return stats
    stats["splits"] = {
        name: {"interactions": int(mask.sum()), "users": _distinct(users[mask], n_user_codes),
               "items": _distinct(items[mask], n_item_codes), "label_rate": _rate(labels, mask)}
        for code, name in enumerate(SPLIT_NAMES)
        for mask in [codes == code]
    }
    test = codes == 2
    in_train = np.bincount(items[codes == 0], minlength=n_item_codes) > 0
    test_items = np.bincount(items[test], minlength=n_item_codes) > 0
    stats["cold_items_test"] = {
        "rows": float((~in_train[items[test]]).mean()) if test.any() else None,
        "items": float((test_items & ~in_train).sum() / test_items.sum()) if test.any() else None,
    }
    return stats


def split_statistics(
    splits: Mapping[str, pd.DataFrame],
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    label_col: str | None = None,
) -> dict[str, Any]:
    """`dataset_statistics` of already-split frames, e.g. {"train": ..., "test": ...}."""
    unknown = set(splits) - set(SPLIT_NAMES)
    if unknown:
        raise ValueError(f"split names must be among {SPLIT_NAMES}; got {sorted(unknown)}")
    columns = [c for c in (user_col, item_col, time_col, label_col) if c is not None]
    events = pd.concat([frame[columns] for frame in splits.values()], ignore_index=True)
    names = np.repeat(np.array(list(splits), dtype=object), [len(f) for f in splits.values()])
    return dataset_statistics(events, user_col=user_col, item_col=item_col, time_col=time_col,
                              label_col=label_col, split=names)
