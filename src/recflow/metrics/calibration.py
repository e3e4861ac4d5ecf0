"""Calibration metrics on numpy arrays: mean prediction over rate, reliability bins, ECE."""

from __future__ import annotations

import numpy as np


def calibration(y: np.ndarray, p: np.ndarray) -> float:
    """Mean prediction / observed positive rate: 1 is calibrated, >1 over-predicts."""
    rate = float(np.mean(y)) if len(y) else 0.0
    return float(np.mean(p)) / rate if rate > 0 else float("nan")


def reliability_bins(
    y: np.ndarray, p: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of p on [0, 1]: (mean prediction, positive rate, count); NaN if empty."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(bins, weights=p, minlength=n_bins) / count
        rate = np.bincount(bins, weights=y, minlength=n_bins) / count
    return mean_p, rate, count


def ece(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: count-weighted |mean prediction - rate| over equal-width bins."""
    mean_p, rate, count = reliability_bins(y, p, n_bins)
    if count.sum() == 0:
        return float("nan")
    filled = count > 0
    return float(np.sum(count[filled] * np.abs(mean_p[filled] - rate[filled])) / count.sum())
