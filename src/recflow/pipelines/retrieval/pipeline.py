"""retrieval: one train+evaluate node per YAML model entry, then one shared report."""

from __future__ import annotations

from typing import Any

import pandas as pd
from kedro.pipeline import Pipeline, node

from recflow.pipelines.retrieval import nodes
from recflow.pipelines.retrieval.params import RetrievalParams


def _train_for(name: str, with_sids: bool):
    """Node function bound to one entry; annotated so Kedro validates `params:retrieval`."""
    if with_sids:
        def train(interactions: pd.DataFrame, items: pd.DataFrame, cutoffs: dict,
                  params: RetrievalParams, semantic_ids: pd.DataFrame):
            return nodes.train_and_evaluate(interactions, items, cutoffs, params, name,
                                            semantic_ids)
    else:
        def train(interactions: pd.DataFrame, items: pd.DataFrame, cutoffs: dict,
                  params: RetrievalParams):
            return nodes.train_and_evaluate(interactions, items, cutoffs, params, name)
    train.__name__ = train.__qualname__ = f"train_retrieval_{name}"
    return train


def create_pipeline(models: dict[str, Any] | None = None, **kwargs) -> Pipeline:
    """`models` is the `retrieval.models` mapping of parameters_retrieval.yml (raw YAML).

    Entries with a `tokenizer` read `semantic_ids_<tokenizer>` (semantic_ids pipeline).
    """
    models = dict(models or {})
    nodes_ = []
    for name, entry in models.items():
        tokenizer = (entry or {}).get("tokenizer")
        inputs = ["raw_interactions", "raw_items", "split_cutoffs", "params:retrieval"]
        if tokenizer:
            inputs.append(f"semantic_ids_{tokenizer}")
        nodes_.append(node(_train_for(name, bool(tokenizer)), inputs,
                           [f"retrieval_model_{name}", f"retrieval_metrics_{name}"],
                           name=f"train_retrieval_{name}"))
    if models:
        nodes_.append(node(nodes.report_retrieval,
                           {"params": "params:retrieval",
                            **{f"metrics__{n}": f"retrieval_metrics_{n}" for n in models}},
                           "retrieval_metrics", name="report_retrieval"))
    return Pipeline(nodes_)
