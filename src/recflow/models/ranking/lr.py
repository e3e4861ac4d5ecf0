"""Logistic regression: the baseline every other model has to beat."""

from __future__ import annotations

import torch
from torch import nn

from recflow.features import FeatureSpec
from recflow.models.layers import FieldEmbedding
from recflow.models.ranking.common import FieldModel, FieldsParams
from recflow.registry import MODELS


class LRParams(FieldsParams):
    pass


@MODELS.register("lr", params=LRParams)
class LogisticRegression(FieldModel):
    """Logistic regression: one scalar weight per field value (w·x for numerics) + bias."""

    def __init__(self, spec: FeatureSpec, params: LRParams) -> None:
        super().__init__(spec, params.selected(spec))
        self.weights = FieldEmbedding(spec, 1, self.input_names)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.weights(inputs).sum(dim=1) + self.bias
