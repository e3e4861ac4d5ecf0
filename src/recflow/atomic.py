"""Write a file so that a crash leaves the old file or the new one, never half of one.

    with atomic_file(path) as handle:
        handle.write(blob)

The bytes go to `<name>.tmp` beside the target, are flushed and fsynced, then renamed
over it (atomic on POSIX); the directory is fsynced so the rename survives a power
cut where the platform allows. On any error, Ctrl-C included, the temporary file is
removed and the target is untouched. Standard library only: serving images use it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """An open temporary file that replaces `path` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename durable (not on every platform)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | Path, blob: bytes) -> None:
    """`Path.write_bytes`, atomically."""
    with atomic_file(path) as handle:
        handle.write(blob)
