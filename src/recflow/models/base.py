"""The contract every recflow model implements (built-in or plugin): `RankingModelProtocol`.

Inputs are a dict of column tensors keyed by FeatureSpec field name:
categorical -> int64 (B,), numeric -> float32 (B,), sequence -> int64 (B, L)
with 0 as padding. `forward` returns logits (B, len(tasks)). Nothing else is
model-specific for the trainer, the evaluator or the ONNX exporter.

`RankingModelProtocol` is the contract (what those callers use; `MODELS` checks every
registration against it); `RankingModel` implements all of it but `forward`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from recflow.features import FeatureSpec
from recflow.registry import MODELS


@runtime_checkable
class RankingModelProtocol(Protocol):
    """What the trainer, evaluator, ONNX exporter and scorer call on a ranking model.

    Registered models must also be `torch.nn.Module`s (`MODELS` checks both).
    """

    #: label names (without `label_`) the logit columns are trained on; column 0 is the click
    tasks: tuple[str, ...]

    @property
    def input_names(self) -> list[str]:
        """Spec fields `forward` reads, in order: what training feeds and ONNX takes."""

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Column tensors keyed by field name -> logits (B, len(tasks))."""

    def loss(self, logits: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar training loss from the logits and float (B,) labels keyed by task."""

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> scores (B, n_scores); exported graphs end with it."""

    @property
    def score_names(self) -> list[str]:
        """A name per `predict` column (the keys of served scores)."""


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


MODELS.set_contract(RankingModelProtocol, base=nn.Module, defaults=RankingModel,
                    stubs=("forward",))
