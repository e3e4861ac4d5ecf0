"""Project pipelines.

Pipelines whose shape follows the YAML (one sub-pipeline per model entry) read
the parameters of the active env: through the session's own config loader when
a Kedro context exists (`kedro run --env X`, kedro-viz), else from KEDRO_ENV.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.framework.project import settings
from kedro.pipeline import Pipeline, pipeline
from kedro.utils import find_kedro_project

from recflow.config_checks import check_parameters
from recflow.hooks import active_config_loader
from recflow.pipelines import (
    distillation,
    export,
    preprocessing,
    preprocessing_spark,
    preprocessing_streaming,
    ranking,
    retrieval,
    semantic_ids,
)


def _parameters() -> dict[str, Any]:
    loader = active_config_loader()
    if loader is not None:
        return loader["parameters"]
    project = find_kedro_project(Path.cwd()) or Path.cwd()
    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(project / settings.CONF_SOURCE),
        env=os.environ.get("KEDRO_ENV"),
        **settings.CONFIG_LOADER_ARGS,
    )
    return loader["parameters"]


def register_pipelines() -> dict[str, Pipeline]:
    params = _parameters()
    check_parameters(params)  # unknown blocks, per-entry overrides: refused before any node runs
    model_names = list((params.get("ranking") or {}).get("models") or {})
    sem = semantic_ids.create_pipeline(**semantic_ids.pipeline_kwargs(params))
    prep_kwargs = preprocessing.pipeline_kwargs(params)
    prep = preprocessing.create_pipeline(**prep_kwargs)
    sid_tables = [f"semantic_ids.{t}.table" for t in prep_kwargs["semantic_tokenizers"]]
    if sid_tables:  # semantic_prefix fields read semantic-ID tables: fit those tokenizers first
        prep = sem.to_outputs(*sid_tables) + prep
    exporting = export.create_pipeline(**export.pipeline_kwargs(params))
    ranked = ranking.create_pipeline(model_names=model_names) + exporting
    pipelines = {
        "preprocessing": prep,
        "ranking": prep + ranked,
        "export": exporting,
    }
    retrieval_models = (params.get("retrieval") or {}).get("models") or {}
    # semantic IDs and retrieval read the canonical tables the declaration's nodes prepare
    def prepared(*names: str) -> Pipeline:  # a dataset without item key has no `items`
        return prep.to_outputs(*(n for n in names if n in prep.all_outputs()))

    # the tables `sem` reads (+ interactions, split_cutoffs for a collaborative encoder)
    pipelines["semantic_ids"] = prepared(*sem.inputs()) + sem
    pipelines["retrieval"] = (
        prepared("interactions", "items", "split_cutoffs") + sem
        + retrieval.create_pipeline(models=retrieval_models)
    )
    pipelines["distillation"] = prep + distillation.create_pipeline(
        **distillation.pipeline_kwargs(params)
    )
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    # Alternatives to `preprocessing` writing the same outputs, so not in __default__.
    sides = list(prep_kwargs["side_tables"])
    streaming = prep.only_nodes(*(f"prepare_{name}" for name in sides)) \
        + preprocessing_streaming.create_pipeline(side_tables=sides)
    pipelines["preprocessing_streaming"] = streaming
    pipelines["preprocessing_spark"] = preprocessing_spark.create_pipeline()
    # `ranking` on splits larger than memory: the same nodes read the parquet parts.
    shards = {f"model_input_{s}": f"model_input_shards@{s}" for s in ("train", "valid", "test")
              if f"model_input_{s}" in ranked.inputs()}
    pipelines["ranking_streaming"] = streaming + pipeline(ranked, inputs=shards)
    return pipelines
