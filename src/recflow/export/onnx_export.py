"""torch -> ONNX for any RankingModel, with the serving contract stamped into the metadata.

Nothing here is model-specific. The graph's inputs are the spec fields the
model reads (`model.input_names`), typed and shaped by `recflow.serving.schema`
(dynamic `batch` axis; sequences padded to the spec length, masked in-graph by
`ids != 0`); its single output `scores` is `model.predict(model(inputs))`. A
model whose inputs are not plain spec fields can declare its own schema with an
`onnx_input_schema(spec) -> list[dict]` method; the exporter only reads it.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

import recflow
from recflow.features import FeatureSpec
from recflow.models.base import RankingModel
from recflow.registry import MODELS
from recflow.serving.schema import OUTPUT_NAME, dynamic_axes, input_schema

DEFAULT_OPSET = 17
_TORCH_DTYPES = {"int64": torch.int64, "float32": torch.float32}


class _Positional(nn.Module):
    """Positional tensors in schema order -> predict(forward(dict)): what the graph computes."""

    def __init__(self, model: RankingModel, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model.predict(self.model(dict(zip(self.names, tensors, strict=True))))


def model_input_schema(model: RankingModel, spec: FeatureSpec) -> list[dict[str, Any]]:
    """The model's own declaration if it has one, else derived from the spec + input_names."""
    declared = getattr(model, "onnx_input_schema", None)
    if callable(declared):
        return list(declared(spec))
    return input_schema(spec, list(model.input_names))


def example_inputs(schema: list[dict[str, Any]], batch: int = 3, seed: int = 0
                   ) -> dict[str, torch.Tensor]:
    """Valid random inputs of each declared dtype/shape (ids within the vocabulary, padding kept).

    Tracing uses a batch > 1 so no batch-1 shape is baked into the graph.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for e in schema:
        shape = [batch if isinstance(d, str) else int(d) for d in e["shape"]]
        if e["dtype"] == "float32":
            values = rng.standard_normal(shape).astype(np.float32)
        else:
            high = int(e.get("vocab_size") or 2)
            values = rng.integers(0, high, size=shape, dtype=np.int64)
            if len(shape) == 2:  # left padding of varying length, one row without history
                pad = rng.integers(0, shape[1] + 1, size=(shape[0], 1))
                values = np.where(np.arange(shape[1])[None, :] < pad, e.get("padding_id", 0),
                                  np.maximum(values, 1))
        out[e["name"]] = torch.from_numpy(np.ascontiguousarray(values)).to(
            _TORCH_DTYPES[e["dtype"]])
    return out


def registered_name(model: nn.Module) -> str:
    return next((c.name for c in MODELS if c.target is type(model)), type(model).__name__)


def export_onnx(model: RankingModel, spec: FeatureSpec, *, name: str,
                opset: int = DEFAULT_OPSET, metadata: dict[str, Any] | None = None
                ) -> onnx.ModelProto:
    """Trace `model` (eval mode) to a checked ONNX graph carrying recflow's metadata.

    `metadata` adds or overrides `metadata_props` (values that are not strings are
    stored as JSON). The model is left in eval mode.
    """
    model.eval()
    schema = model_input_schema(model, spec)
    names = [e["name"] for e in schema]
    # the legacy exporter restores the *wrapper's* training flag on the way out, which
    # would flip the inner model (BatchNorm, Dropout) back to train mode: eval both
    wrapper = _Positional(model, names).eval()
    inputs = example_inputs(schema)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False, on purpose
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper, tuple(inputs[n] for n in names), buffer, dynamo=False,
            opset_version=opset, input_names=names, output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes(schema), do_constant_folding=True,
        )
    model.eval()
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    proto.producer_name, proto.producer_version = "recflow", recflow.__version__
    proto.doc_string = f"recflow model '{name}' ({registered_name(model)}): scores = " \
                       f"{model.score_names} probabilities"
    set_metadata(proto, {
        "model_name": name,
        "registered_model": registered_name(model),
        "recflow_version": recflow.__version__,
        "feature_spec_hash": spec.hash,
        "input_schema": schema,
        "output_name": OUTPUT_NAME,
        "score_names": list(model.score_names),
        "opset": opset,
        "precision": "fp32",
        **(metadata or {}),
    })
    return proto


def set_metadata(proto: onnx.ModelProto, values: dict[str, Any]) -> onnx.ModelProto:
    """Merge `values` into `metadata_props` (strings kept, everything else JSON-encoded)."""
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
                  for k, v in values.items()})
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    return proto


def read_metadata(proto: onnx.ModelProto) -> dict[str, Any]:
    """`metadata_props` with JSON objects/lists (and the opset) decoded; strings stay strings."""
    out: dict[str, Any] = {}
    for prop in proto.metadata_props:
        value: Any = prop.value
        if value[:1] in ("{", "[") or prop.key == "opset":
            value = json.loads(value)
        out[prop.key] = value
    return out
