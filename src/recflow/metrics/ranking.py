"""Ranking metrics on numpy arrays: AUC, logloss, GAUC, and every metric of a score column.

Degenerate inputs (one class only) give NaN rather than raising, so a tiny or
skewed split still produces a full report.
"""

from __future__ import annotations

import numpy as np

from recflow.metrics.calibration import calibration, ece

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
