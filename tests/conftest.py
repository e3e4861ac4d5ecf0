"""Shared fixtures: a throw-away copy of the Kedro project on small generated data."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input",
          "06_models", "07_model_output", "08_reporting")


def make_project(root: Path, *, n_users: int = 300, n_items: int = 400,
                 n_impressions: int = 20_000, seed: int = 7) -> Path:
    """Copy conf/ + pyproject into `root` and write small generated raw data."""
    from recflow.datasets.synthetic import GeneratorConfig, generate, write_parquet

    root.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "conf", root / "conf", dirs_exist_ok=True)
    (root / "src").mkdir(exist_ok=True)  # Kedro requires source_dir; recflow is installed
    for layer in LAYERS:
        (root / "data" / layer).mkdir(parents=True, exist_ok=True)
    tables = generate(GeneratorConfig(n_users=n_users, n_items=n_items,
                                      n_impressions=n_impressions, seed=seed))
    write_parquet(tables, root / "data" / "01_raw")
    return root


def run_kedro(project: Path, pipeline: str, env: str | None = None,
              extra_params: dict | None = None, **kwargs) -> dict:
    """Run a pipeline in-process, as `kedro run` would.

    Like the CLI, it runs from the project directory and exports KEDRO_ENV
    (pipeline_registry.py reads the active env's parameters); both are restored.
    """
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    cwd, kedro_env = os.getcwd(), os.environ.get("KEDRO_ENV")
    os.chdir(project)
    if env:
        os.environ["KEDRO_ENV"] = env
    else:
        os.environ.pop("KEDRO_ENV", None)
    try:
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env=env,
                                 runtime_params=extra_params or {}) as session:
            return session.run(pipeline_name=pipeline, **kwargs)
    finally:
        os.chdir(cwd)
        if kedro_env is None:
            os.environ.pop("KEDRO_ENV", None)
        else:
            os.environ["KEDRO_ENV"] = kedro_env


def output_files(project: Path) -> list[str]:
    """Files written to layers 02+ (what a failed run must not leave behind)."""
    return sorted(
        str(p.relative_to(project))
        for layer in LAYERS[1:]
        for p in (project / "data" / layer).rglob("*")
        if p.is_file() and p.name != ".gitkeep"
    )


@pytest.fixture
def project_factory(tmp_path: Path) -> Callable[..., Path]:
    def factory(**kwargs) -> Path:
        return make_project(tmp_path / "project", **kwargs)

    return factory


@pytest.fixture(scope="session")
def preprocessed_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One preprocessed small project shared by tests that only read its outputs."""
    project = make_project(tmp_path_factory.mktemp("preprocessed") / "project")
    run_kedro(project, "preprocessing")
    return project
