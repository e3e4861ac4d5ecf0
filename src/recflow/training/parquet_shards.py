"""Training input streamed from a directory of parquet shards through a shuffle buffer.

`ParquetShards` is an `IterableDataset` of column-tensor mini-batches (`TensorBatch`), so a
train split larger than memory (50M+ impressions) trains with a bounded footprint:

    peak rows held ~ max(shuffle_buffer, shuffle_buffer / 2 + batch_size) + read_rows

(x2 while the buffer is permuted) plus one compressed row group, whatever the number or
size of the shards: parquet is read `read_rows` rows at a time, only the columns the
model reads, and converted by `frame_to_tensors`, the same code as the in-memory path.

Files, not rows, are dealt to readers. Every epoch the file order is permuted with the
epoch seed (identical on every rank), and reader `r` of `R` (rank x DataLoader worker)
takes files `r, r + R, ...`, so each row is read exactly once per epoch across readers.
Rows are shuffled by the buffer: once it holds `shuffle_buffer` rows it is permuted and
everything above half of it leaves in full batches; the rest mixes with the next rows,
so rows of different files (and row groups) end up in the same batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from recflow.datasets.sharded import ParquetParts
from recflow.features.spec import LABEL_PREFIX, FeatureSpec
from recflow.training.data import TensorBatch, frame_to_tensors, iterate_batches


class ParquetShards(IterableDataset):
    """Shuffled `TensorBatch`es from `path/*.parquet` (processed columns + key_user + label_*).

    `set_epoch(e)` (or `iter_batches(batch_size, seed)`) changes the file order and the
    row shuffle; `shard(rank, world_size)` restricts a copy to one rank's files.
    """

    def __init__(
        self,
        path: str | Path | ParquetParts,
        spec: FeatureSpec,
        batch_size: int = 4096,
        shuffle_buffer: int = 262_144,
        read_rows: int = 65_536,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        if isinstance(path, ParquetParts):  # what the catalog's ShardedParquetDataset loads
            self.files, self.path = list(path.files), Path(path.files[0]).parent
        else:
            self.path = Path(path)
            if not self.path.is_dir():
                raise FileNotFoundError(
                    f"train shards: {self.path} is not a directory of parquet parts "
                    "(expected e.g. model_input_train/part-*.parquet)"
                )
            self.files = sorted(self.path.glob("*.parquet"))
            if not self.files:
                raise FileNotFoundError(f"train shards: no *.parquet file in {self.path}")
        if min(batch_size, shuffle_buffer, read_rows) < 1:
            raise ValueError("ParquetShards: batch_size, shuffle_buffer, read_rows must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"ParquetShards: rank {rank} outside world_size {world_size}")
        self.spec, self.batch_size, self.read_rows = spec, batch_size, read_rows
        self.shuffle_buffer = shuffle_buffer
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        metas = [pq.ParquetFile(f).metadata for f in self.files]
        self.file_rows = [m.num_rows for m in metas]
        names = set(metas[0].schema.names)
        keys = ["key_user"] if "key_user" in names else []  # a log may have no user key
        needed = [*keys, *(c for f in spec.fields for c in f.output_columns())]
        for f, meta in zip(self.files, metas, strict=True):
            missing = [c for c in needed if c not in meta.schema.names]
            if missing:
                raise KeyError(f"train shard {f.name}: missing column(s) {missing[:3]} "
                               "of the feature spec (was it written by the same preprocessing?)")
        labels = [LABEL_PREFIX + n for n in spec.labels if LABEL_PREFIX + n in names]
        self.columns = [*needed, *labels]

    def __len__(self) -> int:
        """Rows in all shards (every rank together): one epoch of the whole split."""
        return sum(self.file_rows)

    # ---- copies -------------------------------------------------------------------------
    def _copy(self, **changes: object) -> ParquetShards:
        other = object.__new__(ParquetShards)
        other.__dict__.update(self.__dict__ | changes)
        return other

    def select(self, names: list[str]) -> ParquetShards:
        """Only the fields a model reads, so the other columns are never decoded."""
        fields = [f for f in self.spec.fields if f.name in names]
        spec = FeatureSpec(fields=fields, labels=self.spec.labels)
        keep = {"key_user", *(c for f in fields for c in f.output_columns())}
        return self._copy(spec=spec, columns=[c for c in self.columns
                                              if c in keep or c.startswith(LABEL_PREFIX)])

    def shard(self, rank: int, world_size: int) -> ParquetShards:
        if not 0 <= rank < world_size:
            raise ValueError(f"ParquetShards: rank {rank} outside world_size {world_size}")
        return self._copy(rank=rank, world_size=world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # ---- iteration ----------------------------------------------------------------------
    def files_for(self, seed: int, reader: int, readers: int) -> list[Path]:
        """This reader's files for the epoch seeded `seed` (same permutation on every reader)."""
        order = torch.randperm(len(self.files), generator=torch.Generator().manual_seed(seed))
        return [self.files[i] for i in order[reader::readers].tolist()]

    def iter_batches(self, batch_size: int, seed: int) -> Iterator[TensorBatch]:
        """One epoch of this reader's rows, shuffled, in `batch_size` batches (last may be short)."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        reader, readers = self.rank * workers + worker, self.world_size * workers
        files = self.files_for(seed, reader, readers)
        state = np.random.SeedSequence([seed, reader]).generate_state(2, np.uint64)
        generator = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
        return _shuffled(self._chunks(files), self.shuffle_buffer, batch_size, generator)

    def __iter__(self) -> Iterator[TensorBatch]:
        return self.iter_batches(self.batch_size, self.seed + self.epoch)

    def in_order(self, batch_size: int) -> Iterator[TensorBatch]:
        """Every row of every file (whatever the rank), in file order, unshuffled: for
        scoring a split that does not fit in memory (validation, test)."""
        return self._chunks(self.files, batch_size)

    def label(self, name: str) -> np.ndarray:
        """One label column of every file, in `in_order` order (a narrow read)."""
        column = LABEL_PREFIX + name
        if column not in self.columns:
            raise KeyError(f"shards in {self.path}: no label column '{column}'")
        values = ParquetParts(tuple(self.files), name=str(self.path)).read([column])[column]
        return values.to_numpy(np.float32)

    def _chunks(self, files: list[Path], rows: int | None = None) -> Iterator[TensorBatch]:
        if not files:  # more readers than files: this one has none this epoch
            return
        parts = ParquetParts(tuple(files), name=str(self.path))
        for frame in parts.iter_frames(self.columns, rows or self.read_rows):
            yield frame_to_tensors(frame, self.spec)


def concat(batches: list[TensorBatch]) -> TensorBatch:
    """Row-wise concatenation (one `torch.cat` per column)."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    return TensorBatch(
        inputs={k: torch.cat([b.inputs[k] for b in batches]) for k in first.inputs},
        labels={k: torch.cat([b.labels[k] for b in batches]) for k in first.labels},
        users=np.concatenate([b.users for b in batches]),
    )


def _shuffled(
    chunks: Iterable[TensorBatch], buffer: int, batch_size: int, generator: torch.Generator
) -> Iterator[TensorBatch]:
    """Buffer-shuffle: permute once the buffer is full, emit full batches above half of it."""
    pending: list[TensorBatch] = []
    rows = 0
    for chunk in chunks:
        pending.append(chunk)
        rows += len(chunk)
        out = (rows - buffer // 2) // batch_size * batch_size
        if rows < buffer or out <= 0:
            continue
        pool = concat(pending)
        pending = []  # let the chunks go before the permuted copy is made
        pool = pool.take(torch.randperm(rows, generator=generator))
        yield from iterate_batches(pool.take(slice(0, out)), batch_size)
        keep = pool.take(slice(out, rows))
        pending = [TensorBatch({k: v.clone() for k, v in keep.inputs.items()},
                               {k: v.clone() for k, v in keep.labels.items()}, keep.users.copy())]
        rows -= out
        del pool, keep
    if rows:
        pool = concat(pending)
        pending = []
        yield from iterate_batches(pool, batch_size, shuffle=True, generator=generator)


def train_batches(
    train: TensorBatch | ParquetShards, batch_size: int, generator: torch.Generator
) -> Iterator[TensorBatch]:
    """One epoch of shuffled batches from either input; a stream's seed comes from
    `generator`, so checkpoints (which hold its state) resume streams exactly too."""
    if isinstance(train, ParquetShards):
        seed = int(torch.randint(2**62, (1,), generator=generator))
        return train.iter_batches(batch_size, seed)
    return iterate_batches(train, batch_size, shuffle=True, generator=generator)


def train_input(
    train: pd.DataFrame | str | Path | ParquetParts | ParquetShards, spec: FeatureSpec,
    shuffle_buffer: int = 262_144,
) -> TensorBatch | ParquetShards:
    """What `fit` trains (or validates) on: a frame becomes column tensors, shards a stream."""
    if isinstance(train, ParquetShards):
        return train
    if isinstance(train, str | Path | ParquetParts):
        return ParquetShards(train, spec, shuffle_buffer=shuffle_buffer)
    return frame_to_tensors(train, spec)
