"""The default pipelines' wiring, run in memory as Kedro's spaceflights tests do.

No project on disk, no session: the pipelines `pipeline_registry` builds, a
`DataCatalog` of in-memory datasets holding a small generated data set, the base
env's parameters with a tiny training budget, and Kedro's `SequentialRunner`. The
slow suite runs the same pipelines through `kedro run` from disk.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro.validation.parameter_validator import ParameterValidator
from kedro.validation.utils import get_typed_fields

from recflow import settings
from recflow.datasets.synthetic import GeneratorConfig, generate
from recflow.pipelines import export, preprocessing, ranking

REPO = Path(__file__).resolve().parents[2]


def _parameters() -> dict[str, Any]:
    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(REPO / "conf"),
                                           **settings.CONFIG_LOADER_ARGS)
    params = copy.deepcopy(loader["parameters"])
    params["ranking"]["models"] = {k: params["ranking"]["models"][k] for k in ("lr", "din")}
    params["ranking"]["trainer"].update(epochs=1, batch_size=256, checkpoint_dir=None)
    params["ranking"].setdefault("seeds", None)
    params["export"].update(models=["din"], quantize=False,
                            latency={"batches": [1], "repeats": 2, "warmup": 0})
    return params


def _feed(params: dict[str, Any], prefix: str = "params:") -> dict[str, Any]:
    """`params:a`, `params:a.b`, ... for every nested dict, as Kedro's context feeds them."""
    feed = {}
    for key, value in params.items():
        feed[prefix + key] = value
        fields = value if isinstance(value, dict) else get_typed_fields(value)
        if fields is not None:
            feed.update(_feed(fields, f"{prefix}{key}."))
    return feed


@pytest.fixture(scope="module")
def outputs() -> dict[str, Any]:
    params = _parameters()
    tables = generate(GeneratorConfig(n_users=60, n_items=90, n_impressions=3000, seed=1))
    pipe = preprocessing.create_pipeline(**preprocessing.pipeline_kwargs(params))
    pipe += ranking.create_pipeline(model_names=list(params["ranking"]["models"]))
    pipe += export.create_pipeline(**export.pipeline_kwargs(params))
    # typed node parameters (pydantic models), as a Kedro session validates them
    params = ParameterValidator({"ranking": pipe}).validate_raw_params(params)
    catalog = DataCatalog({
        "raw_interactions": MemoryDataset(tables.interactions),
        "raw_users": MemoryDataset(tables.users), "raw_items": MemoryDataset(tables.items),
        "parameters": MemoryDataset(params),
        **{k: MemoryDataset(v) for k, v in _feed(params).items()},
    })
    done = SequentialRunner().run(pipe, catalog)  # the outputs no node consumes
    return {name: done[name].load() if hasattr(done[name], "load") else done[name]
            for name in done}


def test_ranking_in_memory_trains_evaluates_and_exports(outputs: dict[str, Any]) -> None:
    metrics = outputs["ranking_metrics"]
    assert set(metrics["models"]) == {"lr", "din", "popularity"} and metrics["rows"] > 0
    assert all(0.4 < m["auc"] <= 1 for m in metrics["models"].values())
    assert set(outputs) >= {"ranking_roc_plot", "ranking_learning_curves", "data_quality", "export.din.onnx"}
    assert outputs["export_report"]["models"]["din"]["max_abs_diff"] <= 1e-5
    bundle = outputs["export.din.serving_bundle"]
    assert bundle["manifest"]["input_example_scores"]
    assert bundle["feature_spec"]["input_example"][0]["item_id"] is not None
