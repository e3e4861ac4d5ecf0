"""Export trained models to ONNX (+ int8), check parity, measure latency, write serving bundles."""

from recflow.pipelines.export.params import pipeline_kwargs
from recflow.pipelines.export.pipeline import create_pipeline

__all__ = ["create_pipeline", "pipeline_kwargs"]
