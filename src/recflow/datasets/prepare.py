"""Raw tables -> the canonical shape every pipeline reads, as the declaration says.

The canonical log has `user_id` / `item_id` (when declared; strings stay strings),
`timestamp` (int64 epoch seconds, when declared), one int64 0/1 column per label,
`split` (train / valid / test, when the split is given) and every other column of the
file under its own name. Side tables are keyed by `user_id` / `item_id`. Column-wise
pandas throughout: no Python loop touches a row.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from recflow.datasets.declaration import (
    ITEM,
    SPLIT,
    SPLIT_NAMES,
    TIME,
    USER,
    DatasetDeclaration,
    IdType,
    TimeDecl,
)
from recflow.datasets.schema import RawDataError, table_schema, validate

_EXAMPLES = 5
logger = logging.getLogger(__name__)


def _examples(values: pd.Series) -> list:
    return values.drop_duplicates().head(_EXAMPLES).tolist()


def cast_ids(values: pd.Series, id_type: IdType, where: str) -> pd.Series:
    """Ids as the declaration says: `auto` keeps strings and integers (integral floats -> int)."""
    if id_type == "string" or (id_type == "auto" and not pd.api.types.is_numeric_dtype(values)):
        if pd.api.types.is_float_dtype(values):
            values = _integral(values, where)
        return values.astype(str) if id_type == "string" else values
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        raise RawDataError(f"{where}: ids must be integers (id_type: {id_type}); "
                           f"{int(bad.sum())} value(s) are not, e.g. {_examples(values[bad])}")
    return _integral(numbers, where) if pd.api.types.is_float_dtype(numbers) else numbers


def _integral(values: pd.Series, where: str) -> pd.Series:
    x = values.to_numpy(np.float64)
    fractional = np.isfinite(x) & (np.floor(x) != x)
    if fractional.any():
        raise RawDataError(f"{where}: ids must be integral; got e.g. "
                           f"{_examples(values[fractional])}")
    return values.astype(np.int64)


def to_epoch_seconds(values: pd.Series, decl: TimeDecl, where: str) -> pd.Series:
    """Event times as int64 epoch seconds, from epoch numbers, ISO-8601 text or datetimes."""
    fmt = decl.format
    if fmt == "auto":
        if pd.api.types.is_datetime64_any_dtype(values):
            fmt = "datetime"
        elif pd.api.types.is_numeric_dtype(values):
            top = float(np.nanmax(np.abs(values.to_numpy(np.float64)))) if len(values) else 0.0
            fmt = "epoch_us" if top > 1e14 else "epoch_ms" if top > 1e11 else "epoch_s"
        else:
            fmt = "iso8601"
    if fmt.startswith("epoch"):
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna()
        if bad.any():
            raise RawDataError(f"{where}: '{decl.column}' must hold epoch numbers ({fmt}); "
                               f"{int(bad.sum())} value(s) do not parse, e.g. "
                               f"{_examples(values[bad])}")
        scale = {"epoch_s": 1, "epoch_ms": 1_000, "epoch_us": 1_000_000}[fmt]
        if pd.api.types.is_integer_dtype(numbers):
            seconds = numbers.to_numpy(np.int64) // scale
        else:
            seconds = np.floor(numbers.to_numpy(np.float64) / scale).astype(np.int64)
        return pd.Series(seconds, index=values.index, name=TIME)
    parsed = values if fmt == "datetime" and pd.api.types.is_datetime64_any_dtype(values) else \
        pd.to_datetime(values, format="ISO8601" if fmt == "iso8601" else None, utc=True,
                       errors="coerce")
    bad = parsed.isna()
    if bad.any():
        expected = "ISO-8601 text such as 2024-03-01T12:30:00Z" if fmt == "iso8601" \
            else "datetimes"
        raise RawDataError(f"{where}: '{decl.column}' must hold {expected}; "
                           f"{int(bad.sum())} value(s) do not parse, e.g. "
                           f"{_examples(values[bad])}")
    if parsed.dt.tz is None:
        parsed = parsed.dt.tz_localize("UTC")
    seconds = parsed.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[s]")
    return pd.Series(seconds.to_numpy().astype(np.int64), index=values.index, name=TIME)


def _label(values: pd.Series, threshold: float | None) -> np.ndarray:
    if threshold is None:
        return values.to_numpy(np.int64)
    return (values.to_numpy(np.float64) >= threshold).astype(np.int64)


def prepare_log(decl: DatasetDeclaration, tables: Mapping[str, pd.DataFrame],
                source: str | None = None) -> pd.DataFrame:
    """The event log in canonical shape; `tables`: catalog entry -> its frame.

    A split given as files is concatenated train, valid, test with a `split` column.
    `source` names a single frame that stands for the log (one shard of it) in errors.
    """
    if source is not None:
        decl = decl.model_copy(update={"events": decl.events.model_copy(
            update={"table": source, "tables": None})})
    ev = decl.events
    parts = []
    schema = table_schema(decl, "events")
    for split in SPLIT_NAMES if ev.tables else [None]:
        entry = ev.tables[split] if split else ev.table
        if entry not in tables:
            raise RawDataError(f"dataset.events: catalog entry '{entry}' was not loaded")
        frame = validate(tables[entry], schema, entry)
        parts.append(frame.assign(**{SPLIT: split}) if split else frame)
    raw = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    where = ev.table or "+".join(ev.tables.values())
    out = raw.drop(columns=[lab.column for lab in ev.labels.values() if lab.threshold is None])
    renames = {c: n for n, c in ((SPLIT, ev.split_column), (USER, ev.user), (ITEM, ev.item))
               if c}
    clash = sorted(set(renames.values()) & (set(out.columns) - set(renames)))
    if ev.time:
        clash += [TIME] if TIME in out.columns and TIME != ev.time.column else []
    if clash:
        raise RawDataError(f"{where}: column(s) {clash} are reserved for role columns but hold "
                           "something else; rename them in the file or declare them as roles")
    out = out.rename(columns=renames)
    for role, column in ((USER, ev.user), (ITEM, ev.item)):
        if column:
            out[role] = cast_ids(out[role], ev.id_type, f"{where}.{column} (dataset.events."
                                 f"{'user' if role == USER else 'item'})")
    if ev.time:
        seconds = to_epoch_seconds(raw[ev.time.column], ev.time,
                                   f"{where} (dataset.events.time)")
        out = out.drop(columns=[ev.time.column]).assign(**{TIME: seconds})
    for name, label in ev.labels.items():
        out[name] = _label(raw[label.column], label.threshold)
    return as_categories(out, [c for c, d in ev.columns.items()
                               if d.kind in ("categorical", "sequence_source")])


def duplicate_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows equal in every column to an earlier row (the first of each group is kept).

    One 64-bit hash per row, mixed column by column from cheap per-column integers
    (category codes, the bits of numbers, a hash of text), so a wide log of millions of
    rows is checked in a fraction of a second; a collision (p ~ n^2 / 2^64) can only
    over-count.
    """
    h = np.full(len(frame), 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for name in frame.columns:
        values = frame[name]
        if isinstance(values.dtype, pd.CategoricalDtype):
            x = values.cat.codes.to_numpy().astype(np.int64).view(np.uint64)
        elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            x = values.to_numpy(np.float64, na_value=np.nan).view(np.uint64)
        else:
            x = pd.util.hash_array(values.to_numpy(dtype=object))
        h = (h ^ x) * prime
    return pd.Series(h).duplicated(keep="first").to_numpy()


def handle_duplicates(log: pd.DataFrame, decl: DatasetDeclaration,
                      where: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """`dataset.events.on_duplicates` applied: (the log, {rows, duplicate_events, ...})."""
    dup = duplicate_rows(log)
    n = int(dup.sum())
    mode = decl.events.on_duplicates
    report = {"rows": len(log), "duplicate_events": n, "on_duplicates": mode,
              "dropped": n if mode == "drop" else 0}
    if n and mode == "error":
        raise RawDataError(f"{where}: {n} exact duplicate event(s) (every column equal to an "
                           f"earlier row), e.g. rows {np.flatnonzero(dup)[:5].tolist()}; "
                           "dataset.events.on_duplicates: error (warn or drop to accept)")
    if n:
        logger.warning("%s: %d exact duplicate event(s) (%.3f%% of rows)%s", where, n,
                       100 * n / len(log), "; dropped" if mode == "drop" else "")
    return (log.loc[~dup].reset_index(drop=True) if n and mode == "drop" else log), report


def as_categories(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Declared categorical text columns as pandas `category` (codes + one dictionary).

    Selecting rows then copies small integer codes instead of strings, and vocabularies
    count codes and map each category once (`recflow.features.transforms.Vocabulary`);
    the values, and so every fitted transform and model input, are unchanged. One
    dictionary-encode pass per column, on threads (the hashing releases the GIL).
    """
    text = [c for c in columns if pd.api.types.is_string_dtype(frame[c].dtype)]
    if not text:
        return frame

    def encode(name: str) -> pd.Categorical:
        codes, uniques = pd.factorize(frame[name])  # categories in order of appearance
        return pd.Categorical.from_codes(codes, categories=uniques)

    with ThreadPoolExecutor(max_workers=min(len(text), os.cpu_count() or 1)) as pool:
        return frame.assign(**dict(zip(text, pool.map(encode, text), strict=True)))


def prepare_side(decl: DatasetDeclaration, table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """A users / items table validated (unique non-null keys) and keyed by `user_id` / `item_id`."""
    side = getattr(decl, table)
    frame = validate(frame, table_schema(decl, table), side.table)
    key = USER if table == "users" else ITEM
    if key in frame.columns and key != side.key:
        raise RawDataError(f"{side.table}: column '{key}' is reserved for the key "
                           f"(dataset.{table}.key: {side.key})")
    out = frame.rename(columns={side.key: key})
    out[key] = cast_ids(out[key], decl.events.id_type, f"{side.table}.{side.key} "
                        f"(dataset.{table}.key)")
    return out


def _align_keys(log: pd.Series, table: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Integer ids on one side and text on the other (CSV vs parquet) meet as text."""
    if pd.api.types.is_numeric_dtype(log) == pd.api.types.is_numeric_dtype(table):
        return log, table
    return log.astype(str), table.astype(str)


def join_side(log: pd.DataFrame, table: pd.DataFrame, decl: DatasetDeclaration,
              name: str) -> pd.DataFrame:
    """Left-join a side table; a log key with no row gets null attributes (or an error)."""
    side = getattr(decl, name)
    key = USER if name == "users" else ITEM
    log_keys, table_keys = _align_keys(log[key], table[key])
    known = log_keys.isin(table_keys)
    if not known.all():
        missing = log_keys[~known]
        if side.on_missing == "error":
            raise RawDataError(
                f"{side.table}: {int((~known).sum())} log row(s) reference {key}s with no row "
                f"here (dataset.{name}.on_missing: error), e.g. {_examples(missing)}")
    table = table.assign(**{key: table_keys})
    joined = log.assign(**{key: log_keys}).merge(
        table, on=key, how="left", suffixes=("", f"_{name[:-1]}"))
    joined[key] = log[key].to_numpy()  # the log's own ids (dtype) survive the join
    return joined


def join_tables(log: pd.DataFrame, decl: DatasetDeclaration,
                side: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The canonical log with its side tables (`users`, `items`) joined, in time order."""
    events = log
    for name, table in side.items():
        events = join_side(events, table, decl, name)
    if TIME in events.columns:
        events = events.sort_values(TIME, kind="stable")
    return events.reset_index(drop=True)
