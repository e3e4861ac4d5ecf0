"""Kedro hooks that make a run all-or-nothing on disk.

A failed run must leave no half-written outputs behind: every file a run
saves is tracked, the previous version is kept aside, and on error the new
files are removed and the previous ones restored.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)
_BACKUP_SUFFIX = ".recflow-backup"


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


class AtomicRunHooks:
    """Back up outputs before they are overwritten; roll back when a run fails."""

    def __init__(self) -> None:
        self._catalog: Any = None
        self._written: list[Path] = []
        self._backups: dict[Path, Path] = {}

    @hook_impl
    def before_pipeline_run(self, catalog: Any) -> None:
        self._catalog = catalog
        self._written, self._backups = [], {}

    @hook_impl
    def before_dataset_saved(self, dataset_name: str) -> None:
        paths = dataset_filepaths(self._catalog, dataset_name) if self._catalog else []
        for path in paths:
            if path in self._written:
                continue
            if path.exists() and path not in self._backups:
                backup = path.with_name(path.name + _BACKUP_SUFFIX)
                if backup.exists():
                    _remove(backup)
                shutil.move(path, backup)
                self._backups[path] = backup
            self._written.append(path)

    @hook_impl
    def after_pipeline_run(self) -> None:
        for backup in self._backups.values():
            _remove(backup)
        self._written, self._backups = [], {}

    @hook_impl
    def on_pipeline_error(self, error: Exception) -> None:
        for path in reversed(self._written):
            _remove(path)
            backup = self._backups.get(path)
            if backup is not None and backup.exists():
                shutil.move(backup, path)
        if self._written:
            logger.error(
                "Run failed (%s); rolled back %d output(s): %s",
                type(error).__name__,
                len(self._written),
                ", ".join(str(p) for p in self._written),
            )
        self._written, self._backups = [], {}


def active_config_loader() -> Any:
    """The config loader of the Kedro context created last in this process, if any."""
    return ConfigCaptureHooks.config_loader


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
