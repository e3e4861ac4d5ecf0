"""Export nodes of the retrieval pipeline: a trained payload -> ONNX graphs + item vectors.

One node per exportable YAML entry (``sasrec``, ``two_tower``, ``tiger``; popularity
has nothing to export). Parity is checked on the entry's real test histories (the
same ones `train_and_evaluate` scores: `recflow.evaluation.retrieval_protocol.build_data`),
against ``export.parity_tolerance`` and at ``export.opset`` /
``export.graph_optimization`` (parameters_export.yml); a failed check raises before
anything is saved. The per-model work lives in
`recflow.export.retrieval`.
"""

from __future__ import annotations

import logging
from typing import Any

import onnx
import pandas as pd

from recflow.evaluation.retrieval_params import RetrievalParams
from recflow.evaluation.retrieval_protocol import build_data
from recflow.export.params import ExportParams
from recflow.export.retrieval import EXPORTABLE, export_retriever

logger = logging.getLogger(__name__)

#: histories the parity checks run on (the first ones of the test period)
PARITY_ROWS = 1024

#: what each exportable model writes, in node-output order (catalog: retrieval.{name}.{key})
OUTPUTS: dict[str, tuple[str, ...]] = {
    "sasrec": ("user_onnx", "item_vectors", "export_report"),
    "two_tower": ("user_onnx", "item_onnx", "item_vectors", "export_report"),
    "tiger": ("step_onnx", "export_report"),
}
_KEYS = {"user_onnx": ("user_encoder", "user_tower"), "item_onnx": ("item_tower",),
         "step_onnx": ("decoder_step",), "item_vectors": ("item_vectors",),
         "export_report": ("report",)}

assert set(OUTPUTS) == set(EXPORTABLE)


def export_retrieval_model(payload: dict[str, Any], interactions: pd.DataFrame,
                           items: pd.DataFrame, cutoffs: dict[str, Any],
                           params: RetrievalParams, export: ExportParams, name: str
                           ) -> tuple[Any, ...]:
    """Outputs in `OUTPUTS[payload["model"]]` order: ONNX graph(s), item vectors, report."""
    kind = payload["model"]
    if kind not in OUTPUTS:
        raise ValueError(f"retrieval entry '{name}': model '{kind}' has no export "
                         f"(exportable: {sorted(OUTPUTS)})")
    _, evalset = build_data(interactions, items, cutoffs, params)
    histories = evalset.histories[:PARITY_ROWS]
    out = export_retriever(payload, histories, name=name, opset=export.opset,
                           tolerance=export.parity_tolerance, level=export.graph_optimization)
    report = out["report"]
    logger.info("exported retrieval '%s' (%s): max|onnx-torch| %.2e on %d histories", name,
                kind, report["max_abs_diff"], report["rows"])
    result = []
    for key in OUTPUTS[kind]:
        value = next(out[k] for k in _KEYS[key] if k in out)
        if key.endswith("_onnx") and not isinstance(value, onnx.ModelProto):
            raise TypeError(f"export of '{name}' returned {type(value).__name__} for {key}")
        result.append(value)
    return tuple(result)
