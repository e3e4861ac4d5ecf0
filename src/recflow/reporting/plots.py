"""Report figures comparing models: ROC, reliability and learning curves.

Figures are built with `matplotlib.figure.Figure` on an Agg canvas, not pyplot,
so nothing is registered globally: no GUI backend, no leaked open figures, and
callers (e.g. Kedro's MatplotlibDataset) own the returned objects.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from recflow.metrics.calibration import ece, reliability_bins
from recflow.metrics.ranking import auc

Curves = dict[str, tuple[np.ndarray, np.ndarray]]


def _figure(ncols: int = 1, width: float = 5.0) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * ncols, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(1, ncols))


def roc_figure(curves: Curves) -> Figure:
    """ROC of several models (name -> (labels, scores)) on one axis, AUC in the legend."""
    fig, (ax,) = _figure()
    for name, (y, p) in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(y, p):.4f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="random")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right")
    return fig


def calibration_figure(curves: Curves, n_bins: int = 10) -> Figure:
    """Reliability diagram: observed rate vs mean prediction per equal-width bin, ECE in the legend."""
    fig, (ax,) = _figure()
    for name, (y, p) in curves.items():
        mean_p, rate, count = reliability_bins(y, p, n_bins)
        filled = count > 0
        ax.plot(mean_p[filled], rate[filled], marker="o",
                label=f"{name} (ECE {ece(y, p, n_bins):.4f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    ax.set(xlabel="Mean predicted probability", ylabel="Observed positive rate",
           title="Calibration", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    return fig


_PANELS = (("train_loss", "Train loss"), ("valid_logloss", "Valid logloss"),
           ("valid_auc", "Valid AUC"))


def learning_curves_figure(histories: dict[str, list[dict[str, float]]]) -> Figure:
    """Train loss, valid logloss and valid AUC per epoch for each model's `TrainResult.history`."""
    fig, axes = _figure(ncols=len(_PANELS), width=4.5)
    for ax, (key, title) in zip(axes, _PANELS, strict=True):
        for name, history in histories.items():
            rows = [r for r in history if key in r]
            ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], marker="o", label=name)
        ax.set(xlabel="Epoch", ylabel=title, title=title)
        ax.legend()
    return fig
