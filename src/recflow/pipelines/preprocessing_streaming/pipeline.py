"""Wiring of the streaming preprocessing pipeline; datasets are declared in conf/*/catalog.yml."""

from kedro.pipeline import Pipeline, node

from recflow.pipelines.preprocessing_streaming import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(nodes.split_shards, ["raw_interaction_timestamps", "params:preprocessing"],
                 ["split_cutoffs", "interaction_shard_stats"], name="split_shards"),
            node(nodes.fit_feature_spec_streaming,
                 ["raw_interaction_shards", "raw_users", "raw_items", "split_cutoffs",
                  "interaction_shard_stats", "params:preprocessing",
                  "params:preprocessing_streaming"],
                 "feature_spec", name="fit_feature_spec_streaming"),
            # one output, read back per split as model_input_shards@{train,valid,test}
            node(nodes.transform_shards_node,
                 ["raw_interaction_shards", "raw_users", "raw_items", "feature_spec"],
                 "model_input_shards@splits", name="transform_shards"),
        ]
    )
