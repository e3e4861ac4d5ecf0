"""Repeated runs (one per seed) -> mean ± std per metric, keeping every run."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np

STD_KIND = "sample (ddof=1)"


def _numeric(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def mean_std(runs: list[dict[str, Any]], *, ignore: tuple[str, ...] = ("seed",)) -> dict[str, Any]:
    """{"mean", "std", "n", "std_kind", "runs"} over the metrics numeric in every run.

    `std` is the sample standard deviation (ddof=1), the usual error bar across seeds;
    it is None with a single run. A key that is missing, None, boolean or non-numeric in
    any run (e.g. a model name) is left out of mean/std but kept in `runs`; keys in
    `ignore` (the seed itself) too. NaN in a run propagates to that metric's mean/std.
    """
    if not runs:
        raise ValueError("mean_std needs at least one run")
    keys = [k for k in runs[0]
            if k not in ignore and all(_numeric(run.get(k)) for run in runs)]
    values = np.array([[float(run[k]) for k in keys] for run in runs], dtype=np.float64)
    values = values.reshape(len(runs), len(keys))
    mean = values.mean(axis=0)
    std = values.std(axis=0, ddof=1) if len(runs) > 1 else [None] * len(keys)
    return {
        "mean": {k: float(m) for k, m in zip(keys, mean, strict=True)},
        "std": {k: None if s is None else float(s) for k, s in zip(keys, std, strict=True)},
        "n": len(runs),
        "std_kind": STD_KIND,
        "runs": [dict(run) for run in runs],
    }


def format_mean_std(summary: dict[str, Any], key: str, digits: int = 4) -> str:
    """'0.7123 ± 0.0031 (n=3)' for one metric of a `mean_std` result (for logs and tables)."""
    mean, std = summary["mean"][key], summary["std"][key]
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f} (n={summary['n']})"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={summary['n']})"
