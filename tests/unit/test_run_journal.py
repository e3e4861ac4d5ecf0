"""Crash-safe runs: a real `kedro run` interrupted by SIGTERM / SIGINT / SIGKILL at a
controlled point leaves (or, at the next start, restores) the previous run's tree byte
for byte, and a backup no journal accounts for is never deleted (recflow.hooks)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from recflow.journal import BACKUP_SUFFIX, JOURNAL_GLOB, recover_interrupted_runs
from tests.conftest import REPO, make_project, output_files, run_kedro

pytestmark = pytest.mark.slow  # real `kedro run` processes, signalled

# A project-local dataset (src/ is on the path of `kedro run`): it saves, then, when
# RECFLOW_TEST_BLOCK names a marker file, writes it and waits to be killed. Used for
# `feature_spec`, saved after the three canonical tables and the split cut-offs.
BLOCKING_DATASET = '''
import os
import time
from pathlib import Path

from kedro_datasets.json import JSONDataset


class BlockingJSONDataset(JSONDataset):
    def save(self, data):
        super().save(data)
        marker = os.environ.get("RECFLOW_TEST_BLOCK")
        if marker:
            Path(marker).write_text(str(os.getpid()))
            time.sleep(300)
'''


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preprocessed tiny project: the previous run every test must get back."""
    project = make_project(tmp_path_factory.mktemp("journal") / "project", n_impressions=2_000)
    run_kedro(project, "preprocessing")
    return project


def _snapshot(project: Path) -> dict[str, bytes]:
    return {f: (project / f).read_bytes() for f in output_files(project)}


def _leftovers(project: Path) -> list[Path]:
    data = project / "data"
    return [*data.rglob(f"*{BACKUP_SUFFIX}*"), *data.glob(JOURNAL_GLOB)]


def _blocking_copy(baseline: Path, tmp_path: Path) -> Path:
    """A copy of `baseline` with other raw data (the next run writes other bytes) and
    `feature_spec` saved through the blocking dataset."""
    from recflow.datasets.synthetic import GeneratorConfig, generate, write_parquet

    project = Path(shutil.copytree(baseline, tmp_path / "project"))
    write_parquet(generate(GeneratorConfig(n_users=300, n_items=400, n_impressions=2_000,
                                           seed=8)), project / "data" / "01_raw")
    (project / "src" / "blocking_dataset.py").write_text(BLOCKING_DATASET)
    entry = yaml.safe_load((REPO / "conf/base/catalog.yml").read_text())["feature_spec"]
    entry["type"] = "blocking_dataset.BlockingJSONDataset"
    (project / "conf/local").mkdir(parents=True, exist_ok=True)
    (project / "conf/local/catalog.yml").write_text(yaml.safe_dump({"feature_spec": entry}))
    return project


def _kedro(project: Path, *args: str, block: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "COLUMNS": "1000"}
    env.pop("KEDRO_ENV", None)
    env.pop("RECFLOW_TEST_BLOCK", None)
    if block is not None:
        env["RECFLOW_TEST_BLOCK"] = str(block)
    log = open(project / f"kedro-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen(  # SIGINT at its default, even when pytest runs in the background
        [sys.executable, "-m", "kedro", "run", *args], cwd=project, env=env, stdout=log,
        stderr=subprocess.STDOUT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.log_path = Path(log.name)  # type: ignore[attr-defined]
    log.close()
    return proc


def _blocked(proc: subprocess.Popen, marker: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"run ended before blocking:\n{proc.log_path.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("run did not reach feature_spec in time")
        time.sleep(0.05)


def _interrupted_run(baseline: Path, tmp_path: Path) -> tuple[Path, subprocess.Popen]:
    """A second run, stopped just after it overwrote 5 of the previous run's outputs."""
    project = _blocking_copy(baseline, tmp_path)
    marker = tmp_path / "blocked"
    proc = _kedro(project, "--pipeline", "preprocessing", block=marker)
    _blocked(proc, marker)
    mixed = _snapshot(project)
    before = _snapshot(baseline)
    changed = [f for f in before if mixed.get(f) != before[f]]
    assert "data/05_model_input/feature_spec.json" in changed, changed  # the tree is mixed
    assert list(project.glob(f"data/{JOURNAL_GLOB}"))
    return project, proc


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_run_rolls_back_to_the_previous_tree(baseline: Path, tmp_path: Path,
                                                         signum: int) -> None:
    project, proc = _interrupted_run(baseline, tmp_path)
    proc.send_signal(signum)
    code = proc.wait(timeout=120)
    log = proc.log_path.read_text()
    assert code != 0, log[-3000:]
    assert f"Run interrupted by {signal.Signals(signum).name}" in log, log[-3000:]
    assert _snapshot(project) == _snapshot(baseline)
    assert _leftovers(project) == []


def test_after_kill_9_the_next_start_restores_before_anything_runs(baseline: Path,
                                                                    tmp_path: Path) -> None:
    project, proc = _interrupted_run(baseline, tmp_path)
    journal = json.loads(next(project.glob(f"data/{JOURNAL_GLOB}")).read_text())
    proc.kill()
    proc.wait(timeout=60)
    assert list(project.rglob(f"*{BACKUP_SUFFIX}"))  # nothing could clean up
    assert _snapshot(project) != _snapshot(baseline)

    # the next start: a run that fails right after the context is created (no such node),
    # so what is on disk afterwards is what the recovery left, before any node could run
    nxt = _kedro(project, "--pipeline", "preprocessing", "--nodes", "no_such_node")
    assert nxt.wait(timeout=240) != 0
    log = nxt.log_path.read_text()
    assert f"run {journal['run_id']} (started {journal['started']}, pid {proc.pid}" in log, log
    assert "was interrupted before it finished" in log
    assert "03_primary/interactions.parquet" in log and "feature_spec.json" in log
    assert _snapshot(project) == _snapshot(baseline)
    assert _leftovers(project) == []


def test_recovery_restores_and_removes_and_is_idempotent(tmp_path: Path) -> None:
    """The journal of a dead process, its rollback half done (as after a second kill)."""
    data = tmp_path / "data"
    data.mkdir()
    old, new, gone = data / "old.txt", data / "new.txt", data / "moved_back.txt"
    old.write_text("run 2")
    old.with_name(old.name + BACKUP_SUFFIX).write_text("run 1")
    new.write_text("run 2 only")
    gone.write_text("run 1, already restored")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    journal = {"run_id": "r2", "pid": dead.pid, "started": "then", "state": "running",
               "outputs": [{"path": str(gone), "backup": str(gone) + BACKUP_SUFFIX},
                           {"path": str(old), "backup": str(old) + BACKUP_SUFFIX},
                           {"path": str(new), "backup": None}]}
    (data / ".recflow-journal-r2.json").write_text(json.dumps(journal))
    [done] = recover_interrupted_runs(tmp_path)
    assert done["restored"] == [old] and done["removed"] == [new]
    assert old.read_text() == "run 1" and not new.exists()
    assert gone.read_text() == "run 1, already restored"
    assert sorted(p.name for p in data.iterdir()) == ["moved_back.txt", "old.txt"]
    assert recover_interrupted_runs(tmp_path) == []

    # a live process's journal is not touched
    (data / ".recflow-journal-live.json").write_text(json.dumps(
        {**journal, "pid": os.getppid(), "process_start": None}))
    assert recover_interrupted_runs(tmp_path) == []
    assert (data / ".recflow-journal-live.json").exists()


def test_a_stray_backup_is_never_deleted(baseline: Path, tmp_path: Path) -> None:
    project = Path(shutil.copytree(baseline, tmp_path / "project"))
    stray = project / "data/03_primary" / ("interactions.parquet" + BACKUP_SUFFIX)
    stray.write_bytes(b"the only copy of an older output")
    lonely = project / "data/06_models" / ("model.pt" + BACKUP_SUFFIX)
    lonely.write_bytes(b"no output next to me")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    hooks_logger = logging.getLogger("recflow.journal")
    hooks_logger.addHandler(handler)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_kedro(project, "preprocessing")
    finally:
        hooks_logger.removeHandler(handler)
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # pytest's Ctrl-C still works
    kept = list(stray.parent.glob(stray.name + "-*"))
    assert [p.read_bytes() for p in kept] == [b"the only copy of an older output"]
    assert lonely.read_bytes() == b"no output next to me"
    assert any(str(stray) in r.getMessage() and str(kept[0]) in r.getMessage()
               for r in records if r.levelno == logging.WARNING)
    assert not list(project.glob(f"data/{JOURNAL_GLOB}"))


def test_an_unwritable_output_folder_is_named_not_the_backup(tmp_path: Path, monkeypatch) -> None:
    """As root a read-only folder still accepts writes, so the failing move is simulated."""
    from kedro.io import DataCatalog
    from kedro_datasets.json import JSONDataset

    from recflow.hooks import runs as hooks_module

    target = tmp_path / "out" / "metrics.json"
    target.parent.mkdir()
    target.write_text("{}")
    catalog = DataCatalog({"metrics": JSONDataset(filepath=str(target))})
    hook = hooks_module.AtomicRunHooks()
    hook.before_pipeline_run({"project_path": str(tmp_path), "run_id": "t"}, catalog)

    real_replace = os.replace

    def denied(src, dst):  # the journal itself is still written (os.replace too)
        if str(dst).endswith(BACKUP_SUFFIX):
            raise PermissionError(13, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(hooks_module.os, "replace", denied)
    with pytest.raises(OSError, match=r"cannot write the output 'metrics' .*metrics\.json.*"
                                      r"Permission denied.*must be writable") as caught:
        hook.before_dataset_saved("metrics")
    assert BACKUP_SUFFIX not in str(caught.value)
    monkeypatch.undo()
    wrapper = hook.on_pipeline_error(RuntimeError("stop"))  # a hook wrapper: drive it
    next(wrapper)
    with pytest.raises(StopIteration):
        wrapper.send(None)
    assert target.read_text() == "{}"  # the previous version is untouched
    assert not list(tmp_path.rglob(JOURNAL_GLOB))
