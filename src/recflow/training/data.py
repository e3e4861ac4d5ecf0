"""Processed frames -> column tensors, and batches sliced from them.

Each field becomes one tensor up front (sequences stacked from their L columns
in one `to_numpy`), so a training step is a handful of `index_select`s instead
of a per-row Dataset + collate, which dominates the step time of small models.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recflow.features.spec import LABEL_PREFIX, FeatureSpec

_DTYPES = {"categorical": np.int64, "numeric": np.float32, "sequence": np.int64}


@dataclass(frozen=True)
class TensorBatch:
    """Model inputs keyed by field name, labels keyed without the prefix, user keys for GAUC."""

    inputs: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    users: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def take(self, index: torch.Tensor | slice) -> TensorBatch:
        """Rows at `index`: a slice gives views (no copy), an index tensor gathers."""
        if isinstance(index, slice):
            users = self.users[index]

            def pick(t: torch.Tensor) -> torch.Tensor:
                return t[index]
        else:
            users = self.users[index.numpy()]

            def pick(t: torch.Tensor) -> torch.Tensor:
                return t.index_select(0, index)
        return TensorBatch(
            inputs={k: pick(v) for k, v in self.inputs.items()},
            labels={k: pick(v) for k, v in self.labels.items()},
            users=users,
        )

    def select(self, names: list[str]) -> TensorBatch:
        """Only the inputs a model reads, so batching skips unused fields."""
        return TensorBatch({n: self.inputs[n] for n in names}, self.labels, self.users)


def _tensor(values: np.ndarray, dtype: type) -> torch.Tensor:
    # np.require copies only when needed (wrong dtype, read-only copy-on-write view, strided).
    return torch.from_numpy(np.require(values, dtype, ["C", "W"]))


def frame_to_tensors(frame: pd.DataFrame, spec: FeatureSpec) -> TensorBatch:
    """A processed frame (spec columns + key_user + label_*) as column tensors.

    Without `key_user` (a log with no user key) every row is its own group, so GAUC
    is undefined (NaN) rather than silently equal to AUC.
    """
    inputs = {}
    for f in spec.fields:
        cols = f.output_columns()
        missing = [c for c in cols if c not in frame]
        if missing:
            raise KeyError(f"field '{f.name}' needs column(s) {missing[:3]} in the frame")
        values = frame[cols].to_numpy() if f.kind == "sequence" else frame[f.name].to_numpy()
        inputs[f.name] = _tensor(values, _DTYPES[f.kind])
    labels = {
        name: _tensor(frame[LABEL_PREFIX + name].to_numpy(), np.float32)
        for name in spec.labels
        if LABEL_PREFIX + name in frame
    }
    users = frame["key_user"].to_numpy() if "key_user" in frame else np.arange(len(frame))
    return TensorBatch(inputs=inputs, labels=labels, users=users)


def iterate_batches(
    batch: TensorBatch,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[TensorBatch]:
    """Consecutive mini-batches covering every row once; shuffled by one permutation per call."""
    n = len(batch)
    if not shuffle:
        for start in range(0, n, batch_size):
            yield batch.take(slice(start, start + batch_size))
        return
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield batch.take(order[start : start + batch_size])
