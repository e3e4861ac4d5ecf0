"""A Kedro dataset for one numpy array as ``.npy`` (kedro-datasets has no numpy dataset).

Used for item-embedding matrices: ``np.load(path)`` is all an ANN library (faiss,
hnswlib, ScaNN) needs, and ``load_args: {mmap_mode: r}`` maps a large matrix
instead of reading it. Writes are atomic (temporary file, then `os.replace`);
loads never unpickle (``allow_pickle=False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from recflow.atomic import atomic_file


class NumpyArrayDataset(AbstractDataset[np.ndarray, np.ndarray]):
    """Reads/writes a single array at `filepath` (``.npy``), optionally cast on save.

    Example ``catalog.yml`` entry::

        "retrieval.{name}.item_vectors":
          type: recflow.datasets.NumpyArrayDataset
          filepath: ${globals:out}/07_model_output/retrieval/{name}/item_vectors.npy
          dtype: float32
    """

    def __init__(self, filepath: str, dtype: str | None = None,
                 load_args: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self._dtype = np.dtype(dtype) if dtype else None
        self._load_args = {k: v for k, v in (load_args or {}).items() if k != "allow_pickle"}
        self.metadata = metadata

    def _load(self) -> np.ndarray:
        if not self._filepath.exists():
            raise DatasetError(f"no array at {self._filepath}; run the pipeline that writes it "
                               "(e.g. `kedro run --pipelines=retrieval`)")
        try:
            data = np.load(self._filepath, allow_pickle=False, **self._load_args)
        except (ValueError, OSError, EOFError) as exc:  # e.g. a pickle: never unpickled
            raise DatasetError(f"{self._filepath}: refused to load, not a plain numpy array "
                               f"file ({str(exc).splitlines()[0][:120]}). Nothing in it was "
                               "run; re-create it with the pipeline that writes it") from None
        if not isinstance(data, np.ndarray):  # an .npz archive under an .npy name
            raise DatasetError(f"{self._filepath}: refused to load, expected one numpy array, "
                               f"found {type(data).__name__}")
        return data

    def _save(self, data: np.ndarray) -> None:
        if not isinstance(data, np.ndarray):
            raise DatasetError(f"{self._filepath}: expected a numpy array, got "
                               f"{type(data).__name__}")
        if data.dtype == object:
            raise DatasetError(f"{self._filepath}: object arrays are not saved (no pickling)")
        array = np.ascontiguousarray(data, dtype=self._dtype or data.dtype)
        with atomic_file(self._filepath) as handle:
            np.save(handle, array, allow_pickle=False)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "dtype": str(self._dtype)}
