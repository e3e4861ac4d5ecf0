"""The fitted transforms compiled into plain lookups, for requests given as lists of records.

One record spends about 0.1 ms in an exported graph; building a DataFrame and running
the vectorised `FeatureSpec.transform_frame` on it costs a hundred times that. Here each
input becomes a dict (vocabularies, semantic prefixes), the fitted numpy transform on a
float64 array (standardisation, buckets) or a hash over joined text (crosses): the same
fitted state and the same rules (`id_key` is `align_ids` for one value), without pandas
frames. Large batches keep the vectorised path; tests pin the two equal on a whole split.

    inputs = CompiledInputs(spec, input_schema, aliases={})
    feeds = inputs.feeds({"item_id": [12], "price": [9.5], ...}, {"price": np.array([9.5])})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from recflow.features import FeatureSpec
from recflow.features.spec import FieldSpec
from recflow.features.transforms import N_RESERVED, OOV, PAD, canonical_text, id_key, numeric_key
from recflow.serving.validate import is_null

#: columns (raw key -> values) and the numeric keys as validated float64 arrays
Columns = Mapping[str, list[Any]]
Numbers = Mapping[str, np.ndarray]
Op = Callable[[Columns, Numbers], np.ndarray]


class IdLookup:
    """One fitted id table as a dict: raw id -> index, OOV when unknown, PAD when missing."""

    def __init__(self, keys: list[Any], ids: list[int]) -> None:
        self.key = id_key(pd.Index(keys))
        self.table = dict(zip(keys, ids, strict=True))
        # the type that needs no key function (and is never null) on this table
        self.plain = int if self.key is numeric_key else str if self.key is canonical_text \
            else None

    def __call__(self, value: Any) -> int:
        if value is None or (type(value) is not str and is_null(value)):
            return PAD
        return self.table.get(self.key(value), OOV)

    def many(self, values: list[Any]) -> list[int]:
        """`[self(v) for v in values]`, with the common id type looked up directly."""
        get, plain = self.table.get, self.plain
        return [get(v, OOV) if type(v) is plain else self(v) for v in values]


def id_lookup(spec: FeatureSpec, f: FieldSpec) -> IdLookup:
    """The dict behind a vocabulary or semantic-prefix field."""
    state = spec.fitted(f).state()
    if f.transform == "semantic_prefix":
        return IdLookup(state["items"], state["ids"])
    values = state["values"]
    return IdLookup(values, list(range(N_RESERVED, N_RESERVED + len(values))))


class CompiledInputs:
    """The graph's feeds from validated columns, one small op per input."""

    def __init__(self, spec: FeatureSpec, schema: list[dict[str, Any]],
                 aliases: Mapping[str, str]) -> None:
        def raw(column: str) -> str:
            return aliases.get(column, column)

        self.ops: dict[str, Op] = {e["name"]: _compile(spec, spec[e["name"]], raw)
                                   for e in schema}

    def feeds(self, columns: Columns, numbers: Numbers) -> dict[str, np.ndarray]:
        return {name: op(columns, numbers) for name, op in self.ops.items()}


def _compile(spec: FeatureSpec, f: FieldSpec, raw: Callable[[str], str]) -> Op:
    if f.kind == "sequence":
        return _sequence(id_lookup(spec, spec[f.shares_vocab_with]), f.name, f.length)
    if f.transform in ("vocab", "semantic_prefix"):
        lookup, column = id_lookup(spec, f), raw(f.columns[0])
        return lambda cols, nums: np.array(lookup.many(cols[column]), dtype=np.int64)
    if f.transform in ("standardize", "quantile_bucket"):
        return _numeric(spec.fitted(f), raw(f.columns[0]))
    if f.transform == "hash_cross":
        return _hash_cross(spec.fitted(f).num_buckets, [raw(c) for c in f.columns])
    raise ValueError(f"field '{f.name}': no compiled form for transform '{f.transform}'")


def _sequence(lookup: IdLookup, column: str, length: int) -> Op:
    """Raw histories (oldest first) -> (n, length) ids, the most recent `length` kept, left-padded."""
    def op(cols: Columns, nums: Numbers) -> np.ndarray:
        histories = cols[column]
        out = np.zeros((len(histories), length), dtype=np.int64)  # PAD == 0
        for row, history in zip(out, histories, strict=True):
            if not isinstance(history, list | tuple | np.ndarray):  # null: an empty history
                continue
            tail = list(history)[-length:] if length else []
            if tail:
                row[length - len(tail):] = lookup.many(tail)
        return out

    return op


def _numeric(transform: Any, column: str) -> Op:
    """The fitted numpy transform; one value at a time through a cache of its results.

    A served row is one number: eight numpy calls on a 1-element array cost ~15 us, a
    cache hit ~1 us, and prices, counts and ages repeat. The cached value *is* the
    numpy result for that number, so both routes stay bit-identical.
    """
    @lru_cache(maxsize=2**16)
    def one(x: float) -> Any:
        return transform.transform(np.array([x]))[0]

    def op(cols: Columns, nums: Numbers) -> np.ndarray:
        x = nums[column]
        if len(x) == 1 and x[0] == x[0]:  # one number, not NaN (NaN is never a cache hit)
            return np.array([one(float(x[0]))])
        return transform.transform(x)

    return op


def _hash_cross(num_buckets: int, columns: list[str]) -> Op:
    """`HashCross.transform` on object columns: text joined by \x1f, missing if any part is."""
    def op(cols: Columns, nums: Numbers) -> np.ndarray:
        hashed = [_MISSING_HASH if any(is_null(v) for v in row)
                  else _hash_text("\x1f".join(map(str, row)))
                  for row in zip(*(cols[c] for c in columns), strict=True)]
        # uint64 % buckets + 1, in Python ints: exact, and cheaper than numpy for a few rows
        return np.array([h % num_buckets + 1 for h in hashed], dtype=np.int64)

    return op


#: `pd.util.hash_array` marks a missing key with the largest uint64
_MISSING_HASH = int(np.iinfo(np.uint64).max)


@lru_cache(maxsize=2**16)
def _hash_text(key: str) -> int:
    """pandas' hash of one key (as `hash_array` gives it), cached: crosses repeat a lot.

    `categorize=False` gives the same hash without a factorize that costs 0.3 ms per call.
    """
    return int(pd.util.hash_array(np.array([key], dtype=object), categorize=False)[0])
