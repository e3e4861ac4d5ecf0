"""The preprocessing spec and transforms executed on Spark (`kedro run --env spark`)."""

from recflow.pipelines.preprocessing_spark.pipeline import create_pipeline

__all__ = ["create_pipeline"]
