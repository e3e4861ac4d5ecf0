"""Ranking and calibration metrics on numpy arrays (no torch, so reports can reuse them).

Degenerate inputs (one class only) give NaN rather than raising, so a tiny or
skewed split still produces a full report.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC (ties count half); NaN when only one class is present."""
    y = np.asarray(y)
    if y.size == 0 or np.all(y == y.flat[0]):
        return float("nan")
    from sklearn.metrics import roc_auc_score  # lazy: DDP workers start ~4 s faster

    return float(roc_auc_score(y, p))


def logloss(y: np.ndarray, p: np.ndarray, eps: float = EPS) -> float:
    """Mean binary cross-entropy, with p clipped to [eps, 1-eps] so one bad score stays finite."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def gauc(y: np.ndarray, p: np.ndarray, users: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUC over users that have both classes.

    Vectorised Mann-Whitney: one lexsort by (user, score), mid-ranks for ties
    within a user, then per-user sums with bincount.
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    n = len(y)
    if n == 0:
        return float("nan")
    _, codes = np.unique(np.asarray(users), return_inverse=True)
    order = np.lexsort((p, codes))
    codes, p, y = codes[order], p[order], y[order]
    # Runs of equal (user, score) share the mid-rank of their positions.
    new_run = np.r_[True, (codes[1:] != codes[:-1]) | (p[1:] != p[:-1])]
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.r_[run_start[1:], n] - 1
    mid_position = ((run_start + run_end) / 2.0)[run_id]
    user_start = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])  # indexed by user code
    rank = mid_position - user_start[codes] + 1.0

    count = np.bincount(codes).astype(np.float64)
    pos = np.bincount(codes, weights=y)
    neg = count - pos
    both = (pos > 0) & (neg > 0)
    if not both.any():
        return float("nan")
    rank_sum = np.bincount(codes, weights=rank * y)
    user_auc = (rank_sum[both] - pos[both] * (pos[both] + 1) / 2) / (pos[both] * neg[both])
    return float(np.average(user_auc, weights=count[both]))


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


def evaluate_scores(y: np.ndarray, p: np.ndarray,
                    users: np.ndarray | None) -> dict[str, float | None]:
    """All metrics of one score column, as the report and model comparison read them.

    `users` None (a log without a user key): `gauc` is None.
    """
    return {
        "auc": auc(y, p),
        "logloss": logloss(y, p),
        "gauc": None if users is None else gauc(y, p, users),
        "calibration": calibration(y, p),
        "ece": ece(y, p),
        "n": int(len(y)),
    }
