"""`export` block wiring: which entries the export pipeline gets (the typed block is library-owned)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from recflow.export.params import ExportParams, LatencyParams

__all__ = ["ExportParams", "LatencyParams", "pipeline_kwargs"]

_FILE = "parameters_export.yml"


def pipeline_kwargs(parameters: dict[str, Any]) -> dict[str, Any]:
    """`create_pipeline` arguments from the active env's parameters (for pipeline_registry.py)."""
    try:
        export = ExportParams.model_validate(parameters.get("export") or {})
    except ValidationError as exc:
        problems = "; ".join(f"export.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"{_FILE}: {problems}") from None
    ranking = list((parameters.get("ranking") or {}).get("models") or {})
    names = ranking if export.models is None else list(dict.fromkeys(export.models))
    return {"model_names": names, "quantize": export.quantize}
