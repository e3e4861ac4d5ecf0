"""Factorization machines: FM and DeepFM (FM + an MLP on the same embeddings)."""

from __future__ import annotations

import torch
from torch import nn

from recflow.features import FeatureSpec
from recflow.models.layers import MLP, FieldEmbedding, FMInteraction
from recflow.models.ranking.common import DeepParams, EmbeddingParams, FieldModel
from recflow.registry import MODELS


class FMParams(EmbeddingParams):
    pass


class DeepFMParams(DeepParams):
    pass


@MODELS.register("fm", params=FMParams)
class FM(FieldModel):
    """Factorization machine: w0 + Σ w_i x_i + ½Σ_f[(Σ_i e_if)² − Σ_i e_if²]."""

    def __init__(self, spec: FeatureSpec, params: EmbeddingParams) -> None:
        super().__init__(spec, params.selected(spec))
        self.linear = FieldEmbedding(spec, 1, self.input_names)
        self.embedding = FieldEmbedding(spec, params.embed_dim, self.input_names)
        self.interaction = FMInteraction()
        self.bias = nn.Parameter(torch.zeros(1))
        self.mlp: MLP | None = None

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(inputs)
        out = self.linear(inputs).sum(dim=1) + self.bias + self.interaction(emb)
        return out if self.mlp is None else out + self.mlp(emb.flatten(1))


@MODELS.register("deepfm", params=DeepFMParams)
class DeepFM(FM):
    """DeepFM: FM plus an MLP over the flattened embeddings, both sharing the embeddings."""

    def __init__(self, spec: FeatureSpec, params: DeepFMParams) -> None:
        super().__init__(spec, params)
        self.mlp = MLP(self.embedding.num_fields * params.embed_dim, params.hidden, out_dim=1,
                       dropout=params.dropout, norm=params.norm, activation=params.activation)
