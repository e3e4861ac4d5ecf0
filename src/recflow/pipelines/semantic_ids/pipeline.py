"""semantic_ids: encode items once, fit every tokenizer of the YAML, one shared report."""

from __future__ import annotations

import pandas as pd
from kedro.pipeline import Pipeline, node

from recflow.pipelines.semantic_ids import nodes
from recflow.pipelines.semantic_ids.params import SemanticIdsParams


def _fit_for(name: str):
    """A node function bound to one YAML entry; annotated so Kedro validates the params."""

    def fit(embeddings: pd.DataFrame, items: pd.DataFrame, params: SemanticIdsParams):
        if name not in params.tokenizers:
            raise KeyError(f"parameters_semantic_ids.yml: semantic_ids.tokenizers has no "
                           f"entry '{name}'; entries: {sorted(params.tokenizers)}")
        return nodes.fit_tokenizer(embeddings, items, params.tokenizers[name], params)

    fit.__name__ = fit.__qualname__ = f"fit_tokenizer_{name}"
    return fit


def create_pipeline(tokenizer_names: list[str] | None = None, **kwargs) -> Pipeline:
    """`tokenizer_names` are the keys of `semantic_ids.tokenizers` in parameters_semantic_ids.yml."""
    names = list(tokenizer_names or [])
    nodes_ = [node(nodes.encode_items, ["items", "params:semantic_ids"], "item_embeddings",
                   name="encode_items")]
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
