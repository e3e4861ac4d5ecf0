"""Out-of-core preprocessing over a directory of time-ordered parquet shards.

The in-memory pipeline holds the whole joined log; at 50M+ impressions that no
longer fits. Here every pass holds one shard plus state whose size does not grow
with the number of rows:

* pass 0 (`shard_cutoffs`): the timestamp column only; shard sizes and the exact
  order statistics the global temporal split needs;
* pass 1 (`fit_spec_streaming`): train shards only; vocabulary counts, moments
  and value counts are merged across shards, then fitted exactly like
  `FeatureSpec.fit` (same selection code, so byte-identical vocabularies);
* pass 2 (`transform_shards`): each shard through the same `transform_frame`,
  with each user's last `length` behaviours carried from shard to shard so
  histories equal the ones `build_histories` makes from the whole log.

Parity with the in-memory path on the same data (tests/unit/features/test_out_of_core.py):
vocabularies, quantile edges (while a column has at most `quantile_max_distinct`
distinct values), split cut-offs, every integer output and every float output
are identical; the standardize `mean`/`std` come from merged per-shard moments,
so they agree with numpy's pairwise sums to ~1e-15 relative, not bit for bit.
Above `quantile_max_distinct`, value counts degrade to a mergeable sketch that
drops low mantissa bits (relative edge error below 2**-(52 - dropped bits)).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from recflow.features.config import FeaturesConfig
from recflow.features.sequences import build_histories
from recflow.features.spec import FeatureSpec, FieldSpec, build_transform
from recflow.features.split import split_masks
from recflow.features.transforms import PAD, QuantileBucket, Standardize

logger = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
STREAMABLE = frozenset({"vocab", "standardize", "quantile_bucket", "hash_cross", "sequence"})
Loader = Callable[[], pd.DataFrame]
Joiner = Callable[[pd.DataFrame], pd.DataFrame]


# ---- exact order statistics without holding the column ---------------------------------
def quantile_index_higher(n: int, q: float) -> int:
    """The position `np.quantile(x, q, method="higher")` reads in sorted `x` of length n."""
    return min(int(np.ceil((n - 1) * np.asarray([q], dtype=np.float64))[0]), n - 1)


def quantiles_from_counts(values: np.ndarray, counts: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """`np.quantile(x, qs)` (method "linear") of the sample given as sorted distinct values.

    Same virtual index, neighbours and lerp as numpy, so the result is bit-identical
    to expanding the counts and calling numpy (asserted in the tests).
    """
    qs = np.asarray(qs, dtype=np.float64)
    n = int(counts.sum())
    virtual = (n - 1) * qs
    previous = np.floor(virtual)
    nxt = previous + 1
    previous_i = np.clip(previous, 0, n - 1).astype(np.int64)
    next_i = np.clip(nxt, 0, n - 1).astype(np.int64)
    above = virtual >= n - 1
    previous_i[above] = next_i[above] = n - 1
    ends = np.cumsum(counts)  # value i covers sorted positions [ends[i-1], ends[i])
    a = values[np.searchsorted(ends, previous_i, side="right")]
    b = values[np.searchsorted(ends, next_i, side="right")]
    gamma = virtual - previous
    diff = b - a
    out = a + diff * gamma
    late = gamma >= 0.5
    out[late] = (b - diff * (1 - gamma))[late]
    return out


class ValueCounts:
    """Mergeable exact counts of a float column; a bounded sketch past `max_distinct`.

    Past the bound, low mantissa bits are cleared (8 more each time) and equal
    truncated values merged, so memory stays O(max_distinct) whatever the data.
    """

    def __init__(self, max_distinct: int = 1_000_000) -> None:
        self.max_distinct = max_distinct
        self.dropped_bits = 0
        self._merged = pd.Series(dtype=np.int64)
        self._pending: list[pd.Series] = []
        self._pending_size = 0

    def add(self, x: np.ndarray) -> None:
        x = self._truncate(np.asarray(x, dtype=np.float64))
        counts = pd.Series(x).value_counts(sort=False)
        self._pending.append(counts)
        self._pending_size += len(counts)
        if self._pending_size > self.max_distinct:
            self._compact()

    def _truncate(self, x: np.ndarray) -> np.ndarray:
        if not self.dropped_bits:
            return x
        mask = np.int64(-1) << np.int64(self.dropped_bits)
        return (x.view(np.int64) & mask).view(np.float64)

    def _compact(self) -> None:
        parts = [self._merged, *self._pending] if len(self._merged) else self._pending
        self._merged = pd.concat(parts).groupby(level=0, sort=False).sum()
        self._pending, self._pending_size = [], 0
        while len(self._merged) > self.max_distinct and self.dropped_bits < 48:
            self.dropped_bits += 8
            index = self._truncate(self._merged.index.to_numpy(np.float64))
            self._merged = self._merged.groupby(index, sort=False).sum()
            logger.warning("quantile counts exceed %d distinct values: keeping %d mantissa "
                           "bits (approximate edges)", self.max_distinct, 52 - self.dropped_bits)

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct values ascending, their counts)."""
        if self._pending:
            self._compact()
        merged = self._merged.sort_index()
        return merged.index.to_numpy(np.float64), merged.to_numpy(np.int64)


# ---- pass 0: the temporal split ---------------------------------------------------------
def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


def shard_cutoffs(
    timestamps: Mapping[str, Loader], config: FeaturesConfig, column: str = "timestamp",
    to_seconds: Callable[[pd.Series], np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(split cut-offs as `split_by_time` gives them, per-shard row counts and time bounds).

    `timestamps` maps shard name -> loader of (at least) the time column `column`, read
    as epoch seconds by `to_seconds` (the declaration's format; default: already int);
    shards, in name order, must cover disjoint, increasing time ranges, which is
    what lets pass 2 carry histories forward and the split read one shard.
    """
    split = config.split
    strategy = getattr(split, "strategy", "temporal")
    if strategy != "temporal":
        raise ValueError(
            f"preprocessing.split.strategy '{strategy}' is not supported by streaming "
            f"preprocessing (it needs the whole log); use strategy 'temporal' or the "
            f"in-memory `preprocessing` pipeline"
        )
    names = sorted(timestamps)
    if not names:
        raise ValueError("raw_interaction_shards: no parquet shards found")
    stats: list[dict[str, Any]] = []
    for name in names:
        ts = _timestamps(timestamps[name], name, column, to_seconds)
        if not len(ts):
            continue
        stats.append({"shard": name, "rows": int(len(ts)),
                      "min": int(ts.min()), "max": int(ts.max())})
        if len(stats) > 1 and stats[-2]["max"] >= stats[-1]["min"]:
            raise ValueError(
                f"raw_interaction_shards: shard '{name}' starts at {stats[-1]['min']} but "
                f"'{stats[-2]['shard']}' ends at {stats[-2]['max']}; shards must hold "
                f"disjoint time ranges in name order (write them with "
                f"recflow.datasets.synthetic.write_shards or sort the log and split on timestamp changes)"
            )
    if not stats:
        raise ValueError("raw_interaction_shards: every shard is empty")
    n = sum(s["rows"] for s in stats)
    starts = np.cumsum([0] + [s["rows"] for s in stats])

    def order_statistic(k: int) -> int:
        i = int(np.searchsorted(starts, k, side="right")) - 1
        ts = _timestamps(timestamps[stats[i]["shard"]], stats[i]["shard"], column, to_seconds)
        return int(np.partition(ts, k - starts[i])[k - starts[i]])

    train_end = order_statistic(quantile_index_higher(n, split.valid_start))
    valid_end = order_statistic(quantile_index_higher(n, split.test_start))
    # the record names the canonical column the cut-offs apply to, as `split_by_time` does
    cutoffs = cutoff_record(split, stats[0]["min"], stats[-1]["max"], train_end, valid_end,
                            "timestamp" if to_seconds is not None else column)
    rows = dict.fromkeys(SPLITS, 0)
    for s in stats:
        if s["max"] < train_end:
            rows["train"] += s["rows"]
        elif s["min"] >= valid_end:
            rows["test"] += s["rows"]
        elif train_end <= s["min"] and s["max"] < valid_end:
            rows["valid"] += s["rows"]
        else:  # straddles a cut-off: count this shard's rows
            ts = pd.Series(_timestamps(timestamps[s["shard"]], s["shard"], column, to_seconds))
            for split_name, mask in split_masks(ts, cutoffs).items():
                rows[split_name] += int(mask.sum())
    cutoffs["rows"] = rows
    logger.info("temporal split over %d shard(s) %s", len(stats), cutoffs)
    return cutoffs, {"rows": n, "shards": stats}


def cutoff_record(split: Any, t_min: int, t_max: int, train_end: int, valid_end: int,
                  column: str) -> dict[str, Any]:
    """The `split_cutoffs` record of a temporal split, as `split_record` builds it."""
    if not (t_min < train_end < valid_end <= t_max):
        raise ValueError(
            "temporal split is degenerate: timestamps span "
            f"[{t_min}, {t_max}] but cut-offs are train_end={train_end}, "
            f"valid_end={valid_end}; the data needs more distinct timestamps"
        )
    record: dict[str, Any] = split.parameters() if hasattr(split, "parameters") else {}
    return record | {
        "train_end": train_end, "valid_end": valid_end,
        "train_end_iso": _iso(train_end), "valid_end_iso": _iso(valid_end), "column": column,
    }


def _timestamps(load: Loader, name: str, column: str,
                to_seconds: Callable[[pd.Series], np.ndarray] | None = None) -> np.ndarray:
    frame = load()
    if column not in frame:
        raise KeyError(f"raw_interaction_shards['{name}'] has no column '{column}'; "
                       f"got {list(frame.columns)}")
    if to_seconds is not None:
        return np.asarray(to_seconds(frame[column]), dtype=np.int64)
    return frame[column].to_numpy(np.int64)


def _shards_in(stats: dict[str, Any], lo: int | None, hi: int | None) -> list[str]:
    """Shards with rows in [lo, hi)."""
    return [s["shard"] for s in stats["shards"]
            if (hi is None or s["min"] < hi) and (lo is None or s["max"] >= lo)]


# ---- pass 1: fit ----------------------------------------------------------------------
@dataclass
class _Moments:
    """Count, mean and M2 merged across shards (Chan et al.), all float64."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: np.ndarray) -> None:
        x = x[np.isfinite(x)]
        if not x.size:
            return
        n_b, mean_b = x.size, float(np.mean(x))
        m2_b = float(np.sum((x - mean_b) ** 2))
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n


@dataclass
class _FitState:
    vocab_counts: dict[str, list[pd.Series]] = field(default_factory=dict)
    moments: dict[str, _Moments] = field(default_factory=dict)
    quantiles: dict[str, ValueCounts] = field(default_factory=dict)


def _merge_counts(parts: list[pd.Series]) -> pd.Series:
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.Series(dtype=np.int64)
    return pd.concat(parts).groupby(level=0, sort=False).sum() if len(parts) > 1 else parts[0]


def fit_spec_streaming(
    shards: Mapping[str, Loader],
    join: Joiner,
    cutoffs: dict[str, Any],
    shard_stats: dict[str, Any],
    config: FeaturesConfig,
    *,
    quantile_max_distinct: int = 1_000_000,
    check_columns: Callable[[pd.DataFrame], None] | None = None,
) -> dict[str, Any]:
    """The feature spec JSON `fit_feature_spec` would give on the concatenated shards.

    `join` turns one raw shard into joined, time-sorted events (the in-memory
    `join_events` with users and items bound); only shards with train rows are read.
    """
    unsupported = [f"{name} ({cfg.transform})" for name, cfg in config.fields.items()
                   if cfg.transform not in STREAMABLE]
    if unsupported:
        raise ValueError(
            f"preprocessing.fields: {unsupported} cannot be fitted by streaming "
            f"preprocessing yet (supported transforms: {sorted(STREAMABLE)})"
        )
    spec = FeatureSpec.from_config(config)
    state = _FitState()
    fitted = [f for f in spec.fields if f.kind != "sequence" and f.transform != "hash_cross"]
    for name in _shards_in(shard_stats, None, cutoffs["train_end"]):
        events = join(shards[name]())
        if check_columns is not None:
            check_columns(events)
            check_columns = None  # the joined columns are the same for every shard
        train = events.loc[split_masks(events["timestamp"], cutoffs)["train"]]
        for f in fitted:
            _accumulate(f, train[f.columns[0]], state, quantile_max_distinct)
        logger.info("fit pass: shard %s (%d train rows)", name, len(train))
    for f in spec.fields:
        if f.kind == "sequence":
            continue
        transform = build_transform(f)
        if f.transform == "vocab":
            transform.fit_counts(_merge_counts(state.vocab_counts.get(f.name, [])))
        elif f.transform == "standardize":
            _fit_standardize(transform, state.moments.get(f.name, _Moments()))
        elif f.transform == "quantile_bucket":
            _fit_quantiles(transform, state.quantiles.get(f.name))
        spec.record_fit(f, transform)
    spec.link_sequence_vocabs()
    spec.split = {k: v for k, v in cutoffs.items() if k != "rows"}
    spec.rows = dict(cutoffs["rows"])
    return spec.to_dict()


def _accumulate(f: FieldSpec, column: pd.Series, state: _FitState, max_distinct: int) -> None:
    if f.transform == "vocab":
        counts = column.dropna().value_counts(sort=False)
        parts = state.vocab_counts.setdefault(f.name, [])
        parts.append(counts)
        if sum(len(p) for p in parts) > 4 * max(len(counts), 1):  # keep merged, bounded
            state.vocab_counts[f.name] = [_merge_counts(parts)]
    elif f.transform == "standardize":
        x = build_transform(f).prepare(column)
        state.moments.setdefault(f.name, _Moments()).add(x)
    elif f.transform == "quantile_bucket":
        x = build_transform(f).prepare(column)
        state.quantiles.setdefault(f.name, ValueCounts(max_distinct)).add(x[np.isfinite(x)])


def _fit_standardize(t: Standardize, m: _Moments) -> None:
    t.mean = float(m.mean) if m.n else 0.0
    std = math.sqrt(m.m2 / m.n) if m.n else 1.0
    t.std = std if std > 1e-12 else 1.0


def _fit_quantiles(t: QuantileBucket, counts: ValueCounts | None) -> None:
    values, n = (counts.sorted() if counts is not None
                 else (np.empty(0), np.empty(0, dtype=np.int64)))
    if not n.sum():
        t.edges = []
        return
    qs = np.linspace(0, 1, t.num_buckets + 1)[1:-1]
    t.edges = np.unique(quantiles_from_counts(values, n, qs)).tolist()


# ---- pass 2: transform ----------------------------------------------------------------
def _tail_per_user(log: pd.DataFrame, length: int) -> pd.DataFrame:
    """Each user's last `length` rows of a time-ordered log (order kept within a user)."""
    users = log["user_id"].to_numpy()
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    new_group = np.r_[True, sorted_users[1:] != sorted_users[:-1]]
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, sizes)
    group_size = np.repeat(sizes, sizes)
    keep = order[rank >= group_size - length]
    return log.iloc[keep].reset_index(drop=True)


def transform_shard(
    events: pd.DataFrame, spec: FeatureSpec, history: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """One joined, time-sorted shard -> model-input rows per split; advances `history`.

    `history[field]` holds each user's last `length` behaviours (user_id,
    timestamp, vocabulary id) from earlier shards; histories are built from it
    plus this shard's behaviours, so they match `build_histories` on the whole log.
    """
    history_ids: dict[str, np.ndarray] = {}
    for f in spec.by_kind("sequence"):
        behaved = events[f.params["event"]].to_numpy() == 1
        ids = spec.index_history_source(f.name, events.loc[behaved])
        new = pd.DataFrame({
            "user_id": events["user_id"].to_numpy()[behaved],
            "timestamp": events["timestamp"].to_numpy(np.int64)[behaved],
            "item_id": ids,
        })
        carried = history.get(f.name)
        log = new if carried is None else pd.concat([carried, new], ignore_index=True)
        history_ids[f.name] = build_histories(
            log.assign(click=1), f.length, queries=events, pad=PAD)
        history[f.name] = _tail_per_user(log, f.length)
    rows = spec.model_input(events, history_ids=history_ids)
    masks = split_masks(events["timestamp"], spec.split)
    return {name: rows.loc[mask].reset_index(drop=True) for name, mask in masks.items()}


def transform_shards(
    shards: Mapping[str, Loader], join: Joiner, feature_spec: dict[str, Any]
) -> Iterator[dict[str, pd.DataFrame]]:
    """Model-input rows per split, one shard at a time, in shard (= time) order."""
    spec = FeatureSpec.from_dict(feature_spec)
    history: dict[str, pd.DataFrame] = {}
    previous_max: int | None = None
    for name in sorted(shards):
        events = join(shards[name]())
        if not len(events):
            continue
        first = int(events["timestamp"].iloc[0])
        if previous_max is not None and first <= previous_max:
            raise ValueError(
                f"raw_interaction_shards: shard '{name}' starts at {first}, not after the "
                f"previous shard's last timestamp {previous_max}; shards must be time-ordered"
            )
        previous_max = int(events["timestamp"].iloc[-1])
        out = transform_shard(events, spec, history)
        logger.info("transform pass: shard %s -> %s", name,
                    {k: len(v) for k, v in out.items()})
        yield out
