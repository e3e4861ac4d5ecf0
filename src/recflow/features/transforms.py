"""Fitted, vectorised feature transforms.

Plain numpy/pandas only (no torch, no Kedro): the production scorer imports
this module in slim images, so training and serving run the same code.
Index conventions for every categorical output: 0 = missing/padding, 1 = OOV
(unseen or too rare in train), 2.. = known values; a vocabulary with ``missing:
token`` gives missing values the id after its last value instead of 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, ClassVar

import numpy as np
import pandas as pd

PAD, OOV = 0, 1
N_RESERVED = 2


@dataclass
class Vocabulary:
    """Value -> index map fitted on train, most frequent first (ties by value)."""

    min_count: int = 1
    max_size: int | None = None
    missing: str = "pad"  # "token": missing values get their own id (`missing_id`)
    values: list[Any] = field(default_factory=list)
    kind: ClassVar[str] = "categorical"

    def fit(self, column: pd.Series) -> Vocabulary:
        if isinstance(column.dtype, pd.CategoricalDtype):
            # count the codes: no hashing of values (categories are distinct, never NaN)
            codes = column.cat.codes.to_numpy()
            categories = column.cat.categories
            counts = np.bincount(codes[codes >= 0], minlength=len(categories))
            return self.fit_counts(pd.Series(counts, index=pd.Index(categories)))
        # arrow-backed strings count in pyarrow (no copy); the same counts as dropna() first
        return self.fit_counts(column.value_counts(sort=False, dropna=True))

    def fit_counts(self, counts: pd.Series) -> Vocabulary:
        """Fit from value -> count (streaming and Spark merge counts, then call this)."""
        n = counts.to_numpy()
        keep = n >= self.min_count  # filtered in numpy: no hash table over every value
        frame = pd.DataFrame({"value": counts.index[keep], "count": n[keep]})
        frame = frame.sort_values(["count", "value"], ascending=[False, True], kind="stable")
        if self.max_size is not None:
            frame = frame.head(self.max_size)
        self.values = frame["value"].tolist()
        self._index = self._arrow_sets = None
        return self

    @property
    def size(self) -> int:
        return len(self.values) + N_RESERVED + (self.missing == "token")

    @property
    def missing_id(self) -> int:
        """The id of a missing value: PAD, or with ``missing: token`` the last id."""
        return len(self.values) + N_RESERVED if self.missing == "token" else PAD

    def _lookup(self) -> pd.Index:
        if getattr(self, "_index", None) is None:
            self._index = pd.Index(self.values)
        return self._index

    def _arrow_value_set(self, arrow_type: Any) -> Any:
        """The values as a pyarrow array of `arrow_type`, built once per type."""
        import pyarrow as pa

        sets = getattr(self, "_arrow_sets", None)
        if sets is None:
            sets = self._arrow_sets = {}
        key = str(arrow_type)
        if key not in sets:
            sets[key] = pa.array(self.values, type=arrow_type)
        return sets[key]

    def transform(self, column: pd.Series | np.ndarray) -> np.ndarray:
        values = pd.Series(column) if not isinstance(column, pd.Series) else column
        if isinstance(values.dtype, pd.CategoricalDtype):
            # map each category once, then take by code (code -1 = missing)
            ids = self.transform(pd.Series(values.cat.categories))
            table = np.append(ids, np.int64(self.missing_id))
            return table[values.cat.codes.to_numpy()]
        index = self._lookup()
        strings = _arrow_strings(values)
        if strings is not None and index.inferred_type == "string":
            # exact string match, as get_indexer does, but in pyarrow on the column's own buffers
            import pyarrow.compute as pc

            found = pc.index_in(strings, value_set=self._arrow_value_set(strings.type))
            positions = found.fill_null(-1).to_numpy().astype(np.int64, copy=False)
            out = np.where(positions >= 0, positions + N_RESERVED, OOV)
            out[values.isna().to_numpy()] = self.missing_id
            return out
        missing = values.isna().to_numpy()
        out = np.full(len(values), OOV, dtype=np.int64)
        out[missing] = self.missing_id
        if len(index) and not missing.all():
            present = values[~missing] if missing.any() else values
            positions = index.get_indexer(align_ids(present, index))
            out[~missing] = np.where(positions >= 0, positions + N_RESERVED, OOV)
        return out

    def state(self) -> dict[str, Any]:
        return {"values": self.values}

    def load_state(self, state: dict[str, Any]) -> Vocabulary:
        self.values = list(state["values"])
        self._index = self._arrow_sets = None
        return self


def _arrow_strings(values: pd.Series) -> Any:
    """The pyarrow (chunked) array behind an arrow-backed string column, else None (no copy)."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype):
        arrow = dtype.storage == "pyarrow"
    elif isinstance(dtype, pd.ArrowDtype):
        import pyarrow as pa

        arrow = pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(
            dtype.pyarrow_dtype)
    else:
        arrow = False
    return values.array.__arrow_array__() if arrow else None


def canonical_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def align_ids(values: pd.Series, index: pd.Index) -> pd.Series | np.ndarray:
    """Cast non-missing `values` to the vocabulary's value type, exactly or not at all.

    Ids often change dtype between fit and use: an int column read back as
    float (3.0), ids sent as strings ("3") at serving, or an object matrix of
    ints (histories). Values that cannot be cast exactly simply do not match
    (-> OOV); they never silently map to another id (3.5 is not 3).
    """
    if values.dtype == index.dtype:
        return values
    if pd.api.types.is_numeric_dtype(index.dtype) and not pd.api.types.is_bool_dtype(index.dtype):
        return pd.to_numeric(values, errors="coerce").to_numpy()
    if index.inferred_type == "string":
        if pd.api.types.is_integer_dtype(values.dtype):
            return values.astype(str).to_numpy(dtype=object)
        return values.map(canonical_text).to_numpy(dtype=object)
    return values.to_numpy()


def id_key(index: pd.Index) -> Callable[[Any], Any]:
    """The scalar twin of `align_ids`: one raw id -> the key to look up among `index`'s values.

    Serving's per-record path maps ids through a dict instead of `get_indexer`; this
    keeps the two matching the same values (a test pins them on every value kind).
    """
    if pd.api.types.is_numeric_dtype(index.dtype) and not pd.api.types.is_bool_dtype(index.dtype):
        return numeric_key
    if index.inferred_type == "string":
        return canonical_text
    return _same


def numeric_key(value: Any) -> Any:
    """`pd.to_numeric(errors="coerce")` for one value: numbers as they are, numeric text parsed."""
    if isinstance(value, str):
        try:
            return float(value) if "_" not in value else None
        except ValueError:
            return None
    return value


def _same(value: Any) -> Any:
    return value


def _float64(column: pd.Series | np.ndarray) -> np.ndarray:
    """A numeric column as float64 (non-numbers -> NaN); float64 input is used without a copy."""
    if isinstance(column, pd.Series | np.ndarray) and column.dtype == np.float64:
        return np.asarray(column)
    return np.asarray(pd.to_numeric(pd.Series(column), errors="coerce"), dtype=np.float64)


@dataclass
class Standardize:
    """(x - mean) / std on train, optional log1p first; missing -> train mean."""

    log: bool = False
    clip: float | None = 5.0
    mean: float = 0.0
    std: float = 1.0
    kind: ClassVar[str] = "numeric"

    def prepare(self, column: pd.Series | np.ndarray) -> np.ndarray:
        """The column as float64 (non-numbers -> NaN), log1p-ed when `log`."""
        x = _float64(column)
        # np.maximum, not np.clip: the same values (NaN stays NaN), without clip's Python
        # wrapper, which costs more than the arithmetic on a served request's one row
        return np.log1p(np.maximum(x, 0.0)) if self.log else x

    def fit(self, column: pd.Series) -> Standardize:
        x = self.prepare(column)
        any_finite = bool(np.isfinite(x).any())
        self.mean = float(np.nanmean(x)) if any_finite else 0.0
        std = float(np.nanstd(x)) if any_finite else 1.0
        self.std = std if std > 1e-12 else 1.0
        return self

    def transform(self, column: pd.Series | np.ndarray) -> np.ndarray:
        x = self.prepare(column)
        # (x - mean) / std in place on one fresh array: the same float64 operations, fewer copies
        z = np.where(np.isfinite(x), x, self.mean)
        z -= self.mean
        z /= self.std
        if self.clip is not None:
            np.minimum(np.maximum(z, -self.clip, out=z), self.clip, out=z)
        return z.astype(np.float32)

    def state(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def load_state(self, state: dict[str, Any]) -> Standardize:
        self.mean, self.std = float(state["mean"]), float(state["std"])
        return self


@dataclass
class QuantileBucket:
    """Bucket id from train quantile edges; missing -> 0, so it embeds like a category."""

    num_buckets: int = 10
    log: bool = False
    edges: list[float] = field(default_factory=list)
    kind: ClassVar[str] = "categorical"

    def prepare(self, column: pd.Series | np.ndarray) -> np.ndarray:
        """The column as float64 (non-numbers -> NaN), log1p-ed when `log`."""
        x = _float64(column)
        return np.log1p(np.maximum(x, 0.0)) if self.log else x

    def fit(self, column: pd.Series) -> QuantileBucket:
        x = self.prepare(column)
        x = x[np.isfinite(x)]
        qs = np.linspace(0, 1, self.num_buckets + 1)[1:-1]
        self.edges = np.unique(np.quantile(x, qs)).tolist() if x.size else []
        return self

    @property
    def size(self) -> int:
        return len(self.edges) + 2  # missing slot + (edges + 1) buckets

    def transform(self, column: pd.Series | np.ndarray) -> np.ndarray:
        x = self.prepare(column)
        buckets = np.searchsorted(np.asarray(self.edges), x, side="right") + 1
        return np.where(np.isfinite(x), buckets, PAD).astype(np.int64)

    def state(self) -> dict[str, Any]:
        return {"edges": self.edges}

    def load_state(self, state: dict[str, Any]) -> QuantileBucket:
        self.edges = [float(e) for e in state["edges"]]
        return self


@dataclass
class HashCross:
    """Deterministic hash of several columns into `num_buckets` ids (no state to fit)."""

    columns: list[str] = field(default_factory=list)
    num_buckets: int = 10_000
    kind: ClassVar[str] = "categorical"

    @property
    def size(self) -> int:
        return self.num_buckets + 1

    def fit(self, frame: pd.DataFrame) -> HashCross:
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        key = _as_text(frame[self.columns[0]])
        for column in self.columns[1:]:
            key = key + "\x1f" + _as_text(frame[column])
        hashed = pd.util.hash_array(key.to_numpy(dtype=object))
        return (hashed % np.uint64(self.num_buckets)).astype(np.int64) + 1

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> HashCross:
        return self


def _as_text(column: pd.Series) -> pd.Series:
    """Column as text, with integral floats written as ints (3.0 -> "3", like 3 and "3")."""
    if not pd.api.types.is_float_dtype(column.dtype):
        return column.astype(str)
    x = column.to_numpy(np.float64, na_value=np.nan)
    integral = np.isfinite(x) & (np.floor(x) == x)
    text = column.astype(str).to_numpy(dtype=object)
    text[integral] = x[integral].astype(np.int64).astype(str)
    return pd.Series(text, index=column.index)


def pad_sequences(sequences: list[list[Any]] | pd.Series, length: int) -> np.ndarray:
    """Right-align ragged raw histories into an (n, length) object array, None-padded.

    Used by serving, where each record carries its own history; the most
    recent item is last, matching what preprocessing builds from the log.
    A missing history (None / NaN) is an empty one.
    """
    sequences = [[] if s is None or (np.ndim(s) == 0 and pd.isna(s)) else s for s in sequences]
    full_lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64)
    lengths = np.minimum(full_lengths, length)
    flat = np.empty(int(full_lengths.sum()), dtype=object)
    flat[:] = list(chain.from_iterable(sequences))
    out = np.full((len(lengths), length), None, dtype=object)
    if not len(lengths):
        return out
    ends = np.cumsum(full_lengths)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    # position within the kept tail of each sequence
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    src = np.repeat(ends - lengths, lengths) + offsets
    cols = np.repeat(length - lengths, lengths) + offsets
    out[rows, cols] = flat[src]
    return out
