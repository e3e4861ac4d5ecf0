"""Data-parallel `fit` on `trainer.workers` local processes (DDP, torch's elastic launcher).

`fit` calls `fit_distributed` when `workers > 1`; the same YAML with `workers: 1` runs
the single-process loop. The calling process saves the split tensors once (`torch.save`)
and launches `workers` spawned processes with `elastic_launch` (c10d rendezvous on a free
localhost port, like `torchrun --standalone`). Each process memory-maps the file and
gathers only the rows of its shard, wraps the model in `DistributedDataParallel` and:

* draws the same permutation as the single-process trainer (same seeded generator), so
  every step rank `r` takes slice `r` of the *same global batch*; its loss is weighted by
  `rows_r * workers / rows`, so DDP's gradient average equals the single-process
  gradient of the global batch, also for a short last batch. With deterministic models
  (no dropout, no batch norm) the weights match single-process training up to float
  summation order; dropout masks differ (each rank seeds `seed + rank`) and batch norm
  sees per-rank statistics.
* rank 0 alone validates, checkpoints (every rank's RNG included, so resume is exact)
  and writes the result file the caller loads (`weights_only`); the early-stopping
  decision is broadcast so every rank leaves the loop at the same epoch.

A train split given as `ParquetShards` (a directory of parquet parts) is instead dealt
out by file: each rank streams its own files and `DistributedDataParallel.join` absorbs
ranks that run out of rows first.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.nn.parallel import DistributedDataParallel

from recflow.models.base import RankingModel
from recflow.training.core import EpochRecorder, Step, build_optimizer, run_epoch
from recflow.training.data import TensorBatch
from recflow.training.parquet_shards import ParquetShards, train_batches
from recflow.training.ranking_task import (
    RankingTask,
    TrainerConfig,
    TrainResult,
    checkpoints_for,
    device_of,
    to_device,
)

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    """What every worker receives (pickled once per spawned process)."""

    model: RankingModel
    config: TrainerConfig
    backend: str
    train: Path | ParquetShards  # a tensor file (global-batch slices) or a file-sharded stream
    valid: Path | ParquetShards  # a tensor file or a stream rank 0 scores in order
    result: Path


def resolve_backend(config: TrainerConfig, model: RankingModel) -> str:
    """`auto`: nccl for a model on CUDA, else gloo; nccl needs one GPU per worker."""
    name = config.backend
    if name == "auto":
        name = "nccl" if device_of(model).type == "cuda" else "gloo"
    if name == "nccl":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus < config.workers:
            raise ValueError(
                f"trainer.backend: nccl needs one CUDA device per worker "
                f"(trainer.workers={config.workers}), found {gpus}; use backend: gloo for CPU"
            )
    return name


def fit_distributed(
    model: RankingModel, train: TensorBatch | ParquetShards,
    valid: TensorBatch | ParquetShards, config: TrainerConfig,
) -> TrainResult:
    """`fit` with `config.workers` DDP processes; `model` ends with rank 0's final weights."""
    world = config.workers
    backend = resolve_backend(config, model)
    if isinstance(train, ParquetShards):
        if len(train.files) < world:
            raise ValueError(
                f"train shards: {train.path} has {len(train.files)} parquet file(s) but "
                f"trainer.workers is {world}; each worker streams whole files, so write at "
                "least `workers` parts (or lower trainer.workers)"
            )
    elif config.batch_size % world:
        raise ValueError(
            f"trainer.batch_size ({config.batch_size}) must be a multiple of trainer.workers "
            f"({world}): every step each worker takes batch_size / workers rows of the "
            "same global batch"
        )
    train = train.select(model.input_names)
    valid = valid.select(model.input_names)
    device = device_of(model)
    with tempfile.TemporaryDirectory(prefix="recflow-ddp-") as tmp:
        tmp_dir = Path(tmp)
        if isinstance(train, TensorBatch):
            torch.save({"inputs": train.inputs, "labels": train.labels}, tmp_dir / "train.pt")
            train = tmp_dir / "train.pt"
        if isinstance(valid, TensorBatch):
            torch.save({"inputs": valid.inputs, "labels": valid.labels}, tmp_dir / "valid.pt")
            valid = tmp_dir / "valid.pt"
        # torch.multiprocessing pickles tensors into shared memory: hand over a copy.
        job = _Job(model=copy.deepcopy(model).cpu(), config=config, backend=backend, train=train,
                   valid=valid, result=tmp_dir / "result.pt")
        launch = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=world,
            run_id=f"recflow-{uuid.uuid4().hex[:8]}",
            rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}",
            max_restarts=0, start_method="spawn",
            logs_specs=DefaultLogsSpecs(log_dir=str(tmp_dir / "logs")),
        )
        logger.info("training on %d %s workers (elastic launch)", world, backend)
        try:
            elastic_launch(launch, _worker)(job)
        except ChildFailedError as e:
            raise RuntimeError(
                f"distributed training (trainer.workers={world}) failed:\n{e.format_msg()}"
            ) from None
        out = torch.load(tmp_dir / "result.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(out["model"])
    model.to(device)
    return TrainResult(
        history=out["history"],
        best_epoch=out["best_epoch"],
        best_valid_auc=out["best_auc"] if out["best_auc"] > -math.inf else float("nan"),
        stopped_early=out["stopped_early"],
        train_seconds=sum(row["seconds"] for row in out["history"]),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- inside each worker ------------------------------------------------------------------
@record
def _worker(job: _Job) -> None:
    """Entry point of one spawned process (RANK / WORLD_SIZE / LOCAL_RANK set by the launcher)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    # Processes share the cores: oversubscribed intra-op threads make every step slower.
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // world))
    if rank == 0:
        logging.basicConfig(level=logging.INFO, format="[rank 0] %(name)s: %(message)s")
    if job.backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    try:
        _train(job, rank, world, device)
    finally:
        dist.destroy_process_group()


def _load(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    # mmap: rows are paged in when a rank gathers them; ranks share the page cache.
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)


def _train(job: _Job, rank: int, world: int, device: torch.device) -> None:
    """The training core's epoch loop with a DDP step; rank 0 validates and records."""
    config = job.config
    # A private copy: the pickled model's storage is shared memory, common to every rank.
    model = copy.deepcopy(job.model).to(device)
    torch.manual_seed(config.seed + rank)
    generator = torch.Generator().manual_seed(config.seed)  # same on every rank
    optimizer = build_optimizer(model, **config.optimizer_args())
    recorder = EpochRecorder(config.fit_config(), checkpoints_for(config), type(model).__name__)
    payload = recorder.resume(model, optimizer, generator)
    if payload is not None:
        torch.set_rng_state(payload["rank_rng"][rank])
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                  else None)
    train: dict[str, dict[str, torch.Tensor]] | ParquetShards = (
        job.train.shard(rank, world) if isinstance(job.train, ParquetShards)
        else _load(job.train)
    )
    valid_task = _valid_task(job, model, rank)
    for epoch in range(len(recorder.state.history) + 1, config.epochs + 1):
        if recorder.done:
            break
        start = time.perf_counter()
        desc = f"epoch {epoch}/{config.epochs}"
        if isinstance(train, ParquetShards):
            batches, steps = _stream_batches(ddp, model, train, config, generator, device)
        else:
            batches, steps = _global_batches(ddp, model, train, config, generator, rank, world,
                                             device)
        with ddp.join(enable=isinstance(train, ParquetShards)):  # uneven shard sizes
            loss, seen, train_s = run_epoch(model, optimizer, batches, lambda step: step,
                                            steps=steps, desc=desc,
                                            progress=config.progress and rank == 0)
        totals = torch.tensor([loss * seen, seen], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        rank_rng = [None] * world if rank == 0 else None
        dist.gather_object(torch.get_rng_state(), rank_rng, dst=0)
        if rank == 0:
            loss_sum, seen_all = totals.tolist()
            row = {"epoch": epoch, "train_loss": loss_sum / max(seen_all, 1),
                   **valid_task.validate(), "seconds": time.perf_counter() - start,
                   "samples_per_s": seen_all / train_s if train_s > 0 else 0.0}
            recorder.record(row, model, optimizer, generator, {"rank_rng": rank_rng})
        stop = torch.tensor([int(recorder.done)], device=device)
        dist.broadcast(stop, src=0)
        recorder.state.stopped_early = bool(stop.item())

    if rank == 0:
        result = recorder.finish(model)
        torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()},
                    "history": result.history, "best_epoch": result.best_epoch,
                    "best_auc": result.best_value, "stopped_early": result.stopped_early},
                   job.result)


def _valid_task(job: _Job, model: RankingModel, rank: int) -> RankingTask | None:
    """Rank 0 scores the whole valid split (a stream in order, or the tensor file)."""
    if rank != 0:
        return None
    valid = job.valid
    if not isinstance(valid, ParquetShards):
        parts = _load(valid)
        n_valid = len(next(iter(parts["labels"].values())))
        valid = TensorBatch(parts["inputs"], parts["labels"], np.zeros(n_valid, np.int8))
    return RankingTask(model, valid, valid, job.config)


def _steps(rows: int, config: TrainerConfig) -> int:
    steps = math.ceil(rows / config.batch_size)
    return steps if config.max_steps_per_epoch is None else min(steps, config.max_steps_per_epoch)


def _global_batches(
    ddp: DistributedDataParallel, model: RankingModel, train: dict[str, dict[str, torch.Tensor]],
    config: TrainerConfig, generator: torch.Generator, rank: int, world: int,
    device: torch.device,
) -> tuple[Iterator[Step], int]:
    """Single-process batches, each split across ranks, as this rank's `Step`s."""
    rows = len(next(iter(train["labels"].values())))
    order = torch.randperm(rows, generator=generator)  # as iterate_batches(shuffle=True)

    def steps() -> Iterator[Step]:
        for step in range(_steps(rows, config)):
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            mine = torch.tensor_split(batch, world)[rank]
            # rows * world / batch rows: DDP's mean of rank gradients = the global-batch gradient.
            weight, count = len(mine) * world / len(batch), len(mine)
            if count == 0:  # a last batch shorter than `workers`: join with a zero-weight row
                mine = batch[:1]
            inputs = to_device({k: v.index_select(0, mine) for k, v in train["inputs"].items()},
                               device)
            labels = to_device({k: v.index_select(0, mine) for k, v in train["labels"].items()},
                               device)
            yield Step(model.loss(ddp(inputs), labels), count, weight)

    return steps(), _steps(rows, config)


def _stream_batches(
    ddp: DistributedDataParallel, model: RankingModel, train: ParquetShards,
    config: TrainerConfig, generator: torch.Generator, device: torch.device,
) -> tuple[Iterator[Step], int | None]:
    """This rank's files in batch_size / workers batches; `join` covers uneven shard sizes."""
    local = max(1, config.batch_size // train.world_size)
    batches = itertools.islice(train_batches(train, local, generator), config.max_steps_per_epoch)
    steps = (Step(model.loss(ddp(to_device(mb.inputs, device)), to_device(mb.labels, device)),
                  len(mb)) for mb in batches)
    return steps, config.max_steps_per_epoch
