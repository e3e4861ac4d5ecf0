"""`kedro airflow create` (kedro-airflow, the `orchestration` extra) on a copy of the project.

Airflow itself is not installed: the generated DAG file is compiled, then executed
against a stub `airflow.sdk` that records tasks and `>>` edges, so the test checks the
task graph Airflow would build: one task per node (or per MemoryDataset group), wired
with the pipeline's node dependencies, each task running exactly its own node(s).
"""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner
from slugify import slugify

from tests.conftest import REPO

PIPELINE = "preprocessing"


class _Task:
    def __init__(self, task_id: str, fn) -> None:
        self.task_id, self.fn, self.upstream = task_id, fn, set()

    def __rshift__(self, other: _Task) -> _Task:
        other.upstream.add(self.task_id)
        return other


def _stub_airflow(monkeypatch: pytest.MonkeyPatch) -> dict[str, _Task]:
    """A fake `airflow.sdk` whose @dag runs the DAG body and @task records _Task objects."""
    tasks: dict[str, _Task] = {}

    def task(task_id: str):
        def decorate(fn):
            def make():
                tasks[task_id] = _Task(task_id, fn)
                return tasks[task_id]
            return make
        return decorate

    def dag(**_kwargs):
        return lambda fn: fn

    sdk = types.ModuleType("airflow.sdk")
    sdk.dag, sdk.task = dag, task
    monkeypatch.setitem(sys.modules, "airflow", types.ModuleType("airflow"))
    monkeypatch.setitem(sys.modules, "airflow.sdk", sdk)
    return tasks


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The project's conf + pyproject; no data: generating a DAG only reads the pipelines."""
    root = tmp_path_factory.mktemp("airflow_project")
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "conf", root / "conf")
    (root / "src").mkdir()
    return root


def _create(project: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Path, object]:
    from kedro.framework.cli.cli import KedroCLI
    from kedro.framework.project import pipelines

    monkeypatch.chdir(project)
    monkeypatch.delenv("KEDRO_ENV", raising=False)
    result = CliRunner().invoke(KedroCLI(project), ["airflow", "create", "--pipelines", PIPELINE,
                                                   "-t", "dags", *args])
    assert result.exit_code == 0, result.output
    return project / "dags" / f"recflow_{PIPELINE}_dag.py", pipelines[PIPELINE]


def _execute(dag_file: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, _Task], list]:
    """Run the DAG module on the stub; each task's body is run with `_run_kedro_node` faked."""
    source = dag_file.read_text()
    code = compile(source, str(dag_file), "exec")
    tasks = _stub_airflow(monkeypatch)
    namespace: dict = {"__name__": "dag_under_test"}
    exec(code, namespace)  # the file kedro-airflow just generated
    calls = []
    namespace["_run_kedro_node"] = lambda node_names=None, namespaces=None: calls.append(
        node_names)
    for task in tasks.values():
        task.fn()
    return tasks, calls


def test_node_per_task_dag_has_the_pipeline_dependencies(project, monkeypatch) -> None:
    dag_file, pipeline = _create(project, monkeypatch)
    tasks, calls = _execute(dag_file, monkeypatch)
    slug = {node.name: slugify(node.name) for node in pipeline.nodes}
    assert len(set(slug.values())) == len(pipeline.nodes) > 3
    assert set(tasks) == set(slug.values())  # one task per node
    for node, parents in pipeline.node_dependencies.items():
        assert tasks[slug[node.name]].upstream == {slug[p.name] for p in parents}, node.name
    assert sorted(calls) == sorted([name] for name in slug)  # each task runs its own node


def test_memory_grouping_keeps_memory_datasets_inside_one_task(project, monkeypatch) -> None:
    from kedro.framework.session import KedroSession

    dag_file, pipeline = _create(project, monkeypatch, "--group-by", "memory")
    tasks, calls = _execute(dag_file, monkeypatch)
    with KedroSession.create(project_path=project) as session:
        catalog = session.load_context().catalog
    memory = {d for d in pipeline.datasets() if d not in catalog and not d.startswith("param")}
    memory &= pipeline.all_outputs()
    assert memory, "the preprocessing pipeline has an in-memory intermediate (events)"
    task_of = {name: i for i, names in enumerate(calls) for name in names}
    assert sorted(task_of) == sorted(node.name for node in pipeline.nodes)
    assert len(tasks) < len(pipeline.nodes)
    for node in pipeline.nodes:
        for dataset in set(node.inputs) & memory:
            producer = next(n for n in pipeline.nodes if dataset in n.outputs)
            assert task_of[producer.name] == task_of[node.name], dataset
