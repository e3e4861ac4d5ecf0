"""Training loop for any RankingModel: param groups, early stopping, resumable checkpoints.

Everything that decides the next step (weights, optimizer moments, the global
RNG used by dropout, the shuffling generator, history, best weights) goes into
each epoch's checkpoint, so a run killed after epoch k and resumed ends with
bit-identical weights and metrics on CPU.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from tqdm import tqdm

from recflow.config_checks import MAX_BATCH, MAX_BUCKETS, MAX_EPOCHS, MAX_ROWS, StrictModel
from recflow.models.base import RankingModel
from recflow.training.data import TensorBatch, iterate_batches
from recflow.training.metrics import auc, logloss
from recflow.training.stream import ParquetShards, train_batches

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"epoch_(\d+)\.pt")
# Settings that may change between an interrupted run and its resume without changing results.
_RESUME_FREE = {"epochs", "progress", "checkpoint_dir", "resume", "eval_batch_size"}


class TrainerConfig(StrictModel):
    """Training parameters; unknown keys are rejected so YAML typos fail early.

    Numbers are strict (`epochs: true` is an error, not one epoch) and sizes bounded.
    """

    epochs: int = Field(5, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(4096, ge=1, le=MAX_BATCH)
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    embedding_lr: float | None = Field(None, gt=0, description="Defaults to `lr`.")
    embedding_weight_decay: float = Field(0.0, ge=0)
    early_stopping_patience: int | None = Field(
        None, ge=1, le=MAX_EPOCHS, description="Epochs without a valid-AUC gain before stopping; None: off."
    )
    seed: int = 0
    eval_batch_size: int = Field(16384, ge=1, le=MAX_BATCH)
    max_steps_per_epoch: int | None = Field(None, ge=1, le=MAX_ROWS)
    progress: bool = True
    checkpoint_dir: str | None = None
    resume: bool = Field(
        True, description="Continue from the latest checkpoint in `checkpoint_dir` (after a "
        "crash or interruption; exact, and refused if the trainer settings changed). The "
        "directory is keyed by the model entry, trainer config and feature-spec hash.")
    workers: int = Field(
        1, ge=1, le=1024, description="Data-parallel processes (DDP via torch's elastic launcher); "
        "1: train in this process. batch_size is the global batch, split across workers."
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="Process-group backend when workers > 1; auto: nccl for a model "
        "on CUDA, else gloo."
    )
    shuffle_buffer: int = Field(
        262_144, ge=1, le=MAX_BUCKETS, description="Rows mixed by the shuffle buffer when the train split is a "
        "directory of parquet shards (memory ~ buffer + one row group)."
    )


@dataclass
class TrainResult:
    """Per-epoch history (1-based `epoch`), the best epoch by valid AUC, total train time."""

    history: list[dict[str, float]]
    best_epoch: int
    best_valid_auc: float
    stopped_early: bool
    train_seconds: float  # wall time of all epochs (train + validation), including pre-resume


@dataclass
class _State:
    """What a checkpoint restores besides model/optimizer/RNG (plain types for weights_only)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_auc: float = -math.inf
    best_weights: dict[str, torch.Tensor] | None = None
    stopped_early: bool = False


def _param_groups(model: nn.Module, config: TrainerConfig) -> list[dict[str, Any]]:
    """Embedding tables get their own lr/decay: they are sparse-ish and huge, unlike dense layers."""
    embedding_ids = {
        id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)
    }
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) in embedding_ids],
         "lr": config.embedding_lr or config.lr, "weight_decay": config.embedding_weight_decay},
        {"params": [p for p in params if id(p) not in embedding_ids],
         "lr": config.lr, "weight_decay": config.weight_decay},
    ]
    return [g for g in groups if g["params"]]


def _optimizer(model: nn.Module, config: TrainerConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(_param_groups(model, config))


def _to(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in tensors.items()}


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def predict(model: RankingModel, batch: TensorBatch | ParquetShards,
            batch_size: int = 16384) -> np.ndarray:
    """Probabilities (N, n_scores) in eval mode; the model's train/eval mode is restored.

    A `ParquetShards` split is scored chunk by chunk in file order (`in_order`), so
    only the scores are ever held whole.
    """
    was_training = model.training
    model.eval()
    device = _device(model)
    batch = batch.select(model.input_names)
    batches = (batch.in_order(batch_size) if isinstance(batch, ParquetShards)
               else iterate_batches(batch, batch_size))
    try:
        with torch.inference_mode():
            scores = [model.predict(model(_to(mb.inputs, device))).float().cpu()
                      for mb in batches]
    finally:
        model.train(was_training)
    if not scores:
        return np.zeros((0, len(model.score_names)), dtype=np.float32)
    return torch.cat(scores).numpy()


# ---- checkpoints -------------------------------------------------------------------------
def split_labels(batch: TensorBatch | ParquetShards, task: str) -> np.ndarray:
    """The `task` label of every row, in `predict`'s order."""
    if isinstance(batch, ParquetShards):
        return batch.label(task)
    return batch.labels[task].numpy()


def _latest_checkpoint(directory: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in directory.glob("epoch_*.pt")
             if (m := _CHECKPOINT.fullmatch(p.name))]
    return max(found)[1] if found else None


def _save_checkpoint(directory: Path, epoch: int, payload: dict[str, Any]) -> None:
    """Write atomically (tmp + fsync + os.replace), then drop older epochs: a crash leaves one valid file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"epoch_{epoch:04d}.pt"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in directory.glob("epoch_*.pt"):
        if old != path and _CHECKPOINT.fullmatch(old.name):
            old.unlink()


def _checkpoint_payload(
    model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
    state: _State, config: TrainerConfig,
) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "shuffle_rng": generator.get_state(),
        "history": state.history,
        "best_epoch": state.best_epoch,
        "best_auc": state.best_auc,
        "best_weights": state.best_weights,
        "stopped_early": state.stopped_early,
        "config": config.model_dump(exclude=_RESUME_FREE),
    }


def _resume(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
    generator: torch.Generator, config: TrainerConfig,
) -> _State:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    expected = config.model_dump(exclude=_RESUME_FREE)
    if ckpt["config"] != expected:
        changed = sorted(k for k in expected if ckpt["config"].get(k) != expected[k])
        raise ValueError(f"cannot resume from {path}: trainer settings changed: {changed}")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["torch_rng"])
    generator.set_state(ckpt["shuffle_rng"])
    logger.info("resuming %s from %s (epoch %d)", type(model).__name__, path,
                len(ckpt["history"]))
    return _State(history=ckpt["history"], best_epoch=ckpt["best_epoch"],
                  best_auc=ckpt["best_auc"], best_weights=ckpt["best_weights"],
                  stopped_early=ckpt["stopped_early"])


# ---- training ----------------------------------------------------------------------------
def _train_epoch(
    model: RankingModel, optimizer: torch.optim.Optimizer, train: TensorBatch | ParquetShards,
    config: TrainerConfig, generator: torch.Generator, desc: str,
) -> tuple[float, int, float]:
    """One pass (or `max_steps_per_epoch` steps): (mean loss, samples seen, seconds)."""
    model.train()
    device = _device(model)
    steps = math.ceil(len(train) / config.batch_size)
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)
    loss_sum, seen, start = 0.0, 0, time.perf_counter()
    with tqdm(total=steps, desc=desc, unit="step", leave=False,
              disable=None if config.progress else True) as bar:
        batches = train_batches(train, config.batch_size, generator)
        for mb in itertools.islice(batches, steps):
            loss = model.loss(model(_to(mb.inputs, device)), _to(mb.labels, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(mb)
            seen += len(mb)
            bar.update()
            if not bar.disable:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", refresh=False,
                                samples_s=f"{seen / (time.perf_counter() - start):.0f}")
    return loss_sum / max(seen, 1), seen, time.perf_counter() - start


def fit(
    model: RankingModel, train: TensorBatch | ParquetShards,
    valid: TensorBatch | ParquetShards, config: TrainerConfig,
) -> TrainResult:
    """Train `model` in place, validating pCTR (score 0) AUC/logloss after each epoch.

    With early stopping on, the best-AUC weights are restored at the end; with
    `checkpoint_dir` set, every epoch is checkpointed and `resume` picks up the latest.
    `train` and `valid` may stream parquet shards (`stream.ParquetShards`: shuffled for
    training, in order for validation); `workers > 1` runs DDP.
    """
    if config.workers > 1:
        from recflow.training.distributed import fit_distributed  # imports the launcher

        return fit_distributed(model, train, valid, config)
    train = train.select(model.input_names)
    valid = valid.select(model.input_names)
    y_valid = split_labels(valid, model.tasks[0])
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    patience = config.early_stopping_patience

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = _optimizer(model, config)
    state = _State()
    latest = _latest_checkpoint(ckpt_dir) if ckpt_dir and config.resume else None
    if latest is not None:
        state = _resume(latest, model, optimizer, generator, config)

    for epoch in range(len(state.history) + 1, config.epochs + 1):
        if state.stopped_early:
            break
        epoch_start = time.perf_counter()
        loss, seen, train_s = _train_epoch(
            model, optimizer, train, config, generator, f"epoch {epoch}/{config.epochs}"
        )
        p_valid = predict(model, valid, config.eval_batch_size)[:, 0]
        row = {
            "epoch": epoch,
            "train_loss": loss,
            "valid_auc": auc(y_valid, p_valid),
            "valid_logloss": logloss(y_valid, p_valid),
            "seconds": time.perf_counter() - epoch_start,
            "samples_per_s": seen / train_s if train_s > 0 else 0.0,
        }
        state.history.append(row)
        score = -math.inf if math.isnan(row["valid_auc"]) else row["valid_auc"]
        if state.best_epoch == 0 or score > state.best_auc:
            state.best_epoch, state.best_auc = epoch, score
            if patience is not None:
                state.best_weights = {k: v.detach().clone()
                                      for k, v in model.state_dict().items()}
        elif patience is not None and epoch - state.best_epoch >= patience:
            state.stopped_early = True
        logger.info(
            "epoch %d/%d train_loss=%.5f valid_auc=%.5f valid_logloss=%.5f "
            "%.1fs %.0f samples/s%s", epoch, config.epochs, loss, row["valid_auc"],
            row["valid_logloss"], row["seconds"], row["samples_per_s"],
            " (best)" if state.best_epoch == epoch else "",
        )
        if ckpt_dir is not None:
            _save_checkpoint(ckpt_dir, epoch,
                             _checkpoint_payload(model, optimizer, generator, state, config))

    if state.stopped_early:
        logger.info("early stopping: no valid AUC gain for %d epochs", patience)
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
        logger.info("restored best weights of epoch %d", state.best_epoch)
    return TrainResult(
        history=state.history,
        best_epoch=state.best_epoch,
        best_valid_auc=state.best_auc if state.best_auc > -math.inf else float("nan"),
        stopped_early=state.stopped_early,
        train_seconds=sum(row["seconds"] for row in state.history),
    )
