"""Run journals: what an unfinished run wrote, so a killed run can be rolled back.

A journal (`<project>/data/.recflow-journal-<run>-<pid>.json`, written atomically) lists,
before anything is moved, every output a run writes and where its previous version was
put (`<path>.recflow-backup`). `recover_interrupted_runs` rolls back the journal of a run
whose process is gone (`kill -9`, power loss) and says so in the log; `AtomicRunHooks`
(`recflow.hooks`) writes the journals. Plain files and `os.replace`: no Kedro here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from recflow.atomic import atomic_file

logger = logging.getLogger(__name__)
BACKUP_SUFFIX = ".recflow-backup"
#: run journals live in `<project>/data/`, one per run (concurrent runs do not share one)
JOURNAL_GLOB = ".recflow-journal-*.json"
JOURNAL_VERSION = 1
#: journals of runs in progress in this process (recovery must not touch them)
ACTIVE_JOURNALS: set[Path] = set()


def journal_dir(project_path: Path) -> Path:
    """Where the run journals of a project live: its `data/` (the project if it has none)."""
    data = Path(project_path) / "data"
    return data if data.is_dir() else Path(project_path)


def recover_interrupted_runs(project_path: Path) -> list[dict[str, Any]]:
    """Roll back every run of `project_path` that was killed before it finished.

    A journal whose process is gone (`kill -9`, power loss), or a stale one of this
    process, is rolled back: each output the run wrote is removed and its previous
    version moved back; outputs it created are removed. A run that had committed has its
    leftover backups removed. Journals of live processes (or of another host) are left
    alone. Returns what was done, one dict per journal.
    """
    done = []
    for path in sorted(journal_dir(project_path).glob(JOURNAL_GLOB)):
        if path in ACTIVE_JOURNALS:
            continue
        try:
            journal = json.loads(path.read_text())
            entries = list(journal["outputs"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("Unreadable run journal %s (%s): left in place; nothing restored",
                           path, exc)
            continue
        run = (f"run {journal.get('run_id')} (started {journal.get('started')}, "
               f"pid {journal.get('pid')}, pipelines {journal.get('pipelines')})")
        alive = _owner_alive(journal)
        if alive is None:
            logger.warning(
                "Run journal %s belongs to %s on host %s: cannot tell whether it still runs; "
                "left in place. Delete it after that run has ended to have its outputs "
                "restored at the next start, or keep it.", path, run, journal.get("host"))
            continue
        if alive:
            logger.info("%s is still running (journal %s); not touched", run, path)
            continue
        if journal.get("state") == "committed":
            for entry in entries:
                if entry.get("backup"):
                    remove_path(Path(entry["backup"]))
            logger.info("%s had finished; removed the backups it left", run)
            summary = {"run_id": journal.get("run_id"), "committed": True,
                       "restored": [], "removed": []}
        else:
            restored, removed = rollback(entries)
            logger.warning(
                "%s was interrupted before it finished; rolled back before anything runs: "
                "restored the previous version of %d output(s): %s; removed %d output(s) it "
                "had created: %s", run, len(restored), describe_paths(restored, project_path),
                len(removed), describe_paths(removed, project_path))
            summary = {"run_id": journal.get("run_id"), "committed": False,
                       "restored": restored, "removed": removed}
        path.unlink()
        done.append(summary)
    return done


def rollback(entries: list[dict[str, Any]]) -> tuple[list[Path], list[Path]]:
    """Undo journal entries, newest first; idempotent, so an interrupted rollback can be
    run again. Returns (restored, removed) paths."""
    restored, removed = [], []
    for entry in reversed(entries):
        path = Path(entry["path"])
        backup = entry.get("backup")
        if backup is not None:
            backup = Path(backup)
            if path_exists(backup):
                remove_path(path)
                os.replace(backup, path)
                restored.append(path)
            # else the move never happened (or was already undone): `path` is the previous
            # version, never removed
        elif path_exists(path):  # created by the run: there was no previous version
            remove_path(path)
            removed.append(path)
    return restored, removed


def keep_stray_backup(backup: Path) -> None:
    """A backup no running journal accounts for may be the only copy of an output: keep it."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    kept = backup.with_name(f"{backup.name}-{stamp}")
    n = 1
    while path_exists(kept):
        kept, n = backup.with_name(f"{backup.name}-{stamp}-{n}"), n + 1
    os.replace(backup, kept)
    logger.warning("Found %s, which no run journal accounts for (left by an older version or "
                   "by hand); kept it as %s, delete it once it is not needed", backup, kept)


def _owner_alive(journal: dict[str, Any]) -> bool | None:
    """Whether the process that wrote `journal` still runs; None when it cannot be told."""
    if journal.get("host") not in (None, socket.gethostname()):
        return None
    try:
        pid = int(journal["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    if pid == os.getpid():
        return False  # not in ACTIVE_JOURNALS: a run of this process that never reached its end
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return None
    start = process_start(pid)
    recorded = journal.get("process_start")
    if start is not None and recorded is not None and start != recorded:
        return False  # the pid was reused
    return not _is_zombie(pid)


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields after `comm`, from `state` on


def process_start(pid: int) -> str | None:
    """The process start time (clock ticks since boot), to tell a reused pid apart."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _is_zombie(pid: int) -> bool:
    fields = _proc_stat(pid)
    return bool(fields) and fields[0] in ("Z", "X")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    with atomic_file(path, "w") as f:
        json.dump(data, f, indent=1)


def path_exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def describe_paths(paths: list[Path], root: Path | None) -> str:
    def short(p: Path) -> str:
        try:
            return str(p.relative_to(root)) if root else str(p)
        except ValueError:
            return str(p)

    return ", ".join(short(p) for p in paths) or "none"


def remove_path(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
