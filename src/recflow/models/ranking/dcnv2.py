"""DCN-v2: explicit bounded-degree feature crosses next to (or feeding) an MLP."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from recflow.features import FeatureSpec
from recflow.models.layers import MLP, CrossNetV2, FieldEmbedding
from recflow.models.ranking.common import DeepParams, FieldModel
from recflow.registry import MODELS


class DCNv2Params(DeepParams):
    structure: Literal["stacked", "parallel"] = "parallel"
    cross_layers: int = Field(3, ge=1)
    low_rank: int | None = Field(None, ge=1, description="Rank r of the expert matrices; None = full-rank W.")
    num_experts: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _experts_need_low_rank(self) -> DCNv2Params:
        if self.num_experts > 1 and self.low_rank is None:
            raise ValueError("num_experts > 1 needs low_rank (the experts are low-rank)")
        return self


@MODELS.register("dcnv2", params=DCNv2Params)
class DCNv2(FieldModel):
    """DCN-v2: cross network then MLP (stacked) or both side by side (parallel)."""

    def __init__(self, spec: FeatureSpec, params: DCNv2Params) -> None:
        super().__init__(spec, params.selected(spec))
        self.embedding = FieldEmbedding(spec, params.embed_dim, self.input_names)
        dim = self.embedding.num_fields * params.embed_dim
        self.parallel = params.structure == "parallel"
        self.cross = CrossNetV2(dim, params.cross_layers, params.low_rank, params.num_experts)
        self.mlp = MLP(dim, params.hidden, dropout=params.dropout, norm=params.norm,
                       activation=params.activation)
        self.head = nn.Linear(self.mlp.output_dim + (dim if self.parallel else 0), 1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x0 = self.embedding(inputs).flatten(1)
        if self.parallel:
            return self.head(torch.cat([self.cross(x0), self.mlp(x0)], dim=1))
        return self.head(self.mlp(self.cross(x0)))
