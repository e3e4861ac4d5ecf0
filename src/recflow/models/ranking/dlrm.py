"""DLRM: dense features through a bottom MLP, pairwise dots among all vectors, top MLP."""

from __future__ import annotations

import torch
from pydantic import PositiveInt

from recflow.features import FeatureSpec
from recflow.models.layers import MLP, DotInteraction, FieldEmbedding
from recflow.models.ranking.common import DeepParams, FieldModel
from recflow.registry import MODELS


class DLRMParams(DeepParams):
    """`hidden` is the top MLP; the bottom MLP ends at `embed_dim` to join the dots."""

    bottom_hidden: list[PositiveInt] = [64]


@MODELS.register("dlrm", params=DLRMParams)
class DLRM(FieldModel):
    """DLRM: [bottom-MLP(dense), upper-triangle dots of all embeddings] -> top MLP."""

    def __init__(self, spec: FeatureSpec, params: DLRMParams) -> None:
        super().__init__(spec, params.selected(spec))
        self.dense = [n for n in self.input_names if spec[n].kind == "numeric"]
        sparse = [n for n in self.input_names if n not in self.dense]
        self.embedding = FieldEmbedding(spec, params.embed_dim, sparse)
        num_vectors = self.embedding.num_fields
        self.bottom: MLP | None = None
        if self.dense:
            self.bottom = MLP(len(self.dense), [*params.bottom_hidden, params.embed_dim],
                              norm=params.norm)
            num_vectors += 1
        self.interaction = DotInteraction(num_vectors)
        top_in = self.interaction.output_dim + (params.embed_dim if self.dense else 0)
        self.top = MLP(top_in, params.hidden, out_dim=1, dropout=params.dropout,
                       norm=params.norm, activation=params.activation)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(inputs)
        if self.bottom is None:
            return self.top(self.interaction(emb))
        dense = self.bottom(torch.stack([inputs[n] for n in self.dense], dim=1))
        dots = self.interaction(torch.cat([dense.unsqueeze(1), emb], dim=1))
        return self.top(torch.cat([dense, dots], dim=1))
