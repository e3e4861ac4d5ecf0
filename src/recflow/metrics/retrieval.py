"""Full-catalogue retrieval metrics on numpy arrays (ranked lists vs target sets)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def recall_ndcg_at_k(topk: np.ndarray, targets: Sequence[Iterable[int]], k: int
                     ) -> tuple[float, float]:
    """Mean Recall@K = |top_K ∩ T| / |T| and NDCG@K (binary relevance, IDCG over min(|T|, K)).

    `topk` is (n_users, >= k) ranked item indices; users with empty target sets are skipped.
    Vectorised: a hit is a (user, item) key of the top K found among the target keys.
    """
    top = np.asarray(topk)[:, :k].astype(np.int64, copy=False)
    sets = [np.unique(np.fromiter(t, dtype=np.int64)) for t in targets]
    sizes = np.fromiter((len(t) for t in sets), dtype=np.int64, count=len(sets))
    keep = sizes > 0
    if not keep.any():
        return float("nan"), float("nan")
    span = int(max(top.max(initial=0), max((t.max() for t in sets if len(t)), default=0))) + 1
    users = np.repeat(np.arange(len(sets)), sizes)
    wanted = users * span + (np.concatenate(sets) if len(users) else np.zeros(0, np.int64))
    hits = np.isin(np.arange(len(top))[:, None] * span + top, wanted)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    idcg = np.cumsum(discounts)[np.minimum(sizes, k) - 1]
    recall = hits.sum(axis=1)[keep] / sizes[keep]
    ndcg = (hits * discounts[: top.shape[1]]).sum(axis=1)[keep] / idcg[keep]
    return float(np.mean(recall)), float(np.mean(ndcg))


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
