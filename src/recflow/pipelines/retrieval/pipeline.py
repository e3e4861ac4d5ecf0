"""retrieval: one namespaced sub-pipeline per YAML entry, then one shared report.

Entry `<name>` of `retrieval.models` is the namespace `retrieval.<name>`: its train node
writes `retrieval.<name>.model` and `retrieval.<name>.metrics`, and (sasrec, two_tower,
tiger) its export node writes `retrieval.<name>.<output>` (export_nodes.OUTPUTS) under
``07_model_output/retrieval/<name>/`` (catalog_retrieval.yml): the ONNX graph(s), the
item-vector matrix (``.npy``, for an ANN index) and ``export_report.json`` (parity).
An entry with a `tokenizer` reads `semantic_ids.<tokenizer>.table`.

``kedro run --pipelines=retrieval --namespaces=retrieval.two_tower`` trains and exports
one entry (split_cutoffs, and semantic IDs for tiger, must already be on disk);
kedro-viz groups each entry under `retrieval`.
"""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from recflow.pipelines import with_entry_name
from recflow.pipelines.retrieval import export_nodes, nodes

SHARED_INPUTS = {"interactions", "items", "split_cutoffs"}


def _entry_template(name: str, kind: str | None, with_sids: bool) -> Pipeline:
    """Train (+ export) one entry.

    The protocol (`recflow.evaluation.retrieval_protocol`) takes the whole typed block and
    the entry's name (checkpoint folder, fingerprint, metrics label), bound by keyword;
    `params:retrieval` and `params:export` are read whole, so Kedro validates each once.
    """
    train_inputs = {"interactions": "interactions", "items": "items",
                    "cutoffs": "split_cutoffs", "params": "params:retrieval"}
    if with_sids:
        train_inputs["semantic_ids"] = "semantic_ids"
    nodes_ = [node(with_entry_name(nodes.train_and_evaluate, name), train_inputs,
                   ["model", "metrics"], name="train")]
    if kind in export_nodes.OUTPUTS:
        nodes_.append(node(with_entry_name(export_nodes.export_retrieval_model, name),
                           ["model", "interactions", "items", "split_cutoffs",
                            "params:retrieval", "params:export"],
                           list(export_nodes.OUTPUTS[kind]), name="export_onnx"))
    return Pipeline(nodes_)


def create_pipeline(models: dict[str, Any] | None = None, **kwargs) -> Pipeline:
    """`models` is the `retrieval.models` mapping of parameters_retrieval.yml (raw YAML)."""
    models = dict(models or {})
    if not models:
        return Pipeline([])
    per_entry = []
    for name, entry in models.items():
        tokenizer = (entry or {}).get("tokenizer")
        inputs = {**{k: k for k in SHARED_INPUTS},
                  **({"semantic_ids": f"semantic_ids.{tokenizer}.table"} if tokenizer else {})}
        template = _entry_template(name, (entry or {}).get("name"), bool(tokenizer))
        params = {p for p in template.inputs() if p.startswith("params:")}
        per_entry.append(pipeline(template, namespace=f"retrieval.{name}", inputs=inputs,
                                  parameters=params))
    report = Pipeline([node(nodes.report_retrieval,
                            {"params": "params:retrieval",
                             **{f"metrics__{n}": f"retrieval.{n}.metrics" for n in models}},
                            "retrieval_metrics", name="report_retrieval")])
    return sum(per_entry, Pipeline([])) + report
