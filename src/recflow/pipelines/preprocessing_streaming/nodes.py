"""Streaming preprocessing nodes: one shard in memory at a time; the catalog does the I/O.

Raw shards arrive as `PartitionedDataset` loaders (name -> callable), so nothing
is read until a pass asks for it. Joining reuses the in-memory `join_events` per
shard: shards hold disjoint time ranges, so sorting within a shard is sorting the log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pandas as pd

from recflow.features import FeaturesConfig
from recflow.features.streaming import fit_spec_streaming, shard_cutoffs, transform_shards
from recflow.pipelines.preprocessing.nodes import check_columns, join_events
from recflow.pipelines.preprocessing_streaming.params import PreprocessingStreamingParams

Loaders = dict[str, Callable[[], pd.DataFrame]]


def split_shards(
    interaction_timestamps: Loaders, params: FeaturesConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Global temporal cut-offs (exact, as `split_by_time`) and per-shard time bounds."""
    return shard_cutoffs(interaction_timestamps, params)


def fit_feature_spec_streaming(
    interactions: Loaders,
    users: pd.DataFrame,
    items: pd.DataFrame,
    cutoffs: dict[str, Any],
    shard_stats: dict[str, Any],
    params: FeaturesConfig,
    streaming: PreprocessingStreamingParams,
) -> dict[str, Any]:
    """The feature spec, fitted in one pass over the train shards."""
    return fit_spec_streaming(
        interactions, partial(join_events, users=users, items=items), cutoffs, shard_stats,
        params, quantile_max_distinct=streaming.quantile_max_distinct,
        check_columns=partial(check_columns, params=params, log="raw_interaction_shards"),
    )


def transform_shards_node(
    interactions: Loaders, users: pd.DataFrame, items: pd.DataFrame,
    feature_spec: dict[str, Any],
) -> Iterator[dict[str, pd.DataFrame]]:
    """Per shard, its {train, valid, test} rows; Kedro saves each as the next parts.

    One output per chunk (a dict), not three: see `ShardedSplitsDataset` for why.
    """
    yield from transform_shards(interactions, partial(join_events, users=users, items=items),
                                feature_spec)
