"""The contract every recflow model implements (built-in or plugin).

Inputs are a dict of column tensors keyed by FeatureSpec field name:
categorical -> int64 (B,), numeric -> float32 (B,), sequence -> int64 (B, L)
with 0 as padding. `forward` returns logits (B, len(tasks)). Nothing else is
model-specific for the trainer, the evaluator or the ONNX exporter.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from recflow.features import FeatureSpec
from recflow.registry import MODELS


class RankingModel(nn.Module):
    """Base class: scores impressions; column 0 of `predict` is always pCTR."""

    #: label names (without the `label_` prefix) that the output columns are trained on
    tasks: tuple[str, ...] = ("click",)

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        self.spec = spec

    @property
    def input_names(self) -> list[str]:
        """Spec fields this model reads (default: all); export and serving feed only these."""
        return self.spec.names

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean BCE over tasks; multi-task models override (e.g. ESMM)."""
        target = torch.stack([labels[t].float() for t in self.tasks], dim=1)
        return F.binary_cross_entropy_with_logits(logits, target)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> probabilities (B, n_scores); exported graphs end with this."""
        return torch.sigmoid(logits)

    @property
    def score_names(self) -> list[str]:
        """Name of each `predict` column, e.g. ["ctr"] or ["ctr", "ctcvr"]."""
        return ["ctr" if t == "click" else t for t in self.tasks]


#: what a ranking model class must provide besides being an nn.Module (RankingModel does)
MODEL_CONTRACT = ("forward", "input_names", "tasks", "loss", "predict", "score_names")


def model_contract_problems(target: object) -> str:
    """'' when a plugin's target is a ranking model class, else what is wrong with it.

    The contract the registry checks third-party models against (like a pluggy
    hookspec, it lives beside the base class it describes).
    """
    if not inspect.isclass(target):
        return "a model must be a class (a torch.nn.Module implementing RankingModel)"
    if not issubclass(target, nn.Module):
        return "a model class must subclass torch.nn.Module (subclass RankingModel)"
    missing = [a for a in MODEL_CONTRACT if not hasattr(target, a)]
    if missing:
        return f"it lacks {missing} of the RankingModel contract (subclass RankingModel)"
    if target.forward in (nn.Module.forward, RankingModel.forward):
        return "it does not implement forward(inputs: dict[str, Tensor]) -> logits"
    return ""


MODELS.set_contract(model_contract_problems)
