"""retrieval: per YAML entry a train+evaluate node and (sasrec, two_tower, tiger) an export node.

Each entry's nodes carry the entry's name as their namespace, so
``kedro run --pipelines=retrieval --namespaces=two_tower`` trains and exports one
entry (split_cutoffs, and semantic IDs for tiger, must already be on disk). The
shared report node collects every entry's metrics.

Export (`export_nodes.py`) reads ``retrieval_model_{name}`` and writes, under
``07_model_output/retrieval/{name}/`` (catalog_retrieval.yml), the ONNX graph(s),
the item-vector matrix (``.npy``, for an ANN index) and ``export_report.json``
(parity numbers).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from kedro.pipeline import Pipeline, node

from recflow.evaluation.retrieval_params import RetrievalParams
from recflow.export.params import ExportParams
from recflow.pipelines.retrieval import export_nodes, nodes


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


def _export_for(name: str):
    """Export node function bound to one entry (annotated: Kedro validates both params)."""

    def export(payload: dict, interactions: pd.DataFrame, items: pd.DataFrame, cutoffs: dict,
               params: RetrievalParams, export: ExportParams):
        return export_nodes.export_retrieval_model(payload, interactions, items, cutoffs,
                                                   params, export, name)

    export.__name__ = export.__qualname__ = f"export_retrieval_{name}"
    export.__doc__ = export_nodes.export_retrieval_model.__doc__
    return export


def create_pipeline(models: dict[str, Any] | None = None, **kwargs) -> Pipeline:
    """`models` is the `retrieval.models` mapping of parameters_retrieval.yml (raw YAML).

    Entries with a `tokenizer` read `semantic_ids_<tokenizer>` (semantic_ids pipeline).
    """
    models = dict(models or {})
    nodes_ = []
    for name, entry in models.items():
        tokenizer = (entry or {}).get("tokenizer")
        inputs = ["interactions", "items", "split_cutoffs", "params:retrieval"]
        if tokenizer:
            inputs.append(f"semantic_ids_{tokenizer}")
        nodes_.append(node(_train_for(name, bool(tokenizer)), inputs,
                           [f"retrieval_model_{name}", f"retrieval_metrics_{name}"],
                           name=f"train_retrieval_{name}", namespace=name))
        kind = (entry or {}).get("model")
        if kind in export_nodes.OUTPUTS:
            nodes_.append(node(
                _export_for(name),
                [f"retrieval_model_{name}", "interactions", "items", "split_cutoffs",
                 "params:retrieval", "params:export"],
                [f"retrieval_{name}_{key}" for key in export_nodes.OUTPUTS[kind]],
                name=f"export_retrieval_{name}", namespace=name))
    if models:
        nodes_.append(node(nodes.report_retrieval,
                           {"params": "params:retrieval",
                            **{f"metrics__{n}": f"retrieval_metrics_{n}" for n in models}},
                           "retrieval_metrics", name="report_retrieval"))
    return Pipeline(nodes_)
