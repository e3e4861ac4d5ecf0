"""pandera schemas built from the dataset declaration, and their errors made readable.

One `DataFrameSchema` per raw table (`table_schema`); every column carries the YAML key
that declared it, so a failure names the catalog entry, the key, what was expected and a
few offending values. `schema.to_yaml()` writes any of them as pandera YAML.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors

from recflow.datasets.declaration import SPLIT_NAMES, ColumnDecl, DatasetDeclaration


class RawDataError(ValueError):
    """Raw data that does not match its declaration (or a declaration the data cannot meet)."""


def _column(decl: ColumnDecl, key: str) -> pa.Column:
    checks = []
    for op in ("ge", "gt", "le", "lt"):
        bound = getattr(decl, op)
        if bound is not None:
            checks.append(getattr(pa.Check, op)(bound))
    if decl.kind == "numeric":
        # finite: +inf passes `gt: 0` but is no price (issue 18); NaN is the missing value
        checks.append(pa.Check(lambda s: ~s.isin([float("inf"), float("-inf")]),
                               element_wise=False, error="finite (no +/-inf)"))
    if decl.isin is not None:
        checks.append(pa.Check.isin(decl.isin))
    dtype = float if decl.kind == "numeric" else None
    return pa.Column(dtype, checks=checks, nullable=decl.nullable, coerce=dtype is not None,
                     required=True, description=key)


def _key(key: str, unique: bool = False) -> pa.Column:
    return pa.Column(None, nullable=False, unique=unique, required=True, description=key)


def table_schema(decl: DatasetDeclaration, table: str) -> pa.DataFrameSchema:
    """The schema of one raw table: `events` (each file of a given split) / `users` / `items`.

    Columns the declaration does not name are allowed (`strict=False`) and kept.
    """
    columns: dict[str, pa.Column] = {}
    if table == "events":
        ev = decl.events
        for role in ("user", "item"):
            if getattr(ev, role):
                columns[getattr(ev, role)] = _key(f"dataset.events.{role}")
        if ev.time:
            columns[ev.time.column] = _key("dataset.events.time")
        for name, label in ev.labels.items():
            key = f"dataset.events.labels.{name}"
            if label.threshold is None:
                columns[label.column] = pa.Column(
                    None, checks=[pa.Check.isin([0, 1])], nullable=False, description=key)
            else:
                columns[label.column] = pa.Column(float, coerce=True, nullable=False,
                                                  description=key)
        if ev.split_column:
            columns[ev.split_column] = pa.Column(
                None, checks=[pa.Check.isin(list(SPLIT_NAMES))], nullable=False,
                description="dataset.events.split_column")
        extra = ev.columns
        prefix = "dataset.events.columns"
    else:
        side = getattr(decl, table)
        columns[side.key] = _key(f"dataset.{table}.key", unique=True)
        extra = side.columns
        prefix = f"dataset.{table}.columns"
    for name, col in extra.items():
        columns[name] = _column(col, f"{prefix}.{name}")
    return pa.DataFrameSchema(columns, strict=False, name=f"{decl.name}.{table}")


def validate(frame: pd.DataFrame, schema: pa.DataFrameSchema, dataset: str) -> pd.DataFrame:
    """`schema.validate` with every failure gathered into one `RawDataError`."""
    if frame.empty:
        raise RawDataError(f"{dataset}: the table is empty (0 rows); "
                           f"columns: {list(frame.columns)[:20]}")
    try:  # inplace: no copy of a whole log (the loader made `frame` for this node alone)
        return schema.validate(frame, lazy=True, inplace=True)
    except SchemaErrors as exc:
        raise RawDataError(_describe(exc.failure_cases, schema, dataset)) from None
    except SchemaError as exc:  # pragma: no cover - lazy=True gathers them all
        raise RawDataError(f"{dataset}: {exc}") from None


def _describe(cases: pd.DataFrame, schema: pa.DataFrameSchema, dataset: str) -> str:
    lines = []
    cases = cases.assign(column=cases["column"].where(  # frame-level rows name the schema
        cases["schema_context"] != "DataFrameSchema", cases["failure_case"].astype(str)))
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
        values = group["failure_case"].drop_duplicates().head(5).tolist()
        key = schema.columns[column].description if column in schema.columns else None
        where = f"column '{column}'" + (f" ({key})" if key else "")
        if check == "column_in_dataframe":
            lines.append(f"{where}: missing from the file")
        elif check == "not_nullable":
            lines.append(f"{where}: {len(group)} null value(s); expected none")
        elif str(check).startswith("field_uniqueness") or check == "unique":
            lines.append(f"{where}: duplicate keys, e.g. {values}; expected one row per key")
        else:
            lines.append(f"{where}: expected {check}; {len(group)} offending value(s), "
                         f"e.g. {values}")
    return f"{dataset} does not match its declaration: " + "; ".join(lines)
