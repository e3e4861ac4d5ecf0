"""Ranking evaluation beyond AUC: rare-item AUC, the popularity baseline, the report.

Pure functions over score frames (`key_user`, `key_item`, `label_click`, `score_ctr`)
and the per-item train statistics; the ranking pipeline's nodes call them.

    stats = item_train_stats(train)
    rare_item_metrics(test_scores, stats, threshold=10)   # {"auc_rare_items": ..., ...}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from recflow.datasets.sharded import ParquetParts
from recflow.evaluation import key_columns, mean_std, split_statistics
from recflow.evaluation.aggregate import STD_KIND
from recflow.metrics.ranking import auc, evaluate_scores

Split = pd.DataFrame | ParquetParts


def item_train_stats(train: Split) -> pd.DataFrame:
    """Train impressions and clicks per item (index `key_item`): all the rare-item and
    popularity figures need of the train split, computed once for every model.
    Empty when the log has no item key."""
    if "key_item" not in train.columns:
        return pd.DataFrame({"impressions": pd.Series(dtype=np.int64),
                             "clicks": pd.Series(dtype=np.float64)},
                            index=pd.Index([], name="key_item"))
    chunks = (train.iter_frames(["key_item", "label_click"], rows=4_000_000)
              if isinstance(train, ParquetParts) else [train[["key_item", "label_click"]]])
    parts = [chunk.groupby("key_item")["label_click"].agg(impressions="count", clicks="sum")
             for chunk in chunks]
    stats = pd.concat(parts).groupby(level=0).sum()
    return stats.astype({"impressions": np.int64, "clicks": np.float64})


def rare_item_mask(test_items: pd.Series, item_stats: pd.DataFrame, threshold: int) -> np.ndarray:
    """Test rows whose item has fewer than `threshold` train impressions (unseen ones too)."""
    return test_items.map(item_stats["impressions"]).fillna(0).to_numpy() < threshold


def rare_item_metrics(test_scores: pd.DataFrame, item_stats: pd.DataFrame,
                      threshold: int) -> dict[str, Any]:
    """pCTR AUC on the long tail, where id embeddings saw (almost) no training signal.

    `auc_rare_items` is None when those rows hold a single class (AUC undefined).
    """
    if "key_item" not in test_scores:
        return {"auc_rare_items": None, "rare_items_rows": None,
                "rare_items_threshold": threshold}
    rare = rare_item_mask(test_scores["key_item"], item_stats, threshold)
    value = auc(test_scores["label_click"].to_numpy()[rare],
                test_scores["score_ctr"].to_numpy()[rare])
    return {"auc_rare_items": None if np.isnan(value) else value,
            "rare_items_rows": int(rare.sum()), "rare_items_threshold": threshold}


def popularity_scores(item_stats: pd.DataFrame, test: pd.DataFrame,
                      prior: float = 20.0) -> np.ndarray:
    """The popularity baseline: each item's smoothed train CTR."""
    rate = item_stats["clicks"].sum() / item_stats["impressions"].sum()
    smoothed = (item_stats["clicks"] + prior * rate) / (item_stats["impressions"] + prior)
    return test["key_item"].map(smoothed).fillna(rate).to_numpy(np.float64)


def popularity_row(reference: pd.DataFrame, item_stats: pd.DataFrame,
                   threshold: int) -> tuple[dict[str, Any], np.ndarray]:
    """The popularity baseline's metrics row on the test rows of `reference`, and its scores."""
    pop = popularity_scores(item_stats, reference)
    users = reference["key_user"].to_numpy() if "key_user" in reference else None
    row = {**evaluate_scores(reference["label_click"].to_numpy(), pop, users),
           **rare_item_metrics(reference.assign(score_ctr=pop), item_stats, threshold),
           "params": 0, "train_seconds": 0.0}
    return row, pop


def ranking_report(metrics: dict[str, dict[str, Any]], seed_runs: dict[str, list[dict]], *,
                   baseline: str, seeds: list[int] | None, feature_spec: dict[str, Any],
                   splits: dict[str, Split], rows: int) -> dict[str, Any]:
    """ranking_metrics.json: every model's metrics (lift over `baseline`, mean ± std over
    seeds), the split and its statistics, and the best trained model by AUC."""
    base_auc = metrics[baseline]["auc"]
    for m in metrics.values():
        m["auc_lift_over_baseline"] = m["auc"] - base_auc
    for name, runs in seed_runs.items():
        metrics[name]["seeds"] = mean_std(runs)
    return {
        "split": "test",
        "split_strategy": {**feature_spec.get("split", {}), "rows": feature_spec.get("rows", {})},
        "seeds": seeds,  # None: each model's trainer seed, once
        "std": STD_KIND,
        "baseline": baseline,
        "rows": rows,
        "statistics": split_statistics(splits, **key_columns(splits["train"])),
        "models": metrics,
        "best": max(seed_runs, key=lambda n: metrics[n]["auc"]),
    }
