"""AutoInt: field interactions learned by stacked multi-head self-attention."""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt
from torch import nn

from recflow.features import FeatureSpec
from recflow.models.layers import MLP, FieldEmbedding, MultiHeadSelfAttention
from recflow.models.ranking.common import DeepParams, FieldModel
from recflow.registry import MODELS


class AutoIntParams(DeepParams):
    """`hidden` adds a parallel MLP (AutoInt+); an empty list gives plain AutoInt."""

    hidden: list[PositiveInt] = []
    attention_layers: int = Field(3, ge=1)
    heads: int = Field(2, ge=1)
    head_dim: int = Field(16, ge=1)


@MODELS.register("autoint", params=AutoIntParams)
class AutoInt(FieldModel):
    """AutoInt(+): L self-attention layers over field embeddings -> linear [+ MLP]."""

    def __init__(self, spec: FeatureSpec, params: AutoIntParams) -> None:
        super().__init__(spec, params.selected(spec))
        self.embedding = FieldEmbedding(spec, params.embed_dim, self.input_names)
        layers, dim = [], params.embed_dim
        for _ in range(params.attention_layers):
            layers.append(MultiHeadSelfAttention(dim, params.head_dim, params.heads))
            dim = layers[-1].output_dim
        self.attention = nn.Sequential(*layers)
        self.head = nn.Linear(self.embedding.num_fields * dim, 1)
        self.mlp: MLP | None = None
        if params.hidden:
            self.mlp = MLP(self.embedding.num_fields * params.embed_dim, params.hidden,
                           out_dim=1, dropout=params.dropout, norm=params.norm,
                           activation=params.activation)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(inputs)
        out = self.head(self.attention(emb).flatten(1))
        return out if self.mlp is None else out + self.mlp(emb.flatten(1))
