"""The movielens env must change both parameters and output paths, as `kedro run --env` does."""

from __future__ import annotations

import os
from pathlib import Path

from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from tests.conftest import make_project


def test_env_parameters_and_paths_survive_pipeline_registration(tmp_path: Path,
                                                                monkeypatch) -> None:
    project = make_project(tmp_path / "project", n_users=40, n_items=60, n_impressions=800)
    monkeypatch.chdir(project)
    monkeypatch.delenv("KEDRO_ENV", raising=False)  # the CLI's --env does not export it
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="movielens") as session:
        context = session.load_context()
        pipelines.set_requested(None)
        ranking = pipelines["ranking"]  # built from the env's parameters_ranking.yml
        params = context.params
        catalog = context.catalog
        assert "ranking.din" in {n.namespace for n in ranking.nodes if n.namespace}
        assert params["ranking"].models["din"].params["sequence_field"] == "hist_category"
        # registering pipelines must not clobber the env's `${globals:out}`
        path = Path(str(catalog.get("feature_spec")._filepath))
        assert path.parts[-3:] == ("movielens", "05_model_input", "feature_spec.json"), path
    assert os.environ.get("KEDRO_ENV") is None


def test_streaming_env_keeps_its_raw_data_and_outputs_apart(tmp_path: Path,
                                                            monkeypatch) -> None:
    project = make_project(tmp_path / "project", n_users=40, n_items=60, n_impressions=800)
    monkeypatch.chdir(project)
    monkeypatch.delenv("KEDRO_ENV", raising=False)
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="streaming") as session:
        catalog = session.load_context().catalog
        pipelines.set_requested(None)
        assert "ranking_streaming" in pipelines
        for name in ("raw_users", "raw_items"):
            path = Path(str(catalog.get(name)._filepath))
            assert path.parts[-3:-1] == ("streaming", "01_raw"), (name, path)
        shards = catalog.get("raw_interaction_shards")
        assert Path(str(shards._path)).parts[-3:] == ("streaming", "01_raw", "interactions")
        for name in ("feature_spec", "model_input_shards@train", "ranking_item_stats"):
            path = Path(str(catalog.get(name)._filepath))
            assert "streaming" in path.parts, (name, path)
