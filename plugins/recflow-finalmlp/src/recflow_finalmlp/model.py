"""FinalMLP: an enhanced two-stream MLP for CTR prediction (Mao et al., AAAI 2023).

Two plain MLPs see the same field embeddings e (B, M·d), each through its own
*stream-specific feature gate* g_s = 2·σ(MLP_s(c_s)), where the context c_s is the
concatenated embedding of chosen fields (e.g. user fields for one stream, item
fields for the other) or, by default, a learned vector; so the streams learn to
emphasise different features. Their outputs o_1, o_2 are combined by *multi-head
bilinear fusion*: split both into H heads and sum
    b + w_1ᵀo_1 + w_2ᵀo_2 + Σ_h o_1hᵀ W_h o_2h,
which adds the stream-level second-order interaction a plain concat + linear
head cannot express.

Written against recflow's public model contract only: `RankingModel`, the
shared `FieldEmbedding` / `MLP` layers and a pydantic parameter schema.
Export-friendly (no data-dependent control flow), so recflow's ONNX export and
serving work on it unchanged.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from torch import nn

from recflow.features import FeatureSpec
from recflow.models import RankingModel
from recflow.models.layers import MLP, Activation, FieldEmbedding, Norm


class FinalMLPParams(BaseModel):
    """`params:` of a `name: finalmlp` entry in parameters_ranking.yml."""

    model_config = ConfigDict(extra="forbid")

    fields: list[str] | None = Field(
        None, min_length=1, description="Spec fields to read (None = all of them).")
    embed_dim: int = Field(16, ge=1, description="Embedding size d per field.")
    stream1_hidden: list[PositiveInt] = Field(
        [256, 128, 64], min_length=1, description="Hidden sizes of the first (deeper) MLP.")
    stream2_hidden: list[PositiveInt] = Field(
        [128], min_length=1, description="Hidden sizes of the second (shallower) MLP.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    norm: Norm = None
    activation: Activation = "relu"
    feature_selection: bool = Field(
        True, description="Stream-specific feature gating; False feeds e to both streams.")
    gate_hidden: list[PositiveInt] = Field(
        [64], description="Hidden sizes of each gate's MLP.")
    stream1_context: list[str] = Field(
        default_factory=list,
        description="Fields whose embeddings condition stream 1's gate ([] = a learned vector).")
    stream2_context: list[str] = Field(
        default_factory=list,
        description="Fields whose embeddings condition stream 2's gate ([] = a learned vector).")
    fusion_heads: PositiveInt = Field(
        1, description="Heads H of the bilinear fusion; must divide both streams' output sizes.")

    @model_validator(mode="after")
    def _consistent(self) -> FinalMLPParams:
        for stream in ("stream1_hidden", "stream2_hidden"):
            out = getattr(self, stream)[-1]
            if out % self.fusion_heads:
                raise ValueError(f"fusion_heads={self.fusion_heads} must divide the last size "
                                 f"of {stream} ({out})")
        if not self.feature_selection and (self.stream1_context or self.stream2_context):
            raise ValueError("stream1_context / stream2_context need feature_selection: true")
        return self


class FeatureGate(nn.Module):
    """g = 2·σ(MLP(c)) over the flattened field embeddings, c = context embeddings or a bias."""

    def __init__(self, embedding: FieldEmbedding, context: list[str], embed_dim: int,
                 hidden: list[int], out_dim: int) -> None:
        super().__init__()
        outside = sorted(set(context) - set(embedding.fields))
        if outside:
            raise ValueError(f"gate context field(s) {outside} are not among the model's "
                             f"embedded fields {embedding.fields}")
        self.context = [f for f in embedding.fields if f in set(context)]
        in_dim = embed_dim * max(len(self.context), 1)
        # no context: a learned vector, broadcast over the batch (export-friendly)
        self.bias = nn.Parameter(torch.zeros(1, in_dim)) if not self.context else None
        self.mlp = MLP(in_dim, hidden, out_dim=out_dim)

    def forward(self, embedding: FieldEmbedding, inputs: dict[str, torch.Tensor]
                ) -> torch.Tensor:  # (B or 1, M·d)
        if self.bias is not None:
            ctx = self.bias
        else:
            ctx = torch.cat([embedding.embed(inputs, f) for f in self.context], dim=1)
        return 2.0 * torch.sigmoid(self.mlp(ctx))


class MultiHeadBilinearFusion(nn.Module):
    """b + w_xᵀx + w_yᵀy + Σ_h x_hᵀ W_h y_h for x (B, dx), y (B, dy) split into H heads."""

    def __init__(self, x_dim: int, y_dim: int, heads: int = 1) -> None:
        super().__init__()
        if x_dim % heads or y_dim % heads:
            raise ValueError(f"heads={heads} must divide both {x_dim} and {y_dim}")
        self.heads = heads
        self.w_x = nn.Linear(x_dim, 1)
        self.w_y = nn.Linear(y_dim, 1, bias=False)
        self.w_xy = nn.Parameter(torch.empty(heads, x_dim // heads, y_dim // heads))
        nn.init.normal_(self.w_xy, std=(2.0 / (self.w_xy.numel() + 1)) ** 0.5)  # Xavier, as in the paper's code

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # -> (B, 1)
        hx = x.unflatten(1, (self.heads, -1))
        hy = y.unflatten(1, (self.heads, -1))
        bilinear = (torch.einsum("bhi,hij->bhj", hx, self.w_xy) * hy).sum(dim=(1, 2))
        return self.w_x(x) + self.w_y(y) + bilinear.unsqueeze(1)


class FinalMLP(RankingModel):
    """FinalMLP: two gated MLP streams fused bilinearly (Mao et al., 2023)."""

    #: the parameter schema recflow validates YAML `params` against (plugin contract)
    params_schema = FinalMLPParams

    def __init__(self, spec: FeatureSpec, params: FinalMLPParams) -> None:
        super().__init__(spec)
        self.embedding = FieldEmbedding(spec, params.embed_dim, params.fields)
        dim = self.embedding.num_fields * params.embed_dim
        self.gates = nn.ModuleList(
            FeatureGate(self.embedding, context, params.embed_dim, params.gate_hidden, dim)
            for context in (params.stream1_context, params.stream2_context)
        ) if params.feature_selection else None
        self.streams = nn.ModuleList(
            MLP(dim, hidden, dropout=params.dropout, norm=params.norm,
                activation=params.activation)
            for hidden in (params.stream1_hidden, params.stream2_hidden)
        )
        self.fusion = MultiHeadBilinearFusion(self.streams[0].output_dim,
                                              self.streams[1].output_dim, params.fusion_heads)

    @property
    def input_names(self) -> list[str]:
        return list(self.embedding.input_names)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        e = self.embedding(inputs).flatten(1)
        if self.gates is None:
            x1 = x2 = e
        else:
            x1, x2 = (e * gate(self.embedding, inputs) for gate in self.gates)
        return self.fusion(self.streams[0](x1), self.streams[1](x2))
