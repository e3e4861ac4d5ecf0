"""great-expectations suites over processed features, attached as Kedro validators.

`GreatExpectationsValidator` satisfies Kedro 1.7's Validator protocol, so a
catalog entry names it under `validator:` exactly like a pandera model. The
suite is derived from the frame itself: preprocessing stamps each split with
its bounds (vocab sizes, time window) in `DataFrame.attrs["recflow"]`, which
makes "ids within vocab" and "no future leakage" checkable without side inputs.
The validator stamps its summary back into the attrs (persisted in the parquet
metadata), so the data-quality report reuses it instead of validating twice.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import pandas as pd
from kedro.validation import CheckFailure, DataValidationError

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # never phone home

ATTRS_KEY = "recflow"


@cache
def _context() -> Any:
    import great_expectations as gx  # slow import: only when a suite runs

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    return context


def build_suite(frame: pd.DataFrame, name: str, label_rate: tuple[float, float]) -> Any:
    """Expectations for one processed split, from its columns and stamped bounds."""
    import great_expectations as gx

    bounds: dict[str, Any] = frame.attrs.get(ATTRS_KEY, {})
    e = gx.expectations
    expectations: list[Any] = [e.ExpectTableRowCountToBeBetween(min_value=1)]
    for column in frame.columns:
        expectations.append(e.ExpectColumnValuesToNotBeNull(column=column))
    for column, max_index in bounds.get("max_index", {}).items():
        expectations.append(
            e.ExpectColumnValuesToBeBetween(column=column, min_value=0, max_value=max_index)
        )
    for column in (c for c in frame.columns if c.startswith("label_")):
        expectations.append(e.ExpectColumnValuesToBeInSet(column=column, value_set=[0, 1]))
    if "label_click" in frame.columns:
        low, high = label_rate
        expectations.append(
            e.ExpectColumnMeanToBeBetween(column="label_click", min_value=low, max_value=high)
        )
        if "label_purchase" in frame.columns:
            expectations.append(
                e.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A="label_click", column_B="label_purchase", or_equal=True
                )
            )
    window = bounds.get("time_window")
    if window and "key_timestamp" in frame.columns:
        start, end = window
        expectations.append(
            e.ExpectColumnValuesToBeBetween(
                column="key_timestamp", min_value=start, max_value=end, strict_max=True
            )
        )
    # One constructor call: `suite.add_expectation` costs ~25 ms each (GE bookkeeping).
    return gx.ExpectationSuite(name=name, expectations=expectations)


def run_suite(
    frame: pd.DataFrame, name: str, label_rate: tuple[float, float] = (0.001, 0.999)
) -> dict[str, Any]:
    """Validate a split and return a compact, JSON-ready summary."""
    context = _context()
    source = context.data_sources.add_or_update_pandas("recflow")
    asset_name = f"asset_{name}"
    try:
        asset = source.get_asset(asset_name)
    except LookupError:
        asset = source.add_dataframe_asset(asset_name)
    definition = next(iter(asset.batch_definitions), None) or (
        asset.add_batch_definition_whole_dataframe("whole")
    )
    batch = definition.get_batch(batch_parameters={"dataframe": frame})
    suite = build_suite(frame, name, label_rate)
    # Pass/fail first (about half the metrics); details only when something failed.
    result = batch.validate(suite, result_format="BOOLEAN_ONLY")
    if not result.success:
        result = batch.validate(suite, result_format="SUMMARY")
    failed = []
    for r in result.results:
        if not r.success:
            kwargs = {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"}
            failed.append(
                {
                    "expectation": r.expectation_config.type,
                    "kwargs": kwargs,
                    "unexpected_count": r.result.get("unexpected_count"),
                    "examples": r.result.get("partial_unexpected_list", [])[:5],
                    "observed_value": r.result.get("observed_value"),
                }
            )
    return {
        "suite": name,
        "success": bool(result.success),
        "rows": len(frame),
        "evaluated": result.statistics["evaluated_expectations"],
        "successful": result.statistics["successful_expectations"],
        "failed": failed,
    }


class GreatExpectationsValidator:
    """Kedro Validator running a great-expectations suite; fails with a readable summary."""

    def __init__(
        self, suite: str = "model_input", label_rate_min: float = 0.001,
        label_rate_max: float = 0.999,
    ) -> None:
        self.suite = suite
        self.label_rate = (label_rate_min, label_rate_max)

    def validate(self, data: pd.DataFrame) -> pd.DataFrame:
        summary = run_suite(data, self.suite, self.label_rate)
        if not summary["success"]:
            raise DataValidationError(
                f"great-expectations suite '{self.suite}' failed "
                f"({summary['successful']}/{summary['evaluated']} expectations passed)",
                validator=f"{__name__}.{type(self).__name__}",
                failures=[_check_failure(f) for f in summary["failed"]],
            )
        validated = data.copy(deep=False)
        validated.attrs = {**data.attrs}
        validated.attrs[ATTRS_KEY] = {**data.attrs.get(ATTRS_KEY, {}), "data_quality": summary}
        return validated


def _plain(value: Any) -> Any:
    """numpy scalars (also inside tuples) as plain Python values, for readable messages."""
    if isinstance(value, tuple | list):
        return type(value)(_plain(v) for v in value)
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def _check_failure(failed: dict[str, Any]) -> CheckFailure:
    """One failed expectation as a Kedro CheckFailure: column(s), bounds, examples."""
    kwargs = failed["kwargs"]
    columns = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
    bounds = ", ".join(
        f"{k}={v}" for k, v in kwargs.items() if k not in ("column", "column_A", "column_B")
    )
    examples = failed["examples"] or (
        [failed["observed_value"]] if failed["observed_value"] is not None else []
    )
    return CheckFailure(
        message=f"{failed['expectation']} {kwargs}",
        check=f"{failed['expectation']}({bounds})",
        column=", ".join(map(str, columns)) or None,
        failure_count=failed["unexpected_count"] or 1,
        failure_examples=[_plain(e) for e in examples],
    )


def quality_summary(frame: pd.DataFrame, name: str) -> dict[str, Any]:
    """The summary the catalog validator stamped on `frame`, or a fresh run of the suite."""
    stamped = frame.attrs.get(ATTRS_KEY, {}).get("data_quality")
    return stamped if stamped is not None else run_suite(frame, name)
