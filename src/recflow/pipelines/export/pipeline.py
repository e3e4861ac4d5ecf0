"""Export: one namespaced sub-pipeline per model entry, then one shared report.

Each entry reads `ranking.{name}.model` (the trained payload) and `ranking.{name}.metrics`
(its test metrics, stamped into the ONNX metadata) and writes, in namespace `export.{name}`,
`.onnx`, `.onnx_int8` (with `quantize`) and `.serving_bundle`; the report node
collects every entry into `export_report`. The nodes get the entry's name by keyword
(`with_entry_name`): payloads only know the registered model's name, and the ONNX
metadata names the entry.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from recflow.pipelines import with_entry_name
from recflow.pipelines.export import nodes

SHARED_INPUTS = {"model_input_test", "feature_spec"}


def _model_template(name: str, quantize: bool) -> Pipeline:
    inputs = ["model", "feature_spec", "model_input_test", "metrics", "params:export"]
    if quantize:
        return Pipeline([node(with_entry_name(nodes.export_model_int8, name), inputs,
                              ["onnx", "onnx_int8", "serving_bundle", "export_summary"],
                              name="export_onnx")])
    return Pipeline([node(with_entry_name(nodes.export_model, name), inputs,
                          ["onnx", "serving_bundle", "export_summary"], name="export_onnx")])


def create_pipeline(model_names: list[str] | None = None, quantize: bool = True,
                    **kwargs) -> Pipeline:
    """`model_names`: entries to export (see `params.pipeline_kwargs` for the YAML defaults)."""
    model_names = list(dict.fromkeys(model_names or []))
    per_model = [
        pipeline(_model_template(name, quantize), namespace=f"export.{name}",
                 inputs={**{i: i for i in SHARED_INPUTS}, "model": f"ranking.{name}.model",
                         "metrics": f"ranking.{name}.metrics"},
                 parameters={"params:export": "params:export"})
        for name in model_names
    ]
    if not model_names:
        return Pipeline([])
    report = Pipeline([
        node(nodes.report_export,
             {f"summary__{name}": f"export.{name}.export_summary" for name in model_names},
             "export_report", name="report_export"),
    ])
    return sum(per_model, Pipeline([])) + report
