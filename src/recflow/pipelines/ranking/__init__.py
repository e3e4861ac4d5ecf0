"""Train, evaluate and compare the ranking models listed in parameters_ranking.yml."""

from recflow.pipelines.ranking.pipeline import create_pipeline

__all__ = ["create_pipeline"]
