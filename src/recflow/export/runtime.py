"""onnxruntime's own tools on an exported graph: sessions, offline graph optimisation, int8.

Nothing is hand-rolled: optimisation is onnxruntime's graph optimiser run offline
(`SessionOptions.optimized_model_filepath`), quantisation is
`onnxruntime.quantization.quant_pre_process` + `quantize_dynamic` (int8 weights,
activations quantised on the fly: MatMul/Gemm -> MatMulInteger, embedding
Gather on int8 tables).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort

from recflow.serving.schema import OUTPUT_NAME

OptimizationLevel = Literal["disabled", "basic", "extended", "all"]
_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_PROVIDERS = ["CPUExecutionProvider"]


def session(model: onnx.ModelProto | bytes | str | Path, threads: int | None = None,
            level: OptimizationLevel = "all") -> ort.InferenceSession:
    """A CPU inference session; `threads` pins intra-op threads (inter-op: 1)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[level]
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source if isinstance(source, bytes) else str(source),
                                options, providers=_PROVIDERS)


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray],
        batch_size: int = 8192) -> np.ndarray:
    """`scores` for all rows of `feeds`, in chunks of `batch_size` rows."""
    n = len(next(iter(feeds.values()))) if feeds else 0
    chunks = [sess.run([OUTPUT_NAME], {k: v[i:i + batch_size] for k, v in feeds.items()})[0]
              for i in range(0, n, batch_size)]
    if not chunks:
        return np.zeros((0, sess.get_outputs()[0].shape[-1]), dtype=np.float32)
    return np.concatenate(chunks)


def optimize_graph(proto: onnx.ModelProto, level: OptimizationLevel = "extended"
                   ) -> onnx.ModelProto:
    """The graph after onnxruntime's optimiser at `level`, saved offline.

    `basic` keeps standard ONNX ops only (portable to any runtime); `extended`
    adds onnxruntime fusions (FusedGemm, FusedMatMul, ... in the com.microsoft
    domain); `all` also applies layout changes tied to this machine's CPU, so
    onnxruntime advises against shipping it. Metadata is carried over.
    """
    if level == "disabled":
        return _copy(proto)
    with tempfile.TemporaryDirectory(prefix="recflow-ort-") as tmp:
        target = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = _LEVELS[level]
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(proto.SerializeToString(), options, providers=_PROVIDERS)
        optimized = onnx.load(str(target))
    _carry_metadata(proto, optimized)
    return optimized


def quantize_int8(proto: onnx.ModelProto, per_channel: bool = False) -> onnx.ModelProto:
    """Dynamic int8 quantisation by onnxruntime.quantization (weights int8, activations u8).

    Runs onnxruntime's recommended pre-processing first (ONNX shape inference +
    basic optimisation; symbolic shape inference is skipped because it cannot
    follow the Reshape chains of attention models such as AutoInt).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="recflow-quant-") as tmp:
        source, prepared, target = (Path(tmp) / n for n in ("in.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(proto, str(source))
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8,
                         per_channel=per_channel)
        quantized = onnx.load(str(target))
    _carry_metadata(proto, quantized)
    return quantized


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def _carry_metadata(source: onnx.ModelProto, target: onnx.ModelProto) -> None:
    have = {p.key for p in target.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in have:
            target.metadata_props.add(key=prop.key, value=prop.value)
    target.producer_name, target.producer_version = source.producer_name, source.producer_version
    target.doc_string = source.doc_string
