"""Wiring of the preprocessing pipeline; datasets are declared in conf/*/catalog.yml."""

from kedro.pipeline import Pipeline, node

from recflow.pipelines.preprocessing import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(nodes.join_events, ["raw_interactions", "raw_users", "raw_items"], "events",
                 name="join_events"),
            node(nodes.split_by_time, ["events", "params:preprocessing"], "split_cutoffs",
                 name="split_by_time"),
            node(nodes.fit_feature_spec, ["events", "split_cutoffs", "params:preprocessing"],
                 "feature_spec", name="fit_feature_spec"),
            node(nodes.transform_train, ["events", "feature_spec"], "model_input_train",
                 name="transform_train"),
            node(nodes.transform_valid, ["events", "feature_spec"], "model_input_valid",
                 name="transform_valid"),
            node(nodes.transform_test, ["events", "feature_spec"], "model_input_test",
                 name="transform_test"),
            node(nodes.report_data_quality,
                 ["model_input_train", "model_input_valid", "model_input_test"],
                 "data_quality", name="report_data_quality"),
        ]
    )
