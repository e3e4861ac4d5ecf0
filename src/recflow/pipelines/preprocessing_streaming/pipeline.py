"""Wiring of the streaming preprocessing pipeline; datasets are declared in conf/*/catalog.yml.

The side tables are the canonical `users` / `items` the preprocessing pipeline's prepare
nodes make from the dataset declaration (pipeline_registry.py puts those nodes first).
"""

from kedro.pipeline import Pipeline, node

from recflow.pipelines.preprocessing_streaming import nodes


def create_pipeline(side_tables: list[str] | None = None, **kwargs) -> Pipeline:
    """`side_tables`: which of `users` / `items` the dataset declares (default both)."""
    side = {name: name for name in (["users", "items"] if side_tables is None else side_tables)}
    return Pipeline(
        [
            node(nodes.split_shards, ["raw_interaction_timestamps", "params:preprocessing",
                                      "params:dataset"],
                 ["split_cutoffs", "interaction_shard_stats"], name="split_shards"),
            node(nodes.fit_feature_spec_streaming,
                 {"interactions": "raw_interaction_shards", "cutoffs": "split_cutoffs",
                  "shard_stats": "interaction_shard_stats", "params": "params:preprocessing",
                  "streaming": "params:preprocessing_streaming", "dataset": "params:dataset",
                  **side},
                 "feature_spec", name="fit_feature_spec_streaming"),
            # one output, read back per split as model_input_shards@{train,valid,test}
            node(nodes.transform_shards_node,
                 {"interactions": "raw_interaction_shards", "feature_spec": "feature_spec",
                  "dataset": "params:dataset", **side},
                 "model_input_shards@splits", name="transform_shards"),
        ]
    )
