"""Full-catalogue retrieval metrics on numpy arrays (ranked lists vs target sets)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def recall_ndcg_at_k(topk: np.ndarray, targets: Sequence[Iterable[int]], k: int
                     ) -> tuple[float, float]:
    """Mean Recall@K = |top_K ∩ T| / |T| and NDCG@K (binary relevance, IDCG over min(|T|, K)).

    `topk` is (n_users, >= k) ranked item indices; users with empty target sets are skipped.
    """
    recalls, ndcgs = [], []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for row, target in zip(np.asarray(topk)[:, :k], targets, strict=True):
        target = set(target)
        if not target:
            continue
        hits = np.fromiter((item in target for item in row), dtype=bool, count=len(row))
        recalls.append(hits.sum() / len(target))
        idcg = discounts[: min(len(target), k)].sum()
        ndcgs.append(float((hits * discounts[: len(row)]).sum() / idcg))
    if not recalls:
        return float("nan"), float("nan")
    return float(np.mean(recalls)), float(np.mean(ndcgs))


def coverage_at_k(topk: np.ndarray, k: int, n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's top K."""
    top = np.asarray(topk)[:, :k]
    return float(len(np.unique(top[top > 0])) / n_items) if n_items else float("nan")


def retrieval_report(topk: np.ndarray, targets: Sequence[set[int]], cold_items: set[int],
                     n_items: int, ks: Sequence[int] = (5, 10, 20)) -> dict[str, float]:
    """recall@K, ndcg@K, recall@K_cold (targets restricted to cold items), coverage@K."""
    out: dict[str, float] = {}
    cold_targets = [set(t) & cold_items for t in targets]
    for k in ks:
        out[f"recall@{k}"], out[f"ndcg@{k}"] = recall_ndcg_at_k(topk, targets, k)
        out[f"recall@{k}_cold"], _ = recall_ndcg_at_k(topk, cold_targets, k)
        out[f"coverage@{k}"] = coverage_at_k(topk, k, n_items)
    out["users"] = len([t for t in targets if t])
    out["users_with_cold_targets"] = len([t for t in cold_targets if t])
    return out
