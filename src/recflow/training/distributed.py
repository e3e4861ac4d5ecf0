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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from recflow.models.base import RankingModel
from recflow.training.data import TensorBatch
from recflow.training.metrics import auc, logloss
from recflow.training.stream import ParquetShards, train_batches
from recflow.training.trainer import (
    TrainerConfig,
    TrainResult,
    _checkpoint_payload,
    _device,
    _latest_checkpoint,
    _optimizer,
    _resume,
    _save_checkpoint,
    _State,
    _to,
    predict,
    split_labels,
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
        name = "nccl" if _device(model).type == "cuda" else "gloo"
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
    device = _device(model)
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
    config = job.config
    # A private copy: the pickled model's storage is shared memory, common to every rank.
    model = copy.deepcopy(job.model).to(device)
    torch.manual_seed(config.seed + rank)
    generator = torch.Generator().manual_seed(config.seed)  # same on every rank
    optimizer = _optimizer(model, config)
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    state = _State()
    latest = _latest_checkpoint(ckpt_dir) if ckpt_dir and config.resume else None
    if latest is not None:
        state = _resume(latest, model, optimizer, generator, config)
        ranks_rng = torch.load(latest, map_location="cpu", weights_only=True)["rank_rng"]
        torch.set_rng_state(ranks_rng[rank])
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                  else None)
    train: dict[str, dict[str, torch.Tensor]] | ParquetShards = (
        job.train.shard(rank, world) if isinstance(job.train, ParquetShards)
        else _load(job.train)
    )
    valid = None
    if rank == 0 and isinstance(job.valid, ParquetShards):
        valid = job.valid
    elif rank == 0:
        parts = _load(job.valid)
        n_valid = len(next(iter(parts["labels"].values())))
        valid = TensorBatch(parts["inputs"], parts["labels"], np.zeros(n_valid, np.int8))

    for epoch in range(len(state.history) + 1, config.epochs + 1):
        if state.stopped_early:
            break
        start = time.perf_counter()
        desc = f"epoch {epoch}/{config.epochs}"
        if isinstance(train, ParquetShards):
            loss_sum, seen = _stream_epoch(ddp, model, optimizer, train, config, generator,
                                           device, desc if rank == 0 else None)
        else:
            loss_sum, seen = _global_batch_epoch(ddp, model, optimizer, train, config,
                                                 generator, rank, world, device,
                                                 desc if rank == 0 else None)
        totals = torch.tensor([loss_sum, seen], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        train_s = time.perf_counter() - start
        rank_rng = [None] * world if rank == 0 else None
        dist.gather_object(torch.get_rng_state(), rank_rng, dst=0)
        if rank == 0:
            _validate_and_checkpoint(model, optimizer, generator, state, config, valid, epoch,
                                     totals.tolist(), train_s, start, rank_rng, ckpt_dir)
        stop = torch.tensor([int(state.stopped_early)], device=device)
        dist.broadcast(stop, src=0)
        state.stopped_early = bool(stop.item())

    if rank == 0:
        if state.stopped_early:
            logger.info("early stopping: no valid AUC gain for %d epochs",
                        config.early_stopping_patience)
        if state.best_weights is not None:
            model.load_state_dict(state.best_weights)
            logger.info("restored best weights of epoch %d", state.best_epoch)
        torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()},
                    "history": state.history, "best_epoch": state.best_epoch,
                    "best_auc": state.best_auc, "stopped_early": state.stopped_early},
                   job.result)


def _steps(rows: int, config: TrainerConfig) -> int:
    steps = math.ceil(rows / config.batch_size)
    return steps if config.max_steps_per_epoch is None else min(steps, config.max_steps_per_epoch)


def _global_batch_epoch(
    ddp: DistributedDataParallel, model: RankingModel, optimizer: torch.optim.Optimizer,
    train: dict[str, dict[str, torch.Tensor]], config: TrainerConfig,
    generator: torch.Generator, rank: int, world: int, device: torch.device, desc: str | None,
) -> tuple[float, int]:
    """Single-process batches, each split across ranks; returns (this rank's loss sum, rows)."""
    model.train()
    rows = len(next(iter(train["labels"].values())))
    order = torch.randperm(rows, generator=generator)  # as iterate_batches(shuffle=True)
    loss_sum, seen = 0.0, 0
    steps = _steps(rows, config)
    for step in tqdm(range(steps), desc=desc, unit="step", leave=False,
                     disable=True if desc is None or not config.progress else None):
        batch = order[step * config.batch_size:(step + 1) * config.batch_size]
        mine = torch.tensor_split(batch, world)[rank]
        # rows * world / batch rows: DDP's mean of rank gradients = the global-batch gradient.
        weight, count = len(mine) * world / len(batch), len(mine)
        if count == 0:  # a last batch shorter than `workers`: join with a zero-weight row
            mine = batch[:1]
        inputs = _to({k: v.index_select(0, mine) for k, v in train["inputs"].items()}, device)
        labels = _to({k: v.index_select(0, mine) for k, v in train["labels"].items()}, device)
        loss = model.loss(ddp(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()
        optimizer.step()
        loss_sum += loss.item() * count
        seen += count
    return loss_sum, seen


def _stream_epoch(
    ddp: DistributedDataParallel, model: RankingModel, optimizer: torch.optim.Optimizer,
    train: ParquetShards, config: TrainerConfig, generator: torch.Generator,
    device: torch.device, desc: str | None,
) -> tuple[float, int]:
    """This rank's files in batch_size / workers batches; `join` covers uneven shard sizes."""
    model.train()
    local = max(1, config.batch_size // train.world_size)
    batches = train_batches(train, local, generator)
    loss_sum, seen = 0.0, 0
    with ddp.join():
        for mb in tqdm(itertools.islice(batches, config.max_steps_per_epoch), desc=desc,
                       unit="step", leave=False,
                       disable=True if desc is None or not config.progress else None):
            loss = model.loss(ddp(_to(mb.inputs, device)), _to(mb.labels, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(mb)
            seen += len(mb)
    return loss_sum, seen


def _validate_and_checkpoint(
    model: RankingModel, optimizer: torch.optim.Optimizer, generator: torch.Generator,
    state: _State, config: TrainerConfig, valid: TensorBatch | ParquetShards | None, epoch: int,
    totals: list[float], train_s: float, start: float, rank_rng: list[Any] | None,
    ckpt_dir: Path | None,
) -> None:
    """Rank 0: the single-process epoch bookkeeping (history, best weights, patience)."""
    assert valid is not None
    y_valid = split_labels(valid, model.tasks[0])
    p_valid = predict(model, valid, config.eval_batch_size)[:, 0]
    loss_sum, seen = totals
    row = {
        "epoch": epoch,
        "train_loss": loss_sum / max(seen, 1),
        "valid_auc": auc(y_valid, p_valid),
        "valid_logloss": logloss(y_valid, p_valid),
        "seconds": time.perf_counter() - start,
        "samples_per_s": seen / train_s if train_s > 0 else 0.0,
    }
    state.history.append(row)
    score = -math.inf if math.isnan(row["valid_auc"]) else row["valid_auc"]
    patience = config.early_stopping_patience
    if state.best_epoch == 0 or score > state.best_auc:
        state.best_epoch, state.best_auc = epoch, score
        if patience is not None:
            state.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    elif patience is not None and epoch - state.best_epoch >= patience:
        state.stopped_early = True
    logger.info(
        "epoch %d/%d train_loss=%.5f valid_auc=%.5f valid_logloss=%.5f %.1fs %.0f samples/s%s",
        epoch, config.epochs, row["train_loss"], row["valid_auc"], row["valid_logloss"],
        row["seconds"], row["samples_per_s"], " (best)" if state.best_epoch == epoch else "",
    )
    if ckpt_dir is not None:
        payload = _checkpoint_payload(model, optimizer, generator, state, config)
        _save_checkpoint(ckpt_dir, epoch, {**payload, "rank_rng": rank_rng})
