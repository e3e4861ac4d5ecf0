"""Out-of-core preprocessing: time-ordered raw shards -> feature spec + sharded model inputs."""

from recflow.pipelines.preprocessing_streaming.pipeline import create_pipeline

__all__ = ["create_pipeline"]
