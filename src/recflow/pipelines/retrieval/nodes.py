"""retrieval nodes: the event log -> models -> full-catalogue test metrics.

Short functions over `recflow.evaluation.retrieval_protocol`, which holds the protocol
(which events count, tie-break, temporal / leave-one-out splits with held-out validation,
seen-item masking, checkpoints) and is documented in docs/evaluation.md.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from recflow.evaluation import retrieval_protocol as protocol
from recflow.evaluation.retrieval_params import RetrievalParams

logger = logging.getLogger(__name__)


def train_and_evaluate(interactions: pd.DataFrame, items: pd.DataFrame, cutoffs: dict[str, Any],
                       params: RetrievalParams, name: str,
                       semantic_ids: pd.DataFrame | None = None
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit one YAML entry once per seed and score it on test; returns (the first seed's
    payload, metrics: the mean over seeds, `seeds`, the protocol, dataset statistics)."""
    entry = params.models[name]
    seeds = params.seeds or [params.seed]
    data, test = protocol.build_data(interactions, items, cutoffs, params, semantic_ids, seeds[0])
    digest = protocol.data_hash(data) if params.training.checkpoint_dir else None
    runs, payload = [], None
    for seed in seeds:
        protocol.configure(data, params, name, seed, digest)
        model, run = protocol.fit_and_score(params, name, data, test)
        runs.append(run)
        payload = payload or {"model": entry.name, "params": entry.params,
                              "state_dict": model.state(), "feature_spec_hash": None}
    metrics = protocol.summarise(params, name, runs, test.statistics)
    logger.info("%s: recall@10 %.4f ndcg@10 %.4f cold recall@10 %s (%d seed(s), "
                "exclude_seen %s)", name, metrics["recall@10"], metrics["ndcg@10"],
                metrics.get("recall@10_cold"), len(seeds), metrics["exclude_seen"])
    return payload, metrics


def report_retrieval(params: RetrievalParams, **metrics: dict) -> dict[str, Any]:
    """The report contract (pinned by the tests): {"models": {NAME: {"recall@10", "ndcg@10", "recall@10_cold", ...}},
    "protocol": {...}}."""
    return protocol.report(params, {k.removeprefix("metrics__"): v for k, v in metrics.items()})
