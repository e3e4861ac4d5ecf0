"""Export nodes: thin wrappers over `recflow.export.ranking`; the catalog does the I/O.

Per model entry: `export_model` (fp32) or `export_model_int8` (+ dynamic int8), each
returning the graphs, the serving bundle and a summary; `report_export` gathers the
summaries into export_report.json.
"""

from __future__ import annotations

from typing import Any

import onnx
import pandas as pd

import recflow
from recflow.datasets.sharded import ParquetParts
from recflow.export.params import ExportParams
from recflow.export.ranking import export_ranking

#: keys of each model's entry in export_report.json that the report guarantees (a test pins them)
CONTRACT_KEYS = ("max_abs_diff", "opset", "p50_ms_b1", "p50_ms_b1_torch", "quantized_auc_delta")


def export_model(payload: dict[str, Any], feature_spec: dict[str, Any],
                 test: pd.DataFrame | ParquetParts,
                 test_metrics: dict[str, Any], params: ExportParams, name: str | None = None
                 ) -> tuple[onnx.ModelProto, dict[str, Any], dict[str, Any]]:
    """fp32 only: (ONNX model, serving bundle, summary for the report).

    `name` is the YAML entry (default: the payload's name); it goes into the metadata.
    """
    _check_shape(params, quantize=False)
    out = export_ranking(payload, feature_spec, test, test_metrics, params, name=name)
    return out.onnx, out.bundle, out.summary


def export_model_int8(payload: dict[str, Any], feature_spec: dict[str, Any],
                      test: pd.DataFrame | ParquetParts,
                      test_metrics: dict[str, Any], params: ExportParams, name: str | None = None
                      ) -> tuple[onnx.ModelProto, onnx.ModelProto, dict[str, Any], dict[str, Any]]:
    """fp32 + dynamic int8: (ONNX model, int8 ONNX model, serving bundle, summary)."""
    _check_shape(params, quantize=True)
    out = export_ranking(payload, feature_spec, test, test_metrics, params, name=name)
    return out.onnx, out.onnx_int8, out.bundle, out.summary


def _check_shape(params: ExportParams, quantize: bool) -> None:
    if params.quantize != quantize:
        raise ValueError(
            f"export.quantize is {params.quantize}, but this pipeline was registered with "
            f"quantize={quantize}: `export.quantize` and `export.models` shape the pipeline and "
            "are read from conf/<env>/parameters_export.yml when pipelines are registered; "
            "change them there rather than with --params")


def report_export(**summaries: dict[str, Any]) -> dict[str, Any]:
    """export_report.json: {"models": {NAME: {max_abs_diff, opset, p50_ms_b1, ...}}, ...}.

    Keyword names are `summary__<NAME>` (one per exported entry).
    """
    models = {key.removeprefix("summary__"): summary for key, summary in summaries.items()}
    missing = {n: [k for k in CONTRACT_KEYS if k not in s] for n, s in models.items()}
    missing = {n: ks for n, ks in missing.items() if ks}
    if missing:
        raise ValueError(f"export summaries lack contract keys: {missing}")
    rows = [
        {"model": n, "variant": variant, "batch": int(batch), "p50_ms": stats["p50_ms"],
         "p99_ms": stats["p99_ms"]}
        for n, s in models.items() for variant, per_batch in s["latency"].items()
        for batch, stats in per_batch.items()
    ]
    return {
        "recflow_version": recflow.__version__,
        "models": models,
        "latency_table": rows,
    }
