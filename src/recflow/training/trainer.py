"""Training any RankingModel: `fit` runs its task on the training core, locally or DDP.

The task, the config and `predict` live in `recflow.training.ranking_task` (re-exported
here); DDP in `recflow.training.distributed`, imported only when `workers > 1`.
"""

from __future__ import annotations

from recflow.models.base import RankingModel
from recflow.training.core import build_optimizer
from recflow.training.core import fit as core_fit
from recflow.training.data import TensorBatch
from recflow.training.parquet_shards import ParquetShards
from recflow.training.ranking_task import (
    RankingTask,
    TrainerConfig,
    TrainResult,
    as_result,
    checkpoints_for,
    device_of,
    predict,
    split_labels,
    to_device,
)

__all__ = ["RankingTask", "TrainResult", "TrainerConfig", "as_result", "checkpoints_for",
           "device_of", "fit", "predict", "split_labels", "to_device"]


def fit(
    model: RankingModel, train: TensorBatch | ParquetShards,
    valid: TensorBatch | ParquetShards, config: TrainerConfig,
) -> TrainResult:
    """Train `model` in place through the training core, validating pCTR AUC / logloss.

    With early stopping on, the best-AUC weights are restored at the end; with
    `checkpoint_dir` set, every epoch is checkpointed and `resume` picks up the latest.
    `train` and `valid` may stream parquet shards (`parquet_shards.ParquetShards`: shuffled for
    training, in order for validation); `workers > 1` runs DDP.
    """
    if config.workers > 1:
        from recflow.training.distributed import fit_distributed  # imports the launcher

        return fit_distributed(model, train, valid, config)
    task = RankingTask(model, train, valid, config)
    optimizer = build_optimizer(model, **config.optimizer_args())
    result = core_fit(task, config.fit_config(), optimizer, checkpoints_for(config),
                      name=type(model).__name__, steps=task.steps())
    return as_result(result)
