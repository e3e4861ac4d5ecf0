"""ONNX export of any registered recflow model: export, parity, optimisation, quantisation.

One path serves every model: the graph inputs come from the FeatureSpec and
`model.input_names` (see `recflow.serving.schema`), the graph output is
`model.predict(model(inputs))`. Submodules import torch lazily, so importing
`recflow.export` itself stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ParityError",
    "export_onnx",
    "latency_table",
    "optimize_graph",
    "parity",
    "quantize_int8",
    "read_metadata",
]

_SOURCES = {
    "export_onnx": "recflow.export.onnx_export",
    "read_metadata": "recflow.export.onnx_export",
    "optimize_graph": "recflow.export.runtime",
    "quantize_int8": "recflow.export.runtime",
    "ParityError": "recflow.export.checks",
    "parity": "recflow.export.checks",
    "latency_table": "recflow.export.checks",
}


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(_SOURCES[name]), name)
