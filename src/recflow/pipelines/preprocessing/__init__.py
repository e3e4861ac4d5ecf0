"""Raw interactions/users/items -> validated, split, transformed model inputs + FeatureSpec."""

from recflow.pipelines.preprocessing.pipeline import create_pipeline, pipeline_kwargs

__all__ = ["create_pipeline", "pipeline_kwargs"]
