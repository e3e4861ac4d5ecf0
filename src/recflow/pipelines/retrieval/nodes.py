"""retrieval nodes: time-ordered click histories -> models -> full-catalogue test metrics.

Protocols (`retrieval.split.strategy`), every model ranking the whole catalogue
(``raw_items``), never sampled negatives:

* ``temporal`` (default): models train on the click events before the test
  cut-off (``split_cutoffs.valid_end``, the ranking test period; computed from
  ``retrieval.split`` when the preprocessing split is not temporal). For every
  user with test-period clicks, the history is their clicks before the cut-off
  and the targets are the distinct items clicked in the test period.
* ``leave_one_out`` (the literature's protocol: SASRec, TIGER, RecBole): per
  user, the last click is the target, the clicks before it the history; models
  train on everything but each user's last click. It leaks the future across
  users (a test click may precede another user's training clicks).

Cold items are catalogue items with no interaction at all in training (temporal:
no impression, click or purchase row before the cut-off; leave-one-out: no
training click): no model can know them from the log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recflow.evaluation.aggregate import mean_std
from recflow.evaluation.stats import dataset_statistics
from recflow.features.split import SPLIT_CODES, assign_splits, temporal_cutoffs
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
    statistics: dict[str, Any] | None = None


def _semantic_id_matrix(semantic_ids: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """(n_items + 1, T) codes aligned with item indices (row 0 unused)."""
    table = SemanticIdTable.from_frame(semantic_ids)
    pos = pd.Series(np.arange(len(table.item_ids)), index=table.item_ids)
    missing = np.setdiff1d(item_ids, table.item_ids)
    if len(missing):
        raise ValueError(f"semantic-ID table lacks {len(missing)} catalogue items, e.g. "
                         f"{missing[:5].tolist()}; re-run the semantic_ids pipeline")
    sids = np.zeros((len(item_ids) + 1, table.n_tokens), dtype=np.int64)
    sids[1:] = table.ids[pos.loc[item_ids].to_numpy()]
    return sids


def item_feature_codes(items: pd.DataFrame, item_ids: np.ndarray,
                       columns: list[str] | None) -> dict[str, np.ndarray]:
    """(n_items + 1,) int codes per item column, 0 = padding / missing (two-tower features).

    Default columns: the text/categorical columns of raw_items with at most n_items / 4
    distinct values (category, brand, genres; not titles or ids).
    """
    frame = items.drop_duplicates("item_id").set_index("item_id").loc[item_ids]
    if columns is None:
        columns = [c for c in frame.columns
                   if not pd.api.types.is_numeric_dtype(frame[c])
                   and frame[c].nunique() <= max(len(frame) // 4, 1)]
    missing = sorted(set(columns) - set(frame.columns))
    if missing:
        raise KeyError(f"parameters_retrieval.yml: retrieval.item_features {missing} are not "
                       f"columns of raw_items ({sorted(frame.columns)})")
    out = {}
    for column in columns:
        codes, _ = pd.factorize(frame[column])
        out[column] = np.concatenate([[0], codes + 1]).astype(np.int64)  # NaN: -1 + 1 = 0
    return out


def _sequences(events: pd.DataFrame) -> dict[Any, np.ndarray]:
    """Per user, time-ordered item indices (events are already sorted by user, time)."""
    users = events["user_id"].to_numpy()
    cuts = np.flatnonzero(users[1:] != users[:-1]) + 1
    chunks = np.split(events["idx"].to_numpy(), cuts)
    firsts = users[np.r_[0, cuts]] if len(users) else []
    return dict(zip(firsts, chunks, strict=True))


def build_data(interactions: pd.DataFrame, items: pd.DataFrame, cutoffs: dict[str, Any],
               params: RetrievalParams, semantic_ids: pd.DataFrame | None = None,
               seed: int | None = None) -> tuple[RetrievalData, EvalSet]:
    """Item indices, training sequences and the evaluation set of the configured protocol."""
    lacking = [role for role, column in (("user", "user_id"), ("item", "item_id"),
                                         ("time", "timestamp"))
               if column not in interactions.columns]
    if lacking:
        raise ValueError(f"retrieval needs the user, item and time roles of the event log; "
                         f"the dataset declares no {', '.join(lacking)} "
                         f"(parameters_dataset.yml: dataset.events."
                         f"{', dataset.events.'.join(lacking)})")
    if params.event not in interactions.columns:
        raise KeyError(f"parameters_retrieval.yml: retrieval.event '{params.event}' is not a "
                       f"label or column of the event log ({list(interactions.columns)})")
    item_ids = np.sort(items["item_id"].unique())
    unknown = ~np.isin(interactions["item_id"].to_numpy(), item_ids)
    if unknown.any():
        raise ValueError(f"event log item_id: {int(unknown.sum())} rows name items missing "
                         "from the items table, e.g. "
                         f"{interactions.loc[unknown, 'item_id'].unique()[:5].tolist()}")
    events = interactions.loc[interactions[params.event] > 0, ["user_id", "item_id", "timestamp"]]
    events = events.sort_values(["user_id", "timestamp"], kind="stable", ignore_index=True)
    events["idx"] = np.searchsorted(item_ids, events["item_id"].to_numpy()) + 1
    seen = np.zeros(len(item_ids) + 1, dtype=bool)
    if params.split.strategy == "temporal":
        valid_end = int(cutoffs["valid_end"]) if "valid_end" in cutoffs else int(
            temporal_cutoffs(interactions["timestamp"], params.split)["valid_end"])
        codes = np.where(events["timestamp"].to_numpy() < valid_end, SPLIT_CODES["train"],
                         SPLIT_CODES["test"]).astype(np.int8)
        logged = interactions["timestamp"].to_numpy() < valid_end
        seen[np.searchsorted(item_ids, interactions.loc[logged, "item_id"].to_numpy()) + 1] = True
    else:  # leave_one_out: the validation click is history like any earlier click
        codes = assign_splits(events, params.split)
        codes[codes == SPLIT_CODES["valid"]] = SPLIT_CODES["train"]
    fit, test = events[codes == SPLIT_CODES["train"]], events[codes == SPLIT_CODES["test"]]
    seen[fit["idx"].to_numpy()] = True
    history = _sequences(fit)
    users = np.array([u for u in np.sort(test["user_id"].unique()) if u in history])
    targets = test.groupby("user_id")["idx"].apply(lambda s: set(s.tolist()))
    cold_items = np.flatnonzero(~seen[1:]) + 1
    data = RetrievalData(
        n_items=len(item_ids), train_sequences=list(history.values()),
        semantic_ids=None if semantic_ids is None else _semantic_id_matrix(semantic_ids, item_ids),
        item_features=item_feature_codes(items, item_ids, params.item_features),
        cold_items=cold_items, seed=params.seed if seed is None else seed)
    names = np.array(["dropped", "train", "valid", "test"], dtype=object)[codes + 1]
    stats = dataset_statistics(events, split=names, time_col="timestamp")
    stats["catalogue_items"] = len(item_ids)
    stats["cold_items"] = len(cold_items)
    evalset = EvalSet([history[u][-params.eval_history:] for u in users],
                      [targets[u] for u in users], set(cold_items.tolist()), len(item_ids), stats)
    return data, evalset


def _fit_and_score(entry: RetrievalEntry, data: RetrievalData, evalset: EvalSet,
                   ks: list[int]) -> tuple[Any, dict[str, Any]]:
    model = RETRIEVAL_MODELS.create(entry.model, params=entry.params)
    start = time.perf_counter()
    model.fit(data)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    topk = model.recommend(evalset.histories, max(ks))
    infer_seconds = time.perf_counter() - start
    metrics = retrieval_report(topk, evalset.targets, evalset.cold_items, evalset.n_items, ks)
    metrics.update({"seed": data.seed, "params": model.n_params(),
                    "train_seconds": round(train_seconds, 3),
                    "users_per_second": round(len(evalset.histories) / max(infer_seconds, 1e-9),
                                              1)})
    if hasattr(model, "history"):
        metrics["train_loss"] = [round(x, 5) for x in model.history]
    return model, metrics


def train_and_evaluate(interactions: pd.DataFrame, items: pd.DataFrame, cutoffs: dict[str, Any],
                       params: RetrievalParams, name: str,
                       semantic_ids: pd.DataFrame | None = None
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit one YAML entry once per seed and score it; returns (first seed's payload, metrics).

    Metrics: the mean over seeds at the top level (the report contract's keys),
    plus `seeds` = {mean, std, n, runs} and the protocol and dataset statistics.
    """
    entry: RetrievalEntry = params.models[name]
    seeds = params.seeds or [params.seed]
    data, evalset = build_data(interactions, items, cutoffs, params, semantic_ids, seeds[0])
    runs, payload = [], None
    for seed in seeds:
        data.seed = seed
        model, run = _fit_and_score(entry, data, evalset, params.ks)
        runs.append(run)
        if payload is None:
            payload = {"model": entry.model, "params": entry.params, "state_dict": model.state(),
                       "feature_spec_hash": None}
    summary = mean_std([{k: v for k, v in r.items() if k != "train_loss"} for r in runs])
    metrics: dict[str, Any] = {**summary["mean"], "model": entry.model,
                               "seeds": summary | {"runs": runs},
                               "split": params.split.parameters(),
                               "dataset": evalset.statistics}
    if entry.tokenizer:
        metrics["tokenizer"] = entry.tokenizer
    logger.info("%s: recall@10 %.4f ndcg@10 %.4f cold recall@10 %s (%d seed(s))", name,
                metrics["recall@10"], metrics["ndcg@10"], metrics.get("recall@10_cold"),
                len(seeds))
    return payload, metrics


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def report_retrieval(params: RetrievalParams, **metrics: dict) -> dict[str, Any]:
    """DESIGN.md contract: {"models": {NAME: {"recall@10", "ndcg@10", "recall@10_cold", ...}}}."""
    models = {k.removeprefix("metrics__"): _cleaned(vals) for k, vals in metrics.items()}
    dataset = next((m.pop("dataset") for m in models.values() if "dataset" in m), None)
    for vals in models.values():
        vals.pop("dataset", None)
        vals.pop("split", None)
    base = models.get(params.baseline, {})
    for vals in models.values():
        if base.get("recall@10"):
            vals["recall@10_lift_over_baseline"] = round(vals["recall@10"] / base["recall@10"], 3)
    protocol = {
        "temporal": "global temporal split; train on clicks before the test cut-off; test = "
                    "distinct items each user clicks in the test period",
        "leave_one_out": "leave-one-out per user; test = each user's last click, history = "
                         "the clicks before it; train on all but the last clicks",
    }[params.split.strategy]
    return {"baseline": params.baseline,
            "protocol": protocol + "; full-catalogue ranking, no sampled negatives",
            "split": params.split.parameters(), "seeds": params.seeds or [params.seed],
            "event": params.event, "dataset": dataset, "models": models}


def _cleaned(value: Any) -> Any:
    """NaN/inf -> None all the way down (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _cleaned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    return _clean(value)
