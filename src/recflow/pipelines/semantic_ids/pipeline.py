"""semantic_ids: encode items once, fit every tokenizer of the YAML, one shared report.

Entry `<name>` of `semantic_ids.tokenizers` is the namespace `semantic_ids.<name>`: its
fit node writes `semantic_ids.<name>.tokenizer` (the fitted state), `.table` (the unique
IDs that retrieval and `semantic_prefix` features read) and `.metrics`; kedro-viz groups
each entry under `semantic_ids`, `--namespaces=semantic_ids.<name>` fits one.

Every node reads the whole `params:semantic_ids` block, typed, and a fit node gets its
entry's name by keyword (`with_entry_name`). Binding `params:semantic_ids.tokenizers.<name>`
typed instead fails Kedro's validation: it visits requirements in node order and cannot
set a child key once its parent block is a model (kedro/validation/utils.py,
`set_nested_dict_value`: "intermediate key 'semantic_ids' is not a dictionary"), and
the encode node (upstream of every fit) reads the whole block.

An item encoder that learns from interactions (``needs_events``, e.g. ``cooccurrence``)
makes ``encode_items`` also read ``interactions``, ``split_cutoffs`` and
``params:retrieval``, from which it takes the retrieval models' training events only.
"""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from recflow.pipelines import with_entry_name
from recflow.pipelines.semantic_ids import nodes
from recflow.tokenization.encoders import encoder_needs_events

#: what encode_items reads besides items and params when the encoder learns from events
EVENT_INPUTS = ["interactions", "split_cutoffs", "params:retrieval"]


def _tokenizer_template(name: str) -> Pipeline:
    return Pipeline([node(with_entry_name(nodes.fit_entry, name),
                          ["item_embeddings", "items", "params:semantic_ids"],
                          ["tokenizer", "table", "metrics"], name="fit")])


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
    encode = Pipeline([node(nodes.encode_items, inputs, "item_embeddings",
                            name="encode_items")])
    if not names:
        return encode
    per_entry = [pipeline(_tokenizer_template(name), namespace=f"semantic_ids.{name}",
                          inputs={"item_embeddings", "items"},
                          parameters={"params:semantic_ids"})
                 for name in names]
    report = Pipeline([node(nodes.report_semantic_ids,
                            {f"metrics__{n}": f"semantic_ids.{n}.metrics" for n in names},
                            ["semantic_ids_report", "semantic_ids_usage_plot"],
                            name="report_semantic_ids")])
    return encode + sum(per_entry, Pipeline([])) + report
