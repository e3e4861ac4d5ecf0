"""Request validation: raw records checked against what the model was trained on.

Every refusal is a `RecordError` naming the record, the field and the rule, so
the HTTP layer can answer 422 without knowing any of it. The rules:

* a record is an object holding every field the model reads (extra keys are ignored);
* ids are strings or integers (an integral float counts), histories lists of ids,
  numbers are numbers; booleans are none of these;
* `null` and NaN mean *missing*: ids -> the padding id, numbers -> the fitted default
  (the train mean), as in preprocessing;
* ±Infinity and numbers beyond float64's range are refused: training refused them
  at the raw boundary, so the model never saw them;
* numbers outside the bounds the dataset declaration gave (`gt: 0` on a price, say)
  are refused naming the bound: the training schema forbade them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd

TYPE_HELP = {
    "numeric": "a number or null",
    "categorical": "a string or integer id, or null",
    "sequence": "a list of string or integer ids (oldest first), or null",
}
_BOUNDS = {"ge": (np.less, ">="), "gt": (np.less_equal, ">"),
           "le": (np.greater, "<="), "lt": (np.greater_equal, "<")}


class RecordError(ValueError):
    """A malformed request: a missing key or a value of the wrong type, named precisely."""

    def __init__(self, message: str, field: str | None = None, record: int | None = None) -> None:
        super().__init__(message)
        self.field, self.record = field, record


def record_columns(records: Any, columns: list[str]) -> dict[str, list[Any]]:
    """A list of records (or one record) -> field -> its values, in record order."""
    if isinstance(records, Mapping):
        records = [records]
    if not isinstance(records, Iterable) or isinstance(records, str | bytes):
        raise RecordError("records must be a list of objects (field -> value) "
                          f"or a DataFrame, got {type(records).__name__}")
    records = records if isinstance(records, list) else list(records)
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise RecordError(f"record {i} must be an object (field -> value), got "
                              f"{type(record).__name__}", record=i)
        if len(record) < len(columns) or not all(c in record for c in columns):
            missing = next(c for c in columns if c not in record)
            raise RecordError(f"record {i}: missing field '{missing}' (the model needs "
                              f"{columns})", field=missing, record=i)
    return {c: [r[c] for r in records] for c in columns}


def frame_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The fields the model reads from a DataFrame of records, renumbered from 0."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RecordError(f"missing field(s) {missing}; the model needs {columns}",
                          field=missing[0])
    return frame[columns].reset_index(drop=True)


def check_column(values: Sequence[Any] | pd.Series, column: str, kind: str) -> None:
    """Types of one field's values, and for ids their 64-bit range; RecordError if not.

    Plain JSON values (str / int / float / null, lists of them) pass with one set lookup
    each; anything else takes the slow path that names the first offender.
    """
    if not isinstance(values, pd.Series) and _plain_json(values, kind):
        return
    check_types(values, column, kind)
    if kind != "numeric":
        check_id_range(values, column, kind)


def check_types(values: Sequence[Any] | pd.Series, column: str, kind: str) -> None:
    """Raise RecordError naming the field and record of the first wrongly typed value."""
    if isinstance(values, pd.Series):
        if _typed_column_ok(values.dtype, kind):
            return
        values = values.to_numpy(dtype=object)
    ok = _CHECKS[kind]
    if _all_types_ok(values, ok) and (kind != "sequence" or _all_types_ok(
            chain.from_iterable(v for v in values if isinstance(v, list | tuple | np.ndarray)),
            _id_type)):
        return
    for i, value in enumerate(values):  # slow path: find and name the first offender
        if is_null(value):
            continue
        if not ok(type(value)):
            raise RecordError(f"record {i}: field '{column}' must be {TYPE_HELP[kind]}, got "
                              f"{type(value).__name__} {_short(value)}", field=column, record=i)
        if kind == "sequence":
            for item in value:
                if not (is_null(item) or _id_type(type(item))):
                    raise RecordError(
                        f"record {i}: field '{column}' must be {TYPE_HELP[kind]}; it holds "
                        f"{type(item).__name__} {_short(item)}", field=column, record=i)


def numeric_values(values: Sequence[Any] | pd.Series, column: str,
                   bounds: Mapping[str, float] | None = None) -> np.ndarray:
    """A numeric field's values as float64 (missing -> NaN), refusing ±inf, overflow, bounds.

    Call after `check_types`: every value is then a real number or missing.
    """
    if isinstance(values, pd.Series) and pd.api.types.is_numeric_dtype(values.dtype):
        x = values.to_numpy(np.float64, na_value=np.nan)
    else:
        items = values.to_numpy(dtype=object) if isinstance(values, pd.Series) else values
        try:
            x = np.array([np.nan if v is None or v is pd.NA else v for v in items],
                         dtype=np.float64)
        except OverflowError:
            i, value = next((i, v) for i, v in enumerate(items)
                            if isinstance(v, numbers.Integral) and not _fits_float(v))
            raise RecordError(f"record {i}: field '{column}' holds {_short(value)}, beyond the "
                              "range of a float64", field=column, record=i) from None
    infinite = np.isinf(x)
    if infinite.any():
        i = int(np.argmax(infinite))
        raise RecordError(f"record {i}: field '{column}' must be finite (null means missing), "
                          f"got {x[i]}", field=column, record=i)
    for key, limit in (bounds or {}).items():
        breaks, sign = _BOUNDS[key]
        bad = breaks(x, limit)  # NaN compares False: missing values pass
        if bad.any():
            i = int(np.argmax(bad))
            raise RecordError(f"record {i}: field '{column}' must be {sign} {limit:g} (the "
                              f"dataset declares `{key}: {limit:g}`), got {x[i]:g}",
                              field=column, record=i)
    return x


def check_id_range(values: Sequence[Any] | pd.Series, column: str, kind: str) -> None:
    """Integer ids beyond 64 bits cannot be a trained id of any dtype: refuse them by name."""
    if isinstance(values, pd.Series):
        if values.dtype != object:
            return
        values = values.to_numpy(dtype=object)
    flat = chain.from_iterable(v for v in values if isinstance(v, list | tuple | np.ndarray)) \
        if kind == "sequence" else values
    if all(not isinstance(v, int) or _fits_id(v) for v in flat):
        return
    for i, value in enumerate(values):
        items = value if kind == "sequence" and isinstance(value, list | tuple) else [value]
        for v in items:
            if isinstance(v, int) and not _fits_id(v):
                raise RecordError(f"record {i}: field '{column}' holds the id {_short(v)}, "
                                  "beyond 64-bit integers", field=column, record=i)


def _fits_id(value: int) -> bool:
    """Whether an integer id fits 64 bits, signed or unsigned (any id column's dtype)."""
    return -(2**63) <= value < 2**64


def is_null(value: Any) -> bool:
    return value is None or value is pd.NA or (
        isinstance(value, float | np.floating) and math.isnan(value))


# ---- type predicates ------------------------------------------------------------------------
def _id_type(t: type) -> bool:
    return issubclass(t, str | numbers.Integral | float | np.floating) and not issubclass(
        t, bool | np.bool_)


def _number_type(t: type) -> bool:
    return issubclass(t, numbers.Real) and not issubclass(t, bool | np.bool_)


_NULL_TYPES = (type(None), type(pd.NA))
_CHECKS = {"numeric": _number_type, "categorical": _id_type,
           "sequence": lambda t: issubclass(t, list | tuple | np.ndarray)}


def _typed_column_ok(dtype: Any, kind: str) -> bool:
    if kind == "numeric":
        return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    if kind == "categorical":
        return (isinstance(dtype, pd.StringDtype) or pd.api.types.is_integer_dtype(dtype)
                or pd.api.types.is_float_dtype(dtype))
    return False


_PLAIN = {"numeric": frozenset({int, float, type(None)}),
          "categorical": frozenset({str, int, float, type(None)})}


def _plain_json(values: Sequence[Any], kind: str) -> bool:
    """The common case of JSON values, checked with one set lookup per value; ids also
    within 64 bits (what `check_id_range` checks), so a plain id column is done here."""
    if kind == "numeric":
        plain = _PLAIN[kind]
        return all(type(v) in plain for v in values)
    if kind == "categorical":
        return _plain_ids(values)
    return all(v is None or (type(v) is list and _plain_ids(v)) for v in values)


def _plain_ids(values: Sequence[Any]) -> bool:
    ids = _PLAIN["categorical"]
    return all(type(v) in ids for v in values) and all(
        _fits_id(v) for v in values if type(v) is int)


def _all_types_ok(values: Iterable[Any], ok: Any) -> bool:
    """Fast path: one check per distinct type instead of per value."""
    return all(t in _NULL_TYPES or ok(t) for t in set(map(type, values)))


def _fits_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**40 else \
        f"an integer of {value.bit_length()} bits"
    return text if len(text) <= 40 else text[:37] + "..."
