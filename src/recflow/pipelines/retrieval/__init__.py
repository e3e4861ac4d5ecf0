"""retrieval pipeline."""

from recflow.pipelines.retrieval.pipeline import create_pipeline

__all__ = ["create_pipeline"]
