"""Ranking: one namespaced sub-pipeline per YAML model entry, then one shared report.

kedro-viz shows the entries side by side under `ranking`, and `--namespaces ranking.deepfm`
runs one (catalog names `ranking.<entry>.model`, like `retrieval.<entry>.model`).
The `ranking_streaming` pipeline maps the three splits to the parquet parts
`preprocessing_streaming` writes (`model_input_shards@{split}`); the nodes take both.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from recflow.evaluation.ranking import item_train_stats
from recflow.pipelines.ranking import nodes

SHARED_INPUTS = {"model_input_train", "model_input_valid", "model_input_test", "feature_spec",
                 "ranking_item_stats"}


def _model_template() -> Pipeline:
    return Pipeline(
        [
            node(nodes.train_model,
                 ["model_input_train", "model_input_valid", "feature_spec",
                  "params:entry", "params:ranking.trainer", "params:ranking.seeds"],
                 ["model", "history", "seed_models"], name="train"),
            node(nodes.score_seeds, ["seed_models", "model_input_test", "feature_spec"],
                 ["test_scores", "seed_scores"], name="score_test"),
            node(nodes.evaluate_seeds,
                 ["seed_scores", "history", "ranking_item_stats", "params:ranking"], "seed_runs",
                 name="evaluate_seeds"),
            node(nodes.evaluate_model,
                 ["test_scores", "history", "ranking_item_stats", "params:ranking"], "metrics",
                 name="evaluate"),
        ]
    )


def create_pipeline(model_names: list[str] | None = None, **kwargs) -> Pipeline:
    """`model_names` are the keys of `ranking.models` in parameters_ranking.yml."""
    model_names = list(model_names or [])
    if not model_names:
        return Pipeline([])
    per_model = [
        pipeline(
            _model_template(),
            namespace=f"ranking.{name}",
            inputs=SHARED_INPUTS,
            parameters={"params:entry": f"params:ranking.models.{name}",
                        "params:ranking.trainer": "params:ranking.trainer",
                        "params:ranking.seeds": "params:ranking.seeds",
                        "params:ranking": "params:ranking"},
        )
        for name in model_names
    ]
    report_inputs = {"params": "params:ranking", "item_stats": "ranking_item_stats",
                     "train": "model_input_train",
                     "valid": "model_input_valid", "test": "model_input_test",
                     "feature_spec": "feature_spec"}
    for name in model_names:
        report_inputs.update({f"metrics__{name}": f"ranking.{name}.metrics",
                              f"scores__{name}": f"ranking.{name}.test_scores",
                              f"history__{name}": f"ranking.{name}.history",
                              f"seed_runs__{name}": f"ranking.{name}.seed_runs"})
    shared = Pipeline([
        node(item_train_stats, "model_input_train", "ranking_item_stats",
             name="item_train_stats"),
        node(nodes.report_ranking, report_inputs,
             ["ranking_metrics", "ranking_roc_plot", "ranking_calibration_plot",
              "ranking_learning_curves"], name="report_ranking"),
    ])
    return sum(per_model, Pipeline([])) + shared
