"""Training of ranking models: tensors, the trainer (metrics: `recflow.metrics`)."""

from recflow.training.data import TensorBatch, frame_to_tensors, iterate_batches
from recflow.training.trainer import TrainerConfig, TrainResult, fit, predict

__all__ = [
    "TensorBatch",
    "TrainResult",
    "TrainerConfig",
    "fit",
    "frame_to_tensors",
    "iterate_batches",
    "predict",
]
