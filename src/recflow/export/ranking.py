"""A trained ranking payload -> checked, optimised ONNX (+ int8) + serving bundle + summary.

The steps, each a function below: export (torch.onnx, dynamic batch) -> parity of the
exported and of the onnxruntime-optimised graph against torch on the test split's first
`parity_rows` rows (ParityError above `parity_tolerance`) -> optional dynamic int8 and
its AUC cost -> latency of torch / ORT fp32 / ORT int8 -> the bundle's manifest, with
the input example scored through the serving route. Pure: payloads, frames and
ModelProtos in, the same out; the export pipeline's nodes and distillation call it.

    out = export_ranking(payload, spec_dict, test_frame, {"auc": 0.71}, ExportParams())
    out.onnx, out.bundle["manifest"], out.summary["p50_ms_b1"]
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import pandas as pd

import recflow
from recflow.datasets.sharded import ParquetParts
from recflow.export.checks import input_example_scores, latency_table, parity, torch_scores
from recflow.export.onnx_export import export_onnx, model_input_schema, set_metadata
from recflow.export.params import ExportParams, LatencyParams
from recflow.export.runtime import optimize_graph, quantize_int8, run, session
from recflow.features import FeatureSpec
from recflow.features.spec import LABEL_PREFIX
from recflow.metrics.ranking import auc
from recflow.models.base import RankingModel
from recflow.models.payload import from_payload
from recflow.serving.schema import feeds_from_frame, raw_schema

logger = logging.getLogger(__name__)


@dataclass
class Exported:
    """What one export produces: the graphs, the serving bundle, the report's summary."""

    onnx: onnx.ModelProto
    onnx_int8: onnx.ModelProto | None
    bundle: dict[str, Any]
    summary: dict[str, Any]


def export_ranking(payload: dict[str, Any], feature_spec: dict[str, Any],
                   test: pd.DataFrame | ParquetParts, test_metrics: dict[str, Any],
                   params: ExportParams, *, name: str | None = None) -> Exported:
    """Export one model; `params.quantize` adds the int8 graph, `name` labels the metadata."""
    started = time.perf_counter()
    test = test.head(params.parity_rows)  # a frame, or ParquetParts read up to that row
    spec = FeatureSpec.from_dict(feature_spec)
    name = name or payload.get("name") or payload["model"]
    model = from_payload(payload, spec)
    feeds = feeds_from_frame(test, model_input_schema(model, spec))
    metrics = {k: v for k, v in (test_metrics or {}).items()
               if isinstance(v, int | float | str | bool) or v is None}
    exported, fp32, expected, parity_summary = _checked_fp32(model, spec, feeds, metrics,
                                                             params, name)
    summary = {"model": payload["model"], **parity_summary}
    sessions = {"ort_fp32": session(fp32, threads=params.latency.threads)}
    int8 = None
    if params.quantize:
        label = LABEL_PREFIX + model.tasks[0]
        labels = test[label].to_numpy() if label in test else None
        int8, sessions["ort_int8"], quality = _int8(exported, feeds, expected, labels, params)
        summary.update(quality)
    summary.update(_latency(model, sessions, feeds, params.latency))
    summary["export_seconds"] = round(time.perf_counter() - started, 3)
    manifest = _manifest(model, spec, fp32, feature_spec, metrics, summary, params, name,
                         payload["model"])
    _log(name, summary)
    bundle = {"model": fp32, "model_int8": int8, "feature_spec": feature_spec,
              "manifest": manifest}
    return Exported(fp32, int8, bundle, summary)


def _checked_fp32(model: RankingModel, spec: FeatureSpec, feeds: dict[str, np.ndarray],
                  metrics: dict[str, Any], params: ExportParams, name: str
                  ) -> tuple[onnx.ModelProto, onnx.ModelProto, np.ndarray, dict[str, Any]]:
    """Export, check parity before and after onnxruntime's optimiser.

    Returns the exported graph (int8 quantises it), the optimised one, torch's scores
    and the parity part of the summary.
    """
    exported = export_onnx(model, spec, name=name, opset=params.opset,
                           metadata={"test_metrics": metrics,
                                     "graph_optimization": params.graph_optimization})
    expected = torch_scores(model, feeds)
    check = dict(tolerance=params.parity_tolerance, name=name,
                 batch_size=params.parity_batch_size, expected=expected)
    raw = parity(model, session(exported, level="disabled"), feeds, **check)
    fp32 = optimize_graph(exported, params.graph_optimization)
    optimised = parity(model, session(fp32, threads=params.latency.threads), feeds, **check)
    summary = {
        "opset": params.opset,
        "graph_optimization": params.graph_optimization,
        "rows": optimised["rows"],
        "max_abs_diff": optimised["max_abs_diff"],
        "mean_abs_diff": optimised["mean_abs_diff"],
        "max_abs_diff_unoptimized": raw["max_abs_diff"],
        "parity_tolerance": params.parity_tolerance,
        "inputs": list(feeds),
        "score_names": list(model.score_names),
        "onnx_bytes": fp32.ByteSize(),
        "quantized_auc_delta": None,
    }
    return exported, fp32, expected, summary


def _int8(exported: onnx.ModelProto, feeds: dict[str, np.ndarray], expected: np.ndarray,
          labels: np.ndarray | None, params: ExportParams) -> tuple[onnx.ModelProto, Any, dict]:
    """Dynamic int8 of the exported graph and what it costs in AUC against fp32."""
    int8 = quantize_int8(exported, per_channel=params.quantize_per_channel)
    set_metadata(int8, {"precision": "int8"})
    int8_session = session(int8, threads=params.latency.threads)
    scores = run(int8_session, feeds, params.parity_batch_size)
    auc_fp32 = auc(labels, expected[:, 0]) if labels is not None else float("nan")
    auc_int8 = auc(labels, scores[:, 0]) if labels is not None else float("nan")
    return int8, int8_session, {
        "quantized_auc_delta": _finite(auc_int8 - auc_fp32),
        "auc_fp32": _finite(auc_fp32), "auc_int8": _finite(auc_int8),
        "quantized_max_abs_diff": float(np.abs(scores - expected).max()) if len(expected) else 0.0,
        "onnx_int8_bytes": int8.ByteSize(),
    }


def _latency(model: RankingModel, sessions: dict[str, Any], feeds: dict[str, np.ndarray],
             lat: LatencyParams) -> dict[str, Any]:
    """p50/p99 per (variant, batch) as flat summary keys, plus the whole table."""
    table = latency_table(model, sessions, feeds, lat.batches, repeats=lat.repeats,
                          warmup=lat.warmup, threads=lat.threads, budget_s=lat.budget_s)
    out: dict[str, Any] = {"p50_ms_b1": None, "p50_ms_b1_torch": None}
    for variant, suffix in (("ort_fp32", ""), ("torch", "_torch"), ("ort_int8", "_int8")):
        for batch, stats in table.get(variant, {}).items():
            out[f"p50_ms_b{batch}{suffix}"] = stats["p50_ms"]
            out[f"p99_ms_b{batch}{suffix}"] = stats["p99_ms"]
    return {**out, "latency": table, "latency_threads": lat.threads}


def _manifest(model: RankingModel, spec: FeatureSpec, fp32: onnx.ModelProto,
              feature_spec: dict[str, Any], metrics: dict[str, Any], summary: dict[str, Any],
              params: ExportParams, name: str, registered: str) -> dict[str, Any]:
    schema = model_input_schema(model, spec)
    return {
        "name": name,
        "registered_model": registered,
        "recflow_version": recflow.__version__,
        "feature_spec_hash": spec.hash,
        "opset": params.opset,
        "graph_optimization": params.graph_optimization,
        "score_names": list(model.score_names),
        "input_schema": schema,
        "raw_schema": raw_schema(spec, [e["name"] for e in schema]),
        "parity": {"max_abs_diff": summary["max_abs_diff"], "rows": summary["rows"],
                   "tolerance": params.parity_tolerance},
        "quantized_auc_delta": summary["quantized_auc_delta"],
        "input_example_scores": input_example_scores(
            model, fp32.SerializeToString(), feature_spec, tolerance=params.parity_tolerance,
            name=name),
        "test_metrics": metrics,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _log(name: str, summary: dict[str, Any]) -> None:
    delta = summary["quantized_auc_delta"]
    logger.info("exported '%s': max|onnx-torch| %.2e on %d rows, p50 b1 %.3f ms (torch %.3f ms)%s",
                name, summary["max_abs_diff"], summary["rows"], summary["p50_ms_b1"] or 0,
                summary["p50_ms_b1_torch"] or 0,
                f", int8 AUC delta {delta:+.5f}" if delta is not None else "")


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
