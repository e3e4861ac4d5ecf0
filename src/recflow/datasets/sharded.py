"""A directory of parquet parts written one chunk per save: the sink of generator nodes.

Kedro saves every chunk a generator node yields; this dataset writes each
non-empty chunk as the next ``part-NNNNN.parquet``, so a node can stream an
output far larger than memory. Readers take the parts in name order
(``part-*.parquet``), which is the order they were written in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError


class ShardedParquetDataset(AbstractDataset[pd.DataFrame, dict[str, Callable[[], pd.DataFrame]]]):
    """``path/part-NNNNN.parquet``; load gives part name -> loader, lazily, in order."""

    def __init__(self, path: str, save_args: dict[str, Any] | None = None,
                 load_args: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(path)
        self._save_args = {"index": False, "compression": "zstd", **(save_args or {})}
        self._load_args = load_args or {}
        self._next_part: int | None = None
        self.metadata = metadata

    def save(self, data: pd.DataFrame) -> None:
        if not isinstance(data, pd.DataFrame):
            raise DatasetError(f"{self._filepath}: expected a pandas DataFrame chunk, "
                               f"got {type(data).__name__}")
        if self._next_part is None:  # first chunk of this run: drop parts of earlier runs
            self._filepath.mkdir(parents=True, exist_ok=True)
            for stale in self._filepath.glob("part-*.parquet"):
                stale.unlink()
            self._next_part = 0
        if not len(data):
            return
        data.to_parquet(self._filepath / f"part-{self._next_part:05d}.parquet", **self._save_args)
        self._next_part += 1

    def load(self) -> dict[str, Callable[[], pd.DataFrame]]:
        parts = sorted(self._filepath.glob("part-*.parquet"))
        if not parts:
            raise DatasetError(f"{self._filepath}: no part-*.parquet files")
        return {p.stem: (lambda p=p: pd.read_parquet(p, **self._load_args)) for p in parts}

    def _exists(self) -> bool:
        return any(self._filepath.glob("part-*.parquet"))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "save_args": self._save_args}
