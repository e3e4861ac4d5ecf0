"""retrieval nodes: time-ordered click histories -> models -> full-catalogue test metrics.

Protocol (global temporal split, never leave-one-out): models train on the
events before ``split_cutoffs.valid_end`` (train + valid periods); for every
user with events in the test period, the history is their events before the
cut-off and the targets are the distinct items of their test events. Every
model ranks the whole catalogue (``raw_items``). Cold items are catalogue items
with no interaction at all (no impression, click or purchase row) before the
cut-off: never shown, so no model can know them from the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recflow.models.retrieval import RETRIEVAL_MODELS, RetrievalData
from recflow.models.retrieval.metrics import retrieval_report
from recflow.pipelines.retrieval.params import RetrievalEntry, RetrievalParams
from recflow.tokenization.semantic_ids import SemanticIdTable

logger = logging.getLogger(__name__)


@dataclass
class EvalSet:
    histories: list[np.ndarray]
    targets: list[set[int]]
    cold_items: set[int]
    n_items: int


def build_data(interactions: pd.DataFrame, items: pd.DataFrame, cutoffs: dict[str, Any],
               params: RetrievalParams, semantic_ids: pd.DataFrame | None = None
               ) -> tuple[RetrievalData, EvalSet]:
    """Item indices, training sequences and the test-period evaluation set."""
    if params.event not in interactions.columns:
        raise KeyError(f"parameters_retrieval.yml: retrieval.event '{params.event}' is not a "
                       f"column of raw_interactions ({list(interactions.columns)})")
    item_ids = np.sort(items["item_id"].unique())
    events = interactions.loc[interactions[params.event] > 0, ["user_id", "item_id", "timestamp"]]
    events = events.sort_values(["user_id", "timestamp"], kind="stable")
    events = events.assign(idx=np.searchsorted(item_ids, events["item_id"].to_numpy()) + 1)
    unknown = ~np.isin(events["item_id"].to_numpy(), item_ids)
    if unknown.any():
        raise ValueError(f"raw_interactions.item_id: {int(unknown.sum())} events name items "
                         "missing from raw_items")
    before = events["timestamp"].to_numpy() < int(cutoffs["valid_end"])
    fit, test = events[before], events[~before]
    train_sequences = [g.to_numpy() for _, g in fit.groupby("user_id", sort=True)["idx"]]
    history = {u: g.to_numpy() for u, g in fit.groupby("user_id")["idx"]}
    users = [u for u in np.sort(test["user_id"].unique()) if u in history]
    targets = test.groupby("user_id")["idx"].apply(lambda s: set(s.tolist()))
    seen = np.zeros(len(item_ids) + 1, dtype=bool)
    logged = interactions["timestamp"].to_numpy() < int(cutoffs["valid_end"])
    seen[np.searchsorted(item_ids, interactions.loc[logged, "item_id"].to_numpy()) + 1] = True
    cold_items = np.flatnonzero(~seen[1:]) + 1
    cold = set(cold_items.tolist())
    sids = None
    if semantic_ids is not None:
        table = SemanticIdTable.from_frame(semantic_ids)
        pos = pd.Series(np.arange(len(table.item_ids)), index=table.item_ids)
        missing = np.setdiff1d(item_ids, table.item_ids)
        if len(missing):
            raise ValueError(f"semantic-ID table lacks {len(missing)} catalogue items, e.g. "
                             f"{missing[:5].tolist()}; re-run the semantic_ids pipeline")
        sids = np.zeros((len(item_ids) + 1, table.n_tokens), dtype=np.int64)
        sids[1:] = table.ids[pos.loc[item_ids].to_numpy()]
    data = RetrievalData(n_items=len(item_ids), train_sequences=train_sequences,
                         semantic_ids=sids, cold_items=cold_items, seed=params.seed)
    evalset = EvalSet([history[u][-params.eval_history:] for u in users],
                      [targets[u] for u in users], cold, len(item_ids))
    return data, evalset


def train_and_evaluate(interactions: pd.DataFrame, items: pd.DataFrame, cutoffs: dict[str, Any],
                       params: RetrievalParams, name: str,
                       semantic_ids: pd.DataFrame | None = None
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit one YAML entry and score it on the test period; returns (payload, metrics)."""
    import time

    entry: RetrievalEntry = params.models[name]
    data, evalset = build_data(interactions, items, cutoffs, params, semantic_ids)
    model = RETRIEVAL_MODELS.create(entry.model, params=entry.params)
    start = time.perf_counter()
    model.fit(data)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    topk = model.recommend(evalset.histories, max(params.ks))
    infer_seconds = time.perf_counter() - start
    metrics = retrieval_report(topk, evalset.targets, evalset.cold_items, evalset.n_items,
                               params.ks)
    metrics.update({"model": entry.model, "params": model.n_params(),
                    "train_seconds": round(train_seconds, 3),
                    "users_per_second": round(len(evalset.histories) / max(infer_seconds, 1e-9), 1),
                    "cold_items": len(evalset.cold_items)})
    if entry.tokenizer:
        metrics["tokenizer"] = entry.tokenizer
    if hasattr(model, "history"):
        metrics["train_loss"] = [round(x, 5) for x in model.history]
    logger.info("%s: recall@10 %.4f ndcg@10 %.4f cold recall@10 %s", name, metrics["recall@10"],
                metrics["ndcg@10"], metrics["recall@10_cold"])
    payload = {"model": entry.model, "params": entry.params, "state_dict": model.state(),
               "feature_spec_hash": None}
    return payload, metrics


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def report_retrieval(params: RetrievalParams, **metrics: dict) -> dict[str, Any]:
    """DESIGN.md contract: {"models": {NAME: {"recall@10", "ndcg@10", "recall@10_cold", ...}}}."""
    models = {k.removeprefix("metrics__"): {m: _clean(v) for m, v in vals.items()}
              for k, vals in metrics.items()}
    base = models.get(params.baseline, {})
    for vals in models.values():
        if base.get("recall@10"):
            vals["recall@10_lift_over_baseline"] = round(vals["recall@10"] / base["recall@10"], 3)
    return {"baseline": params.baseline, "protocol": (
        "global temporal split; train on events before valid_end; test = distinct items of "
        "each user's test-period events; full-catalogue ranking, no sampled negatives"),
        "event": params.event, "models": models}
