"""Kedro hooks that make a run all-or-nothing on disk, even when it is interrupted.

A failed run must leave no half-written outputs behind: every file a run
saves is tracked, the previous version is kept aside, and on error the new
files are removed and the previous ones restored.

Signals and crashes: a run journal (`data/.recflow-journal-<run>.json`, written
atomically) records, before anything is moved, every output the run writes and where
its previous version was put. SIGINT / SIGTERM roll the run back before the process
stops; after a `kill -9` (or power loss) the next Kedro start in the project finds the
journal of the dead process and restores the previous outputs (`recover_interrupted_runs`),
logging which run was interrupted and what was restored. A `.recflow-backup` that no
journal accounts for is never deleted: it is kept under a timestamped name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from recflow.journal import (
    ACTIVE_JOURNALS,
    BACKUP_SUFFIX,
    JOURNAL_VERSION,
    describe_paths,
    journal_dir,
    keep_stray_backup,
    path_exists,
    process_start,
    recover_interrupted_runs,
    remove_path,
    rollback,
    write_json_atomic,
)

logger = logging.getLogger(__name__)
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))

def dataset_filepath(catalog: Any, name: str) -> Path | None:
    """Local path a catalog dataset writes to, or None for memory/remote datasets."""
    try:
        dataset = catalog.get(name)
    except Exception:  # noqa: BLE001 - unknown or lazily-failing datasets have no path
        return None
    filepath = getattr(dataset, "_filepath", None)
    if filepath is None:
        filepath = (dataset._describe() or {}).get("filepath") if dataset else None
    if filepath is None:
        return None
    protocol = getattr(dataset, "_protocol", "file")
    if protocol not in ("file", None):
        return None
    return Path(str(filepath))


def dataset_filepaths(catalog: Any, name: str) -> list[Path]:
    """Every local path a dataset writes to: its `filepaths` if it writes several
    (e.g. `ShardedSplitsDataset`, one directory per split), else `dataset_filepath`."""
    try:
        many = getattr(catalog.get(name), "filepaths", None)
    except Exception:  # noqa: BLE001 - as in dataset_filepath
        many = None
    if many is not None:
        return [Path(str(p)) for p in many]
    one = dataset_filepath(catalog, name)
    return [] if one is None else [one]


class ConfigCaptureHooks:
    """Remember the active context's config loader (with its `--env`).

    Pipelines whose shape follows the YAML read parameters through it, so they
    see the env's YAML and never build a second loader (a second OmegaConfigLoader
    would re-register the global `globals` resolver for the wrong env).
    """

    config_loader: Any = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        ConfigCaptureHooks.config_loader = context.config_loader


class RunInterrupted(Exception):  # noqa: N818 - reads as what happened to the run
    """Raised in the running pipeline by SIGINT / SIGTERM so that it is rolled back.

    An `Exception` (not `BaseException`) on purpose: Kedro calls `on_pipeline_error`
    only for those, and that is where the rollback runs.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"run interrupted by {_signal_name(signum)}")


class AtomicRunHooks:
    """Back up outputs before they are overwritten; roll back when a run fails, is
    interrupted by SIGINT / SIGTERM, or (at the next start) was killed."""

    def __init__(self) -> None:
        self._project_path: Path | None = None
        self._catalog: Any = None
        self._written: list[Path] = []
        self._backups: dict[Path, Path] = {}
        self._journal: dict[str, Any] | None = None
        self._journal_path: Path | None = None
        self._pid: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._interrupted: int | None = None  # the first signal received during the run
        self._critical = 0  # > 0: moving files / writing the journal, signals wait
        self._deferred = False
        self._rolling_back = False

    # ---- hooks ---------------------------------------------------------------------
    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Before anything runs: restore the outputs of a run that was killed."""
        self._project_path = Path(context.project_path)
        recover_interrupted_runs(self._project_path)

    @hook_impl(trylast=True)  # last: a `before_pipeline_run` that fails leaves no journal
    def before_pipeline_run(self, run_params: dict[str, Any], catalog: Any) -> None:
        if self._journal_path is not None:  # a run of this process that never reached its end
            ACTIVE_JOURNALS.discard(self._journal_path)
            self._restore_signal_handlers()
        project = Path(run_params.get("project_path") or self._project_path or Path.cwd())
        self._project_path = project
        recover_interrupted_runs(project)
        self._catalog = catalog
        self._written, self._backups = [], {}
        self._interrupted, self._critical, self._deferred = None, 0, False
        self._pid = os.getpid()
        run_id = str(run_params.get("run_id") or time.strftime("%Y%m%dT%H%M%S"))
        self._journal = {
            "version": JOURNAL_VERSION,
            "run_id": run_id,
            "pid": self._pid,
            "process_start": process_start(self._pid),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pipelines": run_params.get("pipeline_names"),
            "env": run_params.get("env"),
            "state": "running",
            "outputs": [],
        }
        name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{run_id}-{self._pid}")
        self._journal_path = journal_dir(project) / f".recflow-journal-{name}.json"
        ACTIVE_JOURNALS.add(self._journal_path)
        self._write_journal()
        self._install_signal_handlers()

    @hook_impl
    def before_node_run(self) -> None:
        self._raise_if_interrupted()

    @hook_impl
    def after_node_run(self) -> None:
        self._raise_if_interrupted()

    @hook_impl
    def before_dataset_saved(self, dataset_name: str) -> None:
        self._raise_if_interrupted()
        paths = dataset_filepaths(self._catalog, dataset_name) if self._catalog else []
        with self._critical_section():
            for raw in paths:
                path = Path(os.path.abspath(raw))
                if path in self._written:
                    continue
                backup = None
                if path_exists(path):
                    backup = path.with_name(path.name + BACKUP_SUFFIX)
                    if path_exists(backup):
                        keep_stray_backup(backup)
                # write-ahead: the journal names the move before it happens
                if self._journal is not None:
                    self._journal["outputs"].append(
                        {"path": str(path), "backup": None if backup is None else str(backup)})
                    self._write_journal()
                if backup is not None:
                    try:
                        os.replace(path, backup)
                    except OSError as exc:  # the journal entry is harmless: no backup, no undo
                        raise OSError(
                            f"cannot write the output {dataset_name!r} ({path}): moving its "
                            f"previous version aside failed ({exc.strerror or exc}). The folder "
                            f"{path.parent} must be writable by this user.") from None
                    self._backups[path] = backup
                self._written.append(path)

    @hook_impl(wrapper=True)
    def after_pipeline_run(self) -> Iterator[None]:
        """Commit (drop the backups) before the other hooks run; then hand a signal that
        arrived meanwhile to the handler it would have reached without this hook."""
        with self._critical_section(reraise=False):
            if self._journal is not None:
                self._journal["state"] = "committed"
                self._write_journal()
            for backup in self._backups.values():
                remove_path(backup)
            self._close_journal()
        try:
            return (yield)
        finally:
            self._finish()

    @hook_impl(wrapper=True)
    def on_pipeline_error(self, error: Exception) -> Iterator[None]:
        """Roll back before the other hooks run (a signal can no longer stop it); once they
        have run, a SIGINT / SIGTERM that interrupted the run is handed to the handler it
        would have reached without this hook (KeyboardInterrupt, or the process ends)."""
        self._rolling_back = True
        try:
            written = list(self._written)
            restored, removed = rollback(self._journal_entries())
            self._close_journal()
        finally:
            self._rolling_back = False
        if self._interrupted is not None:
            logger.error(
                "Run interrupted by %s; rolled back %d output(s): restored the previous "
                "version of %s; removed %s", _signal_name(self._interrupted), len(written),
                describe_paths(restored, self._project_path), describe_paths(removed, self._project_path))
        elif written:
            logger.error(
                "Run failed (%s); rolled back %d output(s): %s",
                type(error).__name__,
                len(written),
                ", ".join(str(p) for p in written),
            )
        try:
            return (yield)
        finally:
            self._finish()

    # ---- journal -------------------------------------------------------------------
    def _journal_entries(self) -> list[dict[str, Any]]:
        if self._journal is not None:
            return list(self._journal["outputs"])
        return [{"path": str(p), "backup": None if p not in self._backups else
                 str(self._backups[p])} for p in self._written]

    def _write_journal(self) -> None:
        if self._journal is not None and self._journal_path is not None:
            write_json_atomic(self._journal_path, self._journal)

    def _close_journal(self) -> None:
        if self._journal_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._journal_path.unlink()
            ACTIVE_JOURNALS.discard(self._journal_path)
        self._journal, self._journal_path = None, None
        self._written, self._backups = [], {}

    def _finish(self) -> None:
        """Restore the signal handlers; a signal received during the run is then handled
        as it would have been without this hook (KeyboardInterrupt, or the process ends)."""
        self._restore_signal_handlers()
        signum, self._interrupted = self._interrupted, None
        if signum is not None and self._pid == os.getpid():
            signal.raise_signal(signum)

    # ---- signals -------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        self._previous_handlers = {}
        for signum in _SIGNALS:
            try:
                previous = signal.getsignal(signum)
                owner = getattr(previous, "__self__", None)
                if isinstance(owner, AtomicRunHooks):  # left by a run that never ended
                    previous = owner._previous_handlers.get(signum, signal.SIG_DFL)
                if previous in (signal.SIG_IGN, None):  # ignored, or set outside Python
                    continue
                signal.signal(signum, self._on_signal)
                self._previous_handlers[signum] = previous
            except ValueError:  # not the main thread: no signal handling, rollback on error only
                logger.debug("not in the main thread: %s not handled", _signal_name(signum))

    def _restore_signal_handlers(self) -> None:
        for signum, previous in self._previous_handlers.items():
            with contextlib.suppress(ValueError):
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, previous)
        self._previous_handlers = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked worker: behave as it would without us
            signal.signal(signum, self._previous_handlers.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        if self._interrupted is None:
            self._interrupted = signum
        if self._rolling_back:
            logger.warning("%s received while rolling back; finishing the rollback first",
                           _signal_name(signum))
            return
        if self._critical:
            self._deferred = True
            return
        logger.warning("%s received: stopping the run and rolling back its outputs",
                       _signal_name(signum))
        raise RunInterrupted(signum)

    def _raise_if_interrupted(self) -> None:
        """Re-raise a signal whose `RunInterrupted` some code caught and dropped."""
        if self._interrupted is not None and not self._rolling_back and not self._critical:
            raise RunInterrupted(self._interrupted)

    @contextlib.contextmanager
    def _critical_section(self, reraise: bool = True) -> Iterator[None]:
        """Files are being moved / the journal written: a signal waits until the end."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if reraise and self._critical == 0 and self._deferred:
            self._deferred = False
            raise RunInterrupted(self._interrupted or signal.SIGINT)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def active_config_loader() -> Any:
    """The config loader of the Kedro context created last in this process, if any."""
    return ConfigCaptureHooks.config_loader
