"""semantic_ids pipeline."""

from recflow.pipelines.semantic_ids.pipeline import create_pipeline, pipeline_kwargs

__all__ = ["create_pipeline", "pipeline_kwargs"]
