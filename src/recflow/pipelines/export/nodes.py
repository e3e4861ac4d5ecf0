"""Export nodes: a trained model payload -> checked, optimised ONNX (+ int8) + serving bundle.

Pure functions over payloads, frames and ModelProtos; the catalog does the I/O.
Per model: export (torch.onnx, legacy exporter, dynamic batch) -> onnx.checker ->
parity of the exported and of the onnxruntime-optimised graph against torch on
the test split's first `parity_rows` rows (fails the run above `parity_tolerance`) -> optional int8
quantisation and its AUC cost -> latency of torch / ORT fp32 / ORT int8 -> bundle.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import numpy as np
import onnx
import pandas as pd

import recflow
from recflow.datasets.sharded import ParquetParts
from recflow.export.checks import input_example_scores, latency_table, parity, torch_scores
from recflow.export.onnx_export import export_onnx, model_input_schema, set_metadata
from recflow.export.runtime import optimize_graph, quantize_int8, run, session
from recflow.features import FeatureSpec
from recflow.features.spec import LABEL_PREFIX
from recflow.models.payload import from_payload
from recflow.pipelines.export.params import ExportParams
from recflow.serving.schema import feeds_from_frame, raw_schema
from recflow.training.metrics import auc

logger = logging.getLogger(__name__)

#: keys of each model's entry in export_report.json that DESIGN.md guarantees
CONTRACT_KEYS = ("max_abs_diff", "opset", "p50_ms_b1", "p50_ms_b1_torch", "quantized_auc_delta")


def export_model(payload: dict[str, Any], feature_spec: dict[str, Any],
                 test: pd.DataFrame | ParquetParts,
                 test_metrics: dict[str, Any], params: ExportParams, name: str | None = None
                 ) -> tuple[onnx.ModelProto, dict[str, Any], dict[str, Any]]:
    """fp32 only: (ONNX model, serving bundle, summary for the report).

    `name` is the YAML entry (default: the payload's name); it goes into the metadata.
    """
    _check_shape(params, quantize=False)
    out = _export(payload, feature_spec, test, test_metrics, params, False, name)
    return out["onnx"], out["bundle"], out["summary"]


def export_model_int8(payload: dict[str, Any], feature_spec: dict[str, Any],
                      test: pd.DataFrame | ParquetParts,
                      test_metrics: dict[str, Any], params: ExportParams, name: str | None = None
                      ) -> tuple[onnx.ModelProto, onnx.ModelProto, dict[str, Any], dict[str, Any]]:
    """fp32 + dynamic int8: (ONNX model, int8 ONNX model, serving bundle, summary)."""
    _check_shape(params, quantize=True)
    out = _export(payload, feature_spec, test, test_metrics, params, True, name)
    return out["onnx"], out["onnx_int8"], out["bundle"], out["summary"]


def _check_shape(params: ExportParams, quantize: bool) -> None:
    if params.quantize != quantize:
        raise ValueError(
            f"export.quantize is {params.quantize}, but this pipeline was registered with "
            f"quantize={quantize}: `export.quantize` and `export.models` shape the pipeline and "
            "are read from conf/<env>/parameters_export.yml when pipelines are registered; "
            "change them there rather than with --params")


def _export(payload: dict[str, Any], feature_spec: dict[str, Any],
            test: pd.DataFrame | ParquetParts,
            test_metrics: dict[str, Any], params: ExportParams, quantize: bool,
            name: str | None) -> dict[str, Any]:
    started = time.perf_counter()
    test = test.head(params.parity_rows)  # a frame, or ParquetParts read up to that row
    spec = FeatureSpec.from_dict(feature_spec)
    name = name or payload.get("name") or payload["model"]
    model = from_payload(payload, spec)
    schema = model_input_schema(model, spec)
    feeds = feeds_from_frame(test, schema)
    metrics = {k: v for k, v in (test_metrics or {}).items()
               if isinstance(v, int | float | str | bool) or v is None}

    exported = export_onnx(model, spec, name=name, opset=params.opset,
                           metadata={"test_metrics": metrics,
                                     "graph_optimization": params.graph_optimization})
    expected = torch_scores(model, feeds)
    check = dict(tolerance=params.parity_tolerance, name=name,
                 batch_size=params.parity_batch_size, expected=expected)
    raw_parity = parity(model, session(exported, level="disabled"), feeds, **check)
    fp32 = optimize_graph(exported, params.graph_optimization)
    fp32_session = session(fp32, threads=params.latency.threads)
    fp32_parity = parity(model, fp32_session, feeds, **check)
    sessions = {"ort_fp32": fp32_session}

    label = LABEL_PREFIX + model.tasks[0]
    summary: dict[str, Any] = {
        "model": payload["model"],
        "opset": params.opset,
        "graph_optimization": params.graph_optimization,
        "rows": fp32_parity["rows"],
        "max_abs_diff": fp32_parity["max_abs_diff"],
        "mean_abs_diff": fp32_parity["mean_abs_diff"],
        "max_abs_diff_unoptimized": raw_parity["max_abs_diff"],
        "parity_tolerance": params.parity_tolerance,
        "inputs": [e["name"] for e in schema],
        "score_names": list(model.score_names),
        "onnx_bytes": fp32.ByteSize(),
        "quantized_auc_delta": None,
    }
    int8 = None
    if quantize:
        int8 = quantize_int8(exported, per_channel=params.quantize_per_channel)
        set_metadata(int8, {"precision": "int8"})
        int8_session = session(int8, threads=params.latency.threads)
        int8_scores = run(int8_session, feeds, params.parity_batch_size)
        sessions["ort_int8"] = int8_session
        y = test[label].to_numpy() if label in test else None
        auc_fp32 = auc(y, expected[:, 0]) if y is not None else float("nan")
        auc_int8 = auc(y, int8_scores[:, 0]) if y is not None else float("nan")
        summary.update(
            quantized_auc_delta=_finite(auc_int8 - auc_fp32),
            auc_fp32=_finite(auc_fp32), auc_int8=_finite(auc_int8),
            quantized_max_abs_diff=float(np.abs(int8_scores - expected).max())
            if len(expected) else 0.0,
            onnx_int8_bytes=int8.ByteSize(),
        )

    lat = params.latency
    table = latency_table(model, sessions, feeds, lat.batches, repeats=lat.repeats,
                          warmup=lat.warmup, threads=lat.threads, budget_s=lat.budget_s)
    for variant, suffix in (("ort_fp32", ""), ("torch", "_torch"), ("ort_int8", "_int8")):
        for batch, stats in table.get(variant, {}).items():
            summary[f"p50_ms_b{batch}{suffix}"] = stats["p50_ms"]
            summary[f"p99_ms_b{batch}{suffix}"] = stats["p99_ms"]
    summary.setdefault("p50_ms_b1", None)
    summary.setdefault("p50_ms_b1_torch", None)
    summary.update(latency=table, latency_threads=lat.threads,
                   export_seconds=round(time.perf_counter() - started, 3))

    manifest = {
        "name": name,
        "registered_model": payload["model"],
        "recflow_version": recflow.__version__,
        "feature_spec_hash": spec.hash,
        "opset": params.opset,
        "graph_optimization": params.graph_optimization,
        "score_names": list(model.score_names),
        "input_schema": schema,
        "raw_schema": raw_schema(spec, [e["name"] for e in schema]),
        "parity": {"max_abs_diff": fp32_parity["max_abs_diff"], "rows": fp32_parity["rows"],
                   "tolerance": params.parity_tolerance},
        "quantized_auc_delta": summary["quantized_auc_delta"],
        "input_example_scores": input_example_scores(
            model, fp32.SerializeToString(), feature_spec, tolerance=params.parity_tolerance,
            name=name),
        "test_metrics": metrics,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    bundle = {"model": fp32, "model_int8": int8, "feature_spec": feature_spec,
              "manifest": manifest}
    logger.info("exported '%s': max|onnx-torch| %.2e on %d rows, p50 b1 %.3f ms (torch %.3f ms)%s",
                name, summary["max_abs_diff"], summary["rows"], summary["p50_ms_b1"] or 0,
                summary["p50_ms_b1_torch"] or 0,
                f", int8 AUC delta {summary['quantized_auc_delta']:+.5f}"
                if summary["quantized_auc_delta"] is not None else "")
    return {"onnx": fp32, "onnx_int8": int8, "bundle": bundle, "summary": summary}


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


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
