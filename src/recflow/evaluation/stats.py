"""Dataset statistics for reports: size, density, per-user length, label rate, cold items.

Vectorised over columns (value counts per chunk), so the same code describes a handful
of click events, an impression log of millions of rows, or a split in parquet parts
that never fits in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from recflow.datasets.sharded import ParquetParts

SPLIT_NAMES = ("train", "valid", "test")
_CODES = {0: "train", 1: "valid", 2: "test", -1: "dropped"}
CHUNK_ROWS = 1_000_000  # rows of a sharded split read at a time
PAIR_MERGE_ROWS = 1_000_000  # pending (user, item) hashes that trigger a dedup merge


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


def _distribution(counts: np.ndarray) -> dict[str, float]:
    if counts.size == 0:
        return {}
    q = np.quantile(counts, [0.25, 0.5, 0.75, 0.95])
    return {"min": int(counts.min()), "p25": float(q[0]), "median": float(q[1]),
            "p75": float(q[2]), "p95": float(q[3]), "max": int(counts.max()),
            "mean": float(counts.mean())}


def _add_counts(total: pd.Series | None, values: pd.Series) -> pd.Series:
    counts = values.value_counts(sort=False)
    return counts if total is None else total.add(counts, fill_value=0).astype(np.int64)


class _Accumulator:
    """Counts per split (user and item value counts, rows, label sums, time range) and
    the distinct (user, item) pairs, added one chunk at a time.

    Memory is O(users + items + distinct pairs), never O(rows): a split read as parquet
    parts (`ParquetParts.iter_frames`) is described without ever being held whole.
    Pairs are kept as 64-bit hashes of (user, item), so `density` is exact unless two
    pairs collide (p < 1e-5 at 10^7 pairs).
    """

    def __init__(self, user_col: str | None, item_col: str | None, time_col: str | None,
                 label_col: str | None) -> None:
        self.user_col, self.item_col = user_col, item_col
        self.time_col, self.label_col = time_col, label_col
        self.users: dict[int, pd.Series] = {}
        self.items: dict[int, pd.Series] = {}
        self.rows = dict.fromkeys(range(3), 0)
        self.label_sums = dict.fromkeys(range(3), 0.0)
        self.dropped = 0
        self.times: list[Any] = []
        self.pairs: list[np.ndarray] = []
        self.pair_rows = 0

    def add(self, events: pd.DataFrame, codes: np.ndarray) -> None:
        kept = codes != -1
        self.dropped += int((~kept).sum())
        events, codes = events[kept], codes[kept]
        for code in np.unique(codes).tolist():
            rows = events[codes == code]
            if self.user_col is not None:
                self.users[code] = _add_counts(self.users.get(code), rows[self.user_col])
            if self.item_col is not None:
                self.items[code] = _add_counts(self.items.get(code), rows[self.item_col])
            self.rows[code] += len(rows)
            if self.label_col is not None:
                self.label_sums[code] += float(rows[self.label_col].to_numpy(np.float64).sum())
        if self.time_col is not None and len(events):
            times = events[self.time_col].to_numpy()
            self.times += [times.min(), times.max()]
        if self.user_col is None or self.item_col is None:
            return  # density needs both keys
        pairs = pd.util.hash_pandas_object(events[[self.user_col, self.item_col]], index=False)
        self.pairs.append(np.unique(pairs.to_numpy()))
        self.pair_rows += len(self.pairs[-1])
        if len(self.pairs) > 1 and self.pair_rows > 2 * len(self.pairs[0]) + PAIR_MERGE_ROWS:
            self._merge_pairs()

    def _merge_pairs(self) -> None:
        self.pairs = [np.unique(np.concatenate(self.pairs))]
        self.pair_rows = len(self.pairs[0])

    def result(self, with_splits: bool) -> dict[str, Any]:
        if self.pairs:
            self._merge_pairs()
        per_user = pd.concat(self.users.values()).groupby(level=0).sum() \
            if self.users else pd.Series(dtype=np.int64)
        n_items = pd.concat([s.index.to_series() for s in self.items.values()]).nunique() \
            if self.items else 0
        n = sum(self.rows.values())
        n_users = len(per_user)
        pairs = len(self.pairs[0]) if self.pairs else 0
        labels = sum(self.label_sums.values())
        stats: dict[str, Any] = {  # None: the data has no such key
            "users": n_users if self.user_col is not None else None,
            "items": n_items if self.item_col is not None else None,
            "interactions": n,
            "dropped_rows": self.dropped,
            "density": pairs / (n_users * n_items) if n_users and n_items else None,
            "sequence_length": _distribution(per_user.to_numpy()),
            "label_rate": labels / n if self.label_col is not None and n else None,
        }
        if self.times:
            low, high = min(self.times), max(self.times)
            plain = np.issubdtype(np.asarray(low).dtype, np.number)  # datetimes: ISO strings
            stats["time_range"] = [low.item(), high.item()] if plain else [str(low), str(high)]
        if not with_splits:
            stats["cold_items_test"] = None
            return stats
        stats["splits"] = {
            name: {"interactions": self.rows[code],
                   "users": len(self.users.get(code, ())) if self.user_col else None,
                   "items": len(self.items.get(code, ())) if self.item_col else None,
                   "label_rate": self.label_sums[code] / self.rows[code]
                   if self.label_col is not None and self.rows[code] else None}
            for code, name in enumerate(SPLIT_NAMES)
        }
        test = self.items.get(2)
        if test is None or not len(test):
            stats["cold_items_test"] = {"rows": None, "items": None}
            return stats
        train = self.items.get(0, pd.Series(dtype=np.int64))
        cold = ~test.index.isin(train.index)
        stats["cold_items_test"] = {"rows": float(test[cold].sum() / test.sum()),
                                    "items": float(cold.mean())}
        return stats


def dataset_statistics(
    events: pd.DataFrame,
    *,
    user_col: str | None = "user_id",
    item_col: str | None = "item_id",
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
    acc = _Accumulator(user_col, item_col, time_col, label_col)
    acc.add(events, _split_codes(events, split))
    return acc.result(with_splits=split is not None)


def key_columns(frame: pd.DataFrame | ParquetParts) -> dict[str, str | None]:
    """`split_statistics` column arguments for the keys a model input has (roles vary by
    dataset: a CTR log may have no user, item or time)."""
    have = set(frame.columns)
    return {"user_col": "key_user" if "key_user" in have else None,
            "item_col": "key_item" if "key_item" in have else None,
            "time_col": "key_timestamp" if "key_timestamp" in have else None,
            "label_col": "label_click" if "label_click" in have else None}


def split_statistics(
    splits: Mapping[str, pd.DataFrame | ParquetParts],
    *,
    user_col: str | None = "user_id",
    item_col: str | None = "item_id",
    time_col: str | None = "timestamp",
    label_col: str | None = None,
) -> dict[str, Any]:
    """`dataset_statistics` of already-split frames, e.g. {"train": ..., "test": ...}.

    A split given as `ParquetParts` is read chunk by chunk, only these columns.
    """
    unknown = set(splits) - set(SPLIT_NAMES)
    if unknown:
        raise ValueError(f"split names must be among {SPLIT_NAMES}; got {sorted(unknown)}")
    columns = [c for c in (user_col, item_col, time_col, label_col) if c is not None]
    acc = _Accumulator(user_col, item_col, time_col, label_col)
    for name, split in splits.items():
        chunks = split.iter_frames(columns, rows=CHUNK_ROWS) \
            if isinstance(split, ParquetParts) else [split[columns]]
        for chunk in chunks:
            acc.add(chunk, np.full(len(chunk), SPLIT_NAMES.index(name), dtype=np.int8))
    return acc.result(with_splits=True)
