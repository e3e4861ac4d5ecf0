"""Wiring of the Spark preprocessing pipeline; its datasets live in conf/spark/catalog.yml."""

from kedro.pipeline import Pipeline, node

from recflow.pipelines.preprocessing_spark import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(nodes.join_events_spark,
                 ["raw_interactions_spark", "raw_users_spark", "raw_items_spark"],
                 "events_spark", name="join_events_spark"),
            node(nodes.split_by_time_spark, ["events_spark", "params:preprocessing"],
                 "split_cutoffs", name="split_by_time_spark"),
            node(nodes.fit_feature_spec_spark,
                 ["events_spark", "split_cutoffs", "params:preprocessing", "params:dataset"],
                 "feature_spec", name="fit_feature_spec_spark"),
            node(nodes.transform_spark, ["events_spark", "feature_spec"],
                 ["model_input_train_shards", "model_input_valid_shards",
                  "model_input_test_shards"],
                 name="transform_spark"),
        ]
    )
