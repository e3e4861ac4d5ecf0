"""Metrics against hand-computed values, GAUC against a per-user loop, and the report figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from recflow.metrics.calibration import calibration, ece, reliability_bins
from recflow.metrics.ranking import auc, evaluate_scores, gauc, logloss
from recflow.reporting.plots import calibration_figure, learning_curves_figure, roc_figure


def test_auc_counts_ties_half():
    # (neg, pos) pairs: (.1,.4)=1 (.1,.8)=1 (.4,.4)=.5 (.4,.8)=1 -> 3.5 / 4
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.4, 0.8])) == 0.875
    assert math.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_logloss_by_hand_and_clipped():
    expected = -(math.log(0.8) + math.log(0.7)) / 2
    assert logloss(np.array([1, 0]), np.array([0.8, 0.3])) == pytest.approx(expected)
    worst = logloss(np.array([0, 1]), np.array([1.0, 0.0]))
    assert worst == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_gauc_weights_by_impressions_and_skips_single_class_users():
    y = np.array([0, 1, 1, 1, 0, 1, 1, 0])
    p = np.array([0.4, 0.4, 0.9, 0.6, 0.3, 0.5, 0.2, 0.7])
    users = np.array(["a", "a", "a", "b", "b", "c", "c", "d"])
    # a: pairs (.4|.4)=.5, (.4|.9)=1 -> .75 over 3 impressions; b: 1.0 over 2; c, d one class only
    assert gauc(y, p, users) == pytest.approx((3 * 0.75 + 2 * 1.0) / 5)
    assert math.isnan(gauc(y[5:], p[5:], users[5:]))


def test_gauc_matches_per_user_loop():
    rng = np.random.default_rng(0)
    n = 1000
    users = rng.integers(0, 50, n)
    y = (rng.random(n) < 0.3).astype(int)
    p = np.round(rng.random(n) * 0.5 + 0.3 * y, 1)  # coarse scores: many ties
    num = den = 0.0
    for u in np.unique(users):
        m = users == u
        if 0 < y[m].sum() < m.sum():
            num += m.sum() * roc_auc_score(y[m], p[m])
            den += m.sum()
    assert gauc(y, p, users) == pytest.approx(num / den, abs=1e-12)


def test_ece_and_calibration_on_tiny_case():
    y = np.array([0, 1, 1, 1])
    p = np.array([0.05, 0.15, 0.95, 0.85])
    # bin [0,.5): mean p .1 vs rate .5; bin [.5,1]: .9 vs 1; each half the rows
    assert ece(y, p, n_bins=2) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    mean_p, rate, count = reliability_bins(y, p, n_bins=4)
    np.testing.assert_array_equal(count, [2, 0, 0, 2])
    assert math.isnan(mean_p[1]) and rate[3] == 1.0
    assert calibration(y, p) == pytest.approx(0.5 / 0.75)
    assert ece(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0  # p == 1 falls in the last bin


def test_evaluate_scores_keys():
    y, p = np.array([0, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.6])
    out = evaluate_scores(y, p, np.array([1, 1, 2, 2]))
    assert set(out) == {"auc", "logloss", "gauc", "calibration", "ece", "n"}
    assert out["auc"] == 1.0 and out["gauc"] == 1.0 and out["n"] == 4


def test_figures_are_labelled():
    rng = np.random.default_rng(1)
    y = (rng.random(200) < 0.4).astype(int)
    curves = {"good": (y, np.clip(0.6 * y + 0.4 * rng.random(200), 0, 1)),
              "random": (y, rng.random(200))}
    history = [{"epoch": e, "train_loss": 1 / e, "valid_auc": 0.6 + e / 100,
                "valid_logloss": 0.5} for e in (1, 2, 3)]
    figs = [roc_figure(curves), calibration_figure(curves, n_bins=5),
            learning_curves_figure({"m1": history, "m2": history[:2]})]
    for fig in figs:
        assert isinstance(fig, Figure)
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel()
            assert ax.get_legend() is not None
        fig.canvas.draw()
    labels = [t.get_text() for t in figs[0].axes[0].get_legend().get_texts()]
    assert labels[0].startswith("good (AUC") and len(figs[2].axes) == 3


def _recall_ndcg_loop(topk: np.ndarray, targets: list, k: int) -> tuple[float, float]:
    """The definition, one user at a time (the reference the vectorised version must meet)."""
    recalls, ndcgs = [], []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for row, target in zip(topk[:, :k], targets, strict=True):
        target = set(target)
        if target:
            hits = np.array([item in target for item in row])
            recalls.append(hits.sum() / len(target))
            ndcgs.append((hits * discounts[: len(row)]).sum()
                         / discounts[: min(len(target), k)].sum())
    return float(np.mean(recalls)), float(np.mean(ndcgs))


@pytest.mark.parametrize("k", [1, 5, 10, 30])
def test_recall_ndcg_equal_the_per_user_definition(k: int) -> None:
    from recflow.metrics.retrieval import recall_ndcg_at_k

    rng = np.random.default_rng(k)
    topk = np.stack([rng.permutation(60)[:20] + 1 for _ in range(200)])  # 20 < k = 30 too
    targets = [list(rng.integers(1, 61, size=rng.integers(0, 6))) for _ in range(200)]
    targets[3] = [topk[3, 0], topk[3, 0]]  # a repeated target counts once
    got = recall_ndcg_at_k(topk, targets, k)
    assert got == pytest.approx(_recall_ndcg_loop(topk, targets, k), abs=1e-12)
    assert np.isnan(recall_ndcg_at_k(topk[:2], [[], []], k)[0])
