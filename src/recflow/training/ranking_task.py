"""Ranking models on the training core: the trainer's config, the task, checkpoints, predict.

`RankingTask` is what the core's `fit` runs for a RankingModel (local or one DDP rank):
batches, the loss step, validation by pCTR AUC / logloss. Everything that decides the
next step (weights, optimizer moments, the global RNG used by dropout, the shuffling
generator, history, best weights) goes into each epoch's checkpoint, so a run killed
after epoch k and resumed ends with bit-identical weights and metrics on CPU.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from recflow.config_types import MAX_BATCH, MAX_BUCKETS, MAX_EPOCHS, MAX_ROWS, StrictModel
from recflow.metrics.ranking import auc, logloss
from recflow.models.base import RankingModel
from recflow.training.core import Checkpoints, FitConfig, FitResult, Step
from recflow.training.data import TensorBatch, iterate_batches
from recflow.training.parquet_shards import ParquetShards, train_batches

logger = logging.getLogger(__name__)

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

    def fit_config(self) -> FitConfig:
        """The training core's view: monitor valid AUC, patience = early_stopping_patience."""
        return FitConfig(epochs=self.epochs, seed=self.seed, monitor="valid_auc", mode="max",
                         patience=self.early_stopping_patience,
                         max_steps_per_epoch=self.max_steps_per_epoch, progress=self.progress,
                         checkpoint_dir=self.checkpoint_dir, resume=self.resume)

    def optimizer_args(self) -> dict[str, Any]:
        return {"name": self.optimizer, "lr": self.lr, "weight_decay": self.weight_decay,
                "embedding_lr": self.embedding_lr,
                "embedding_weight_decay": self.embedding_weight_decay}


@dataclass
class TrainResult:
    """Per-epoch history (1-based `epoch`), the best epoch by valid AUC, total train time."""

    history: list[dict[str, float]]
    best_epoch: int
    best_valid_auc: float
    stopped_early: bool
    train_seconds: float  # wall time of all epochs (train + validation), including pre-resume


def to_device(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in tensors.items()}


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def predict(model: RankingModel, batch: TensorBatch | ParquetShards,
            batch_size: int = 16384) -> np.ndarray:
    """Probabilities (N, n_scores) in eval mode; the model's train/eval mode is restored.

    A `ParquetShards` split is scored chunk by chunk in file order (`in_order`), so
    only the scores are ever held whole.
    """
    was_training = model.training
    model.eval()
    device = device_of(model)
    batch = batch.select(model.input_names)
    batches = (batch.in_order(batch_size) if isinstance(batch, ParquetShards)
               else iterate_batches(batch, batch_size))
    try:
        with torch.inference_mode():
            scores = [model.predict(model(to_device(mb.inputs, device))).float().cpu()
                      for mb in batches]
    finally:
        model.train(was_training)
    if not scores:
        return np.zeros((0, len(model.score_names)), dtype=np.float32)
    return torch.cat(scores).numpy()


# ---- the ranking task ------------------------------------------------------------------
def split_labels(batch: TensorBatch | ParquetShards, task: str) -> np.ndarray:
    """The `task` label of every row, in `predict`'s order."""
    if isinstance(batch, ParquetShards):
        return batch.label(task)
    return batch.labels[task].numpy()


class RankingTask:
    """A ranking model for the training core: batches of the train split, its `loss`,
    pCTR (score 0) AUC / logloss on the valid split."""

    def __init__(self, model: RankingModel, train: TensorBatch | ParquetShards,
                 valid: TensorBatch | ParquetShards, config: TrainerConfig) -> None:
        self.module, self.config = model, config
        self.train, self.valid = train.select(model.input_names), valid.select(model.input_names)
        self.y_valid = split_labels(self.valid, model.tasks[0])
        self.device = device_of(model)
        self.batch_seconds = 0.0  # spent assembling batches since the last `validate`

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        """The epoch's batches; the time spent making each one is added to `batch_seconds`,
        so the history separates batch assembly from the training step."""
        batches = iter(train_batches(self.train, self.config.batch_size, generator))
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            self.batch_seconds += time.perf_counter() - start
            if batch is None:
                return
            yield batch

    def steps(self) -> int:
        return math.ceil(len(self.train) / self.config.batch_size)

    def step(self, mb: TensorBatch) -> Step:
        loss = self.module.loss(self.module(to_device(mb.inputs, self.device)),
                                to_device(mb.labels, self.device))
        return Step(loss, len(mb))

    def validate(self) -> dict[str, float]:
        """Valid AUC / logloss, and `batch_seconds` of the epoch just trained (if any)."""
        p_valid = predict(self.module, self.valid, self.config.eval_batch_size)[:, 0]
        metrics = {"valid_auc": auc(self.y_valid, p_valid),
                   "valid_logloss": logloss(self.y_valid, p_valid)}
        if self.batch_seconds:
            metrics["batch_seconds"] = self.batch_seconds
        self.batch_seconds = 0.0
        return metrics


def checkpoints_for(config: TrainerConfig) -> Checkpoints | None:
    """The ranking run's checkpoints; resuming is refused if a setting that changes results
    differs (the directory itself is keyed by entry and feature-spec hash)."""
    if not config.checkpoint_dir:
        return None
    return Checkpoints(config.checkpoint_dir,
                       {"trainer": config.model_dump(exclude=_RESUME_FREE)})


def as_result(result: FitResult) -> TrainResult:
    return TrainResult(history=result.history, best_epoch=result.best_epoch,
                       best_valid_auc=result.best_value, stopped_early=result.stopped_early,
                       train_seconds=result.train_seconds)
