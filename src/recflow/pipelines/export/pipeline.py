"""Export: one namespaced sub-pipeline per model entry, then one shared report.

Each entry reads `{name}.model` (the trained payload) and `{name}.metrics` (its
test metrics, stamped into the ONNX metadata) and writes `{name}.onnx`,
`{name}.onnx_int8` (with `quantize`), `{name}.serving_bundle`; the report node
collects every entry into `export_report`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from recflow.pipelines.export import nodes
from recflow.pipelines.export.params import ExportParams

SHARED_INPUTS = {"model_input_test", "feature_spec"}


def _for_entry(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    """`func` with the entry name bound (payloads only know the registered model's name).

    A plain function with the node's signature, so Kedro still sees `params: ExportParams`
    and validates it before the run (a functools.partial would hide the annotation).
    """

    def export_entry(payload: dict[str, Any], feature_spec: dict[str, Any], test: Any,
                     test_metrics: dict[str, Any], params: ExportParams) -> Any:
        return func(payload, feature_spec, test, test_metrics, params, name=name)

    export_entry.__name__ = export_entry.__qualname__ = func.__name__
    export_entry.__doc__ = func.__doc__
    return export_entry


def _model_template(name: str, quantize: bool) -> Pipeline:
    inputs = ["model", "feature_spec", "model_input_test", "metrics", "params:export"]
    if quantize:
        return Pipeline([node(_for_entry(nodes.export_model_int8, name), inputs,
                              ["onnx", "onnx_int8", "serving_bundle", "export_summary"],
                              name="export_onnx")])
    return Pipeline([node(_for_entry(nodes.export_model, name), inputs,
                          ["onnx", "serving_bundle", "export_summary"], name="export_onnx")])


def create_pipeline(model_names: list[str] | None = None, quantize: bool = True,
                    **kwargs) -> Pipeline:
    """`model_names`: entries to export (see `params.pipeline_kwargs` for the YAML defaults)."""
    model_names = list(dict.fromkeys(model_names or []))
    per_model = [
        pipeline(_model_template(name, quantize), namespace=name, inputs=SHARED_INPUTS,
                 parameters={"params:export": "params:export"})
        for name in model_names
    ]
    if not model_names:
        return Pipeline([])
    report = Pipeline([
        node(nodes.report_export,
             {f"summary__{name}": f"{name}.export_summary" for name in model_names},
             "export_report", name="report_export"),
    ])
    return sum(per_model, Pipeline([])) + report
