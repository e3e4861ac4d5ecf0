"""semantic_ids: encode items once, fit every tokenizer of the YAML, one shared report.

An item encoder that learns from interactions (``needs_events``, e.g. ``cooccurrence``)
makes ``encode_items`` also read ``interactions``, ``split_cutoffs`` and
``params:retrieval``, from which it takes the retrieval models' training events only.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from kedro.pipeline import Pipeline, node

from recflow.pipelines.semantic_ids import nodes
from recflow.pipelines.semantic_ids.params import SemanticIdsParams
from recflow.tokenization.encoders import encoder_needs_events

#: what encode_items reads besides items and params when the encoder learns from events
EVENT_INPUTS = ["interactions", "split_cutoffs", "params:retrieval"]


def _fit_for(name: str):
    """A node function bound to one YAML entry; annotated so Kedro validates the params."""

    def fit(embeddings: pd.DataFrame, items: pd.DataFrame, params: SemanticIdsParams):
        if name not in params.tokenizers:
            raise KeyError(f"parameters_semantic_ids.yml: semantic_ids.tokenizers has no "
                           f"entry '{name}'; entries: {sorted(params.tokenizers)}")
        return nodes.fit_tokenizer(embeddings, items, params.tokenizers[name], params)

    fit.__name__ = fit.__qualname__ = f"fit_tokenizer_{name}"
    return fit


def pipeline_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """create_pipeline's arguments from the raw parameters: tokenizer names and encoder name."""
    block = params.get("semantic_ids") or {}
    return {"tokenizer_names": list(block.get("tokenizers") or {}),
            "encoder": (block.get("encoder") or {}).get("name", "tfidf_svd")}


def create_pipeline(tokenizer_names: list[str] | None = None, encoder: str | None = None,
                    **kwargs) -> Pipeline:
    """`tokenizer_names` are the keys of `semantic_ids.tokenizers` in parameters_semantic_ids.yml;
    `encoder` is `semantic_ids.encoder.name` (decides whether encode_items reads events)."""
    names = list(tokenizer_names or [])
    inputs = ["items", "params:semantic_ids"]
    if encoder and encoder_needs_events(encoder):
        inputs += EVENT_INPUTS
    nodes_ = [node(nodes.encode_items, inputs, "item_embeddings", name="encode_items")]
    for name in names:
        nodes_.append(node(_fit_for(name), ["item_embeddings", "items", "params:semantic_ids"],
                           [f"tokenizer_{name}", f"semantic_ids_{name}", f"sid_metrics_{name}"],
                           name=f"fit_tokenizer_{name}"))
    if names:
        nodes_.append(node(nodes.report_semantic_ids,
                           {f"metrics__{n}": f"sid_metrics_{n}" for n in names},
                           ["semantic_ids_report", "semantic_ids_usage_plot"],
                           name="report_semantic_ids"))
    return Pipeline(nodes_)
