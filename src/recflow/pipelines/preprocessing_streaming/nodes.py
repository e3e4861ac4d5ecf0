"""Streaming preprocessing nodes: one shard in memory at a time; the catalog does the I/O.

Raw shards arrive as `PartitionedDataset` loaders (name -> callable), so nothing
is read until a pass asks for it. Each shard goes through the dataset declaration
(`recflow.datasets.prepare`: validated, canonical, side tables joined) exactly as the
in-memory log does: shards hold disjoint time ranges, so sorting a shard sorts the log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pandas as pd

from recflow.datasets.declaration import DatasetDeclaration
from recflow.datasets.prepare import join_tables, prepare_log, to_epoch_seconds
from recflow.features import FeaturesConfig
from recflow.features.columns import check_columns
from recflow.features.out_of_core import fit_spec_streaming, shard_cutoffs, transform_shards
from recflow.pipelines.preprocessing_streaming.params import PreprocessingStreamingParams

Loaders = dict[str, Callable[[], pd.DataFrame]]


def _prepare_shard(shard: pd.DataFrame, dataset: DatasetDeclaration,
                   side: dict[str, pd.DataFrame]) -> pd.DataFrame:
    log = prepare_log(dataset, {"raw_interaction_shards": shard},
                      source="raw_interaction_shards")
    return join_tables(log, dataset, side)


def _joiner(dataset: DatasetDeclaration, side: dict[str, pd.DataFrame]):
    return partial(_prepare_shard, dataset=dataset, side=side)


def split_shards(
    interaction_timestamps: Loaders, params: FeaturesConfig, dataset: DatasetDeclaration
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Global temporal cut-offs (exact, as `split_by_time`) and per-shard time bounds."""
    time = dataset.events.time
    if time is None:
        raise ValueError("streaming preprocessing orders shards in time, but the dataset "
                         "declares no event time (dataset.events.time)")
    seconds = partial(to_epoch_seconds, decl=time, where="raw_interaction_timestamps")
    return shard_cutoffs(interaction_timestamps, params, column=time.column,
                         to_seconds=lambda values: seconds(values).to_numpy())


def fit_feature_spec_streaming(
    interactions: Loaders,
    cutoffs: dict[str, Any],
    shard_stats: dict[str, Any],
    params: FeaturesConfig,
    streaming: PreprocessingStreamingParams,
    dataset: DatasetDeclaration,
    **side: pd.DataFrame,
) -> dict[str, Any]:
    """The feature spec, fitted in one pass over the train shards (`side`: prepared
    `users` / `items`, as the declaration has them)."""
    spec = fit_spec_streaming(
        interactions, _joiner(dataset, side), cutoffs, shard_stats,
        params, quantile_max_distinct=streaming.quantile_max_distinct,
        check_columns=partial(check_columns, params=params, log="raw_interaction_shards"),
    )
    return {**spec, **dataset.serving_contract()}


def transform_shards_node(
    interactions: Loaders, feature_spec: dict[str, Any], dataset: DatasetDeclaration,
    **side: pd.DataFrame,
) -> Iterator[dict[str, pd.DataFrame]]:
    """Per shard, its {train, valid, test} rows; Kedro saves each as the next parts.

    One output per chunk (a dict), not three: see `ShardedSplitsDataset` for why.
    """
    yield from transform_shards(interactions, _joiner(dataset, side), feature_spec)
