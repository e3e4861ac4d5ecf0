"""Typed `export` parameters (conf/*/parameters_export.yml); Kedro validates them before any node runs.

The block belongs to the export library (`recflow.export`): the export, distillation and
retrieval pipelines all read it, and none of them owns it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from recflow.config_types import MAX_COUNT, MAX_ROWS, BatchSize, StrictModel


class LatencyParams(StrictModel):
    """Latency measured per call, torch eager vs onnxruntime fp32 (vs int8), same threads."""

    batches: list[BatchSize] = Field(default_factory=lambda: [1, 64, 1024], min_length=1)
    repeats: PositiveInt = Field(100, le=MAX_COUNT, description="Timed calls per (variant, batch).")
    warmup: int = Field(10, ge=0, le=MAX_COUNT)
    budget_s: float | None = Field(
        2.0, gt=0, description="Cap on timed seconds per (variant, batch); null = no cap.")
    threads: PositiveInt | None = Field(
        1, le=1024, description="Intra-op threads for torch and onnxruntime alike; null = library default.")


class ExportParams(StrictModel):
    """The whole `export` block. `models` and `quantize` shape the pipeline (read at registration)."""

    models: list[str] | None = Field(
        None, min_length=1, description="Entries to export; null = every ranking.models entry.")
    opset: int = Field(17, ge=14, le=20)
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = Field(
        "basic", description="onnxruntime offline optimisation level of the saved graph.")
    parity_tolerance: float = Field(1e-5, ge=0, description="Max |onnx - torch| on the test split.")
    parity_rows: PositiveInt = Field(
        200_000, le=MAX_ROWS, description="Parity, int8 AUC cost and latency use the first this many test "
                             "rows (a sharded test split is never loaded whole).")
    parity_batch_size: BatchSize = 8192
    quantize: bool = Field(True, description="Also write a dynamic int8 variant and its AUC cost.")
    quantize_per_channel: bool = False
    latency: LatencyParams = LatencyParams()
