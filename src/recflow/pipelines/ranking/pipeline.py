"""Ranking: one namespaced sub-pipeline per YAML model entry, then one shared report.

kedro-viz shows the entries side by side, and `--namespaces deepfm` runs one.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from recflow.pipelines.ranking import nodes

SHARED_INPUTS = {"model_input_train", "model_input_valid", "model_input_test", "feature_spec"}


def _model_template() -> Pipeline:
    return Pipeline(
        [
            node(nodes.train_model,
                 ["model_input_train", "model_input_valid", "feature_spec", "params:entry",
                  "params:ranking.trainer"],
                 ["model", "history"], name="train"),
            node(nodes.score_split, ["model", "model_input_test", "feature_spec"], "test_scores",
                 name="score_test"),
            node(nodes.evaluate_model, ["test_scores", "history"], "metrics", name="evaluate"),
        ]
    )


def create_pipeline(model_names: list[str] | None = None, **kwargs) -> Pipeline:
    """`model_names` are the keys of `ranking.models` in parameters_ranking.yml."""
    model_names = list(model_names or [])
    per_model = [
        pipeline(
            _model_template(),
            namespace=name,
            inputs=SHARED_INPUTS,
            parameters={"params:entry": f"params:ranking.models.{name}",
                        "params:ranking.trainer": "params:ranking.trainer"},
        )
        for name in model_names
    ]
    report_inputs = {"params": "params:ranking", "train": "model_input_train"}
    for name in model_names:
        report_inputs.update({f"metrics__{name}": f"{name}.metrics",
                              f"scores__{name}": f"{name}.test_scores",
                              f"history__{name}": f"{name}.history"})
    report = Pipeline(
        [node(nodes.report_ranking, report_inputs,
              ["ranking_metrics", "ranking_roc_plot", "ranking_calibration_plot",
               "ranking_learning_curves"], name="report_ranking")]
    ) if model_names else Pipeline([])
    return sum(per_model, Pipeline([])) + report
