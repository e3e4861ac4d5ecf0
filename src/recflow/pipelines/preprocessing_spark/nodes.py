"""Spark preprocessing nodes: thin wrappers over `recflow.features.spark` (pyspark imported lazily)."""

from __future__ import annotations

from typing import Any

from recflow.datasets.declaration import DatasetDeclaration
from recflow.features import FeaturesConfig


def join_events_spark(interactions: Any, users: Any, items: Any) -> Any:
    """Impressions joined with user and item attributes (a lazy Spark DataFrame)."""
    from recflow.features.spark import join_events

    return join_events(interactions, users, items)


def split_by_time_spark(events: Any, params: FeaturesConfig) -> dict[str, Any]:
    """The same global cut-offs as `split_by_time`, from exact order statistics."""
    from recflow.features.spark import split_cutoffs

    return split_cutoffs(events, params)


def fit_feature_spec_spark(
    events: Any, cutoffs: dict[str, Any], params: FeaturesConfig, dataset: DatasetDeclaration
) -> dict[str, Any]:
    """The feature spec, fitted with Spark aggregations on the train split.

    Spark reads the canonical column names directly (`conf/spark/catalog.yml`); the
    declaration supplies the serving aliases like the in-memory pipeline's.
    """
    from recflow.features.spark import fit_spec

    return {**fit_spec(events, cutoffs, params), **dataset.serving_contract()}


def transform_spark(events: Any, feature_spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(train, valid, test) model inputs as Spark DataFrames, in time order."""
    from recflow.features.spark import transform

    out = transform(events, feature_spec)
    return out["train"], out["valid"], out["test"]
