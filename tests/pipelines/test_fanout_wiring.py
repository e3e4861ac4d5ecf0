"""Per-entry fan-out: one naming scheme, module-level node functions, typed parameters.

Fast (no run): the pipelines `pipeline_registry` builds from the base env, Kedro's own
parameter validator over all of them, and the base catalog's dataset factories.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.validation.parameter_validator import ParameterValidator

from recflow.evaluation.retrieval_params import RetrievalParams
from recflow.pipelines.semantic_ids.params import SemanticIdsParams

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registered() -> tuple[dict[str, Pipeline], dict[str, Any]]:
    from recflow import settings
    from recflow.pipeline_registry import register_pipelines

    mp = pytest.MonkeyPatch()
    mp.chdir(REPO)
    mp.delenv("KEDRO_ENV", raising=False)
    try:
        loader = settings.CONFIG_LOADER_CLASS(conf_source=str(REPO / "conf"),
                                               **settings.CONFIG_LOADER_ARGS)
        return register_pipelines(), loader["parameters"]
    finally:
        mp.undo()


def test_every_registered_pipeline_validates_its_typed_parameters(registered) -> None:
    """All pipelines at once, as `kedro run` without --pipelines scopes Kedro's validator:
    a child key typed after its typed parent block would fail here ("intermediate key")."""
    pipelines, params = registered
    validated = ParameterValidator(pipelines).validate_raw_params(params)
    assert isinstance(validated["retrieval"], RetrievalParams)
    assert isinstance(validated["semantic_ids"], SemanticIdsParams)


def test_node_functions_are_module_level_not_closures(registered) -> None:
    """An entry's name is bound with a partial of a module-level node function, never a
    function defined per entry (whose signature would be a hand-made copy)."""
    pipelines, _ = registered
    fanned = pipelines["retrieval"] + pipelines["semantic_ids"] + pipelines["export"]
    for n in fanned.nodes:
        func = n.func.func if isinstance(n.func, partial) else n.func
        assert getattr(sys.modules[func.__module__], func.__name__, None) is func, n.name
        if isinstance(n.func, partial):
            assert set(n.func.keywords) == {"name"} and n.func.__name__ == func.__name__


def test_entries_are_namespaced_like_ranking(registered) -> None:
    pipelines, params = registered
    retrieval, sids = pipelines["retrieval"], pipelines["semantic_ids"]
    for name in params["retrieval"]["models"]:
        ns = f"retrieval.{name}"
        train = next(n for n in retrieval.nodes if n.name == f"{ns}.train")
        assert train.namespace == ns and train.func.keywords == {"name": name}
        assert train.outputs == [f"{ns}.model", f"{ns}.metrics"]
    tiger = next(n for n in retrieval.nodes if n.name == "retrieval.tiger.train")
    assert "semantic_ids.rq_kmeans.table" in tiger.inputs
    assert {"retrieval.two_tower.user_onnx", "retrieval.two_tower.item_vectors",
            "retrieval.tiger.step_onnx"} <= retrieval.all_outputs()
    for name in params["semantic_ids"]["tokenizers"]:
        fit = next(n for n in sids.nodes if n.name == f"semantic_ids.{name}.fit")
        assert fit.outputs == [f"semantic_ids.{name}.{k}" for k in ("tokenizer", "table",
                                                                      "metrics")]
    exports = [n for n in pipelines["export"].nodes if n.name.endswith(".export_onnx")]
    assert exports and all(n.func.keywords == {"name": n.namespace.removeprefix("export.")}
                           for n in exports)
    trains = [n for n in pipelines["ranking"].nodes if n.name.endswith(".train")]
    assert trains and all(n.namespace.startswith("ranking.") for n in trains)
    for train in trains:  # ranking.<entry>, read by export.<entry>
        entry = train.namespace.removeprefix("ranking.")
        assert train.outputs == [f"ranking.{entry}.{k}" for k in ("model", "history",
                                                                    "seed_models")]
    for export in exports:
        entry = export.namespace.removeprefix("export.")
        assert {f"ranking.{entry}.model", f"ranking.{entry}.metrics"} <= set(export.inputs)
        assert f"export.{entry}.onnx" in export.outputs
    assert retrieval.only_nodes_with_namespaces(["retrieval.two_tower"]).all_outputs() == {
        "retrieval.two_tower." + k for k in ("model", "metrics", "user_onnx", "item_onnx",
                                             "item_vectors", "export_report")}


@pytest.mark.parametrize(("dataset", "path"), [
    ("retrieval.two_tower.model", "06_models/retrieval/two_tower.pt"),
    ("retrieval.two_tower.metrics", "08_reporting/retrieval/two_tower_metrics.json"),
    ("retrieval.sasrec.user_onnx", "07_model_output/retrieval/sasrec/user_encoder.onnx"),
    ("retrieval.two_tower.item_onnx", "07_model_output/retrieval/two_tower/item_tower.onnx"),
    ("retrieval.tiger.step_onnx", "07_model_output/retrieval/tiger/decoder_step.onnx"),
    ("retrieval.sasrec.item_vectors", "07_model_output/retrieval/sasrec/item_vectors.npy"),
    ("retrieval.tiger.export_report", "07_model_output/retrieval/tiger/export_report.json"),
    ("semantic_ids.rq_kmeans.tokenizer", "06_models/tokenizers/rq_kmeans.pt"),
    ("semantic_ids.rq_kmeans.table", "04_feature/semantic_ids/rq_kmeans.parquet"),
    ("semantic_ids.rq_kmeans.metrics", None),  # in memory: no pattern of another pipeline's
    ("ranking.din.model", "06_models/ranking/din.pt"),
    ("ranking.din.metrics", "08_reporting/ranking/din_metrics.json"),
    ("ranking.din.seed_runs", "08_reporting/ranking/din_seed_runs.json"),
    ("export.din.onnx", "07_model_output/onnx/din.onnx"),
    ("export.din.onnx_int8", "07_model_output/onnx/din.int8.onnx"),
])
def test_names_resolve_to_the_files_they_always_had(dataset: str, path: str | None) -> None:
    loader = OmegaConfigLoader(conf_source=str(REPO / "conf"), base_env="base",
                               default_run_env="local")
    ds = DataCatalog.from_config(loader["catalog"]).get(dataset)
    if path is None:
        assert isinstance(ds, MemoryDataset)
    else:
        where = getattr(ds, "_filepath", None) or getattr(ds, "_path", None)
        assert str(where).endswith(f"data/{path}"), (dataset, where)
