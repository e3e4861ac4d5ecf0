"""Global temporal split: one cut-off time for everyone, so no row sees the future."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from recflow.features.config import SplitConfig


def temporal_cutoffs(timestamps: pd.Series, config: SplitConfig) -> dict[str, int | str]:
    """Cut-offs as timestamp quantiles; train < train_end <= valid < valid_end <= test."""
    ts = timestamps.to_numpy(np.int64)
    train_end = int(np.quantile(ts, config.valid_start, method="higher"))
    valid_end = int(np.quantile(ts, config.test_start, method="higher"))
    if not (ts.min() < train_end < valid_end <= ts.max()):
        raise ValueError(
            "temporal split is degenerate: timestamps span "
            f"[{ts.min()}, {ts.max()}] but cut-offs are train_end={train_end}, "
            f"valid_end={valid_end}; the data needs more distinct timestamps"
        )

    def iso(t: int) -> str:
        return datetime.fromtimestamp(t, tz=UTC).isoformat()

    return {
        "train_end": train_end,
        "valid_end": valid_end,
        "train_end_iso": iso(train_end),
        "valid_end_iso": iso(valid_end),
        "column": str(timestamps.name),
    }


def split_masks(timestamps: pd.Series, cutoffs: dict) -> dict[str, np.ndarray]:
    """Boolean row masks for train / valid / test."""
    ts = timestamps.to_numpy(np.int64)
    masks = {
        "train": ts < cutoffs["train_end"],
        "valid": (ts >= cutoffs["train_end"]) & (ts < cutoffs["valid_end"]),
        "test": ts >= cutoffs["valid_end"],
    }
    latest_train = ts[masks["train"]].max(initial=np.iinfo(np.int64).min)
    if latest_train >= cutoffs["train_end"]:  # the invariant the split exists for
        raise AssertionError(f"train row at {latest_train} is not before {cutoffs['train_end']}")
    return masks
