"""Training and evaluation of ranking models: tensors, trainer, metrics (plots: `.plots`)."""

from recflow.training.data import TensorBatch, frame_to_tensors, iterate_batches
from recflow.training.metrics import evaluate_scores
from recflow.training.trainer import TrainerConfig, TrainResult, fit, predict

__all__ = [
    "TensorBatch",
    "TrainResult",
    "TrainerConfig",
    "evaluate_scores",
    "fit",
    "frame_to_tensors",
    "iterate_batches",
    "predict",
]
