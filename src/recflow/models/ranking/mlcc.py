"""MLCC / MC-MLCC: feature crosses through a global compression of all fields.

Yu, Zhou, Xia, Zhao, Wu, Zhao and Kong, "Compress, Cross and Scale: Multi-Level
Compression Cross Networks for Efficient Scaling in Recommender Systems", arXiv:2602.12041
(2026). The paper names three parts (Global Compressor, Progressive Layered Crossing,
Local Compressor) and a multi-channel extension; its equations were not available here, so
the maths follows the public reference code (github.com/shishishu/MLCC, `models/mlcc.py`
at 8e8dd12, whose README calls it the official implementation). Per sample, with field
embeddings E (M, d) split into C channels of width k_0 = d/C:

    g_c = vec(E_c) W_c -> A_{c,h,l} (k_{l-1}, k_l), h ≤ H, l ≤ L   global compressor
    Z_{c,h,0} = E_c,  Z_{c,h,l} = Z_{c,h,l-1} A_{c,h,l}               layered crossing
    o_m = [Z_{c,h,l}[m] for all c, h, l; e_m] V_m   (V_m: D × out_dim)  local compressor
    õ = SE(o),  logit = MLP(vec(õ))                                     field gate, head

Choices where the reference is configurable: every crossing level and the raw embedding
are kept for the local compressor (`dmlp_dim_concat: [0, 1]`, as in the Criteo and Avazu
configs it ships); the squeeze-and-excitation gate is the reference's (LN without affine,
M -> M/2 -> M) behind `field_gate`; channels are C slices of each field's embedding (its
`embedding_dim_block` = d/C; its MC-MLCC configs widen d to 16·C, here that is up to the
`embed_dim` one sets). No bias in the compressors, Glorot-normal init, as there.

>>> import torch
>>> from recflow.models.layers import CompressionCross
>>> block = CompressionCross(num_fields=39, dim=16, heads=4, cross_dims=[4, 1], out_dim=8)
>>> block(torch.randn(2, 39, 16)).shape
torch.Size([2, 39, 8])
>>> block.matmul_flops()  # crossing 4·2·39·(16·4 + 4·1) + local 2·39·(4·5 + 16)·8
43680
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt, model_validator

from recflow.features import FeatureSpec
from recflow.models.layers import MLP, CompressionCross, FieldEmbedding, FieldGate
from recflow.models.ranking.common import DeepParams, FieldModel
from recflow.registry import MODELS


class MLCCParams(DeepParams):
    """`channels` > 1 is MC-MLCC; `cross_dims` [k_1 .. k_L] are the crossing levels."""

    channels: int = Field(1, ge=1, description="Parallel channels C (MC-MLCC); each crosses "
                          "embed_dim / C of every field's embedding.")
    heads: int = Field(4, ge=1, description="Crossing heads H per channel.")
    cross_dims: list[PositiveInt] = Field(
        [4, 1], min_length=1, description="Output width of each crossing level; their number "
        "is the number of levels L.")
    out_dim: int = Field(8, ge=1, description="Width of each field's vector after the local "
                         "compressor.")
    field_gate: bool = Field(True, description="Squeeze-and-excitation gate over the fields.")

    @model_validator(mode="after")
    def _channels_divide_embedding(self) -> MLCCParams:
        if self.embed_dim % self.channels:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by channels "
                             f"{self.channels}")
        return self


@MODELS.register("mlcc", params=MLCCParams)
class MLCC(FieldModel):
    """MLCC (MC-MLCC with channels > 1): compressed layered crosses -> per-field compression -> MLP."""

    def __init__(self, spec: FeatureSpec, params: MLCCParams) -> None:
        super().__init__(spec, params.selected(spec))
        self.embedding = FieldEmbedding(spec, params.embed_dim, self.input_names)
        fields = self.embedding.num_fields
        self.cross = CompressionCross(fields, params.embed_dim, params.channels, params.heads,
                                      params.cross_dims, params.out_dim)
        self.gate = FieldGate(fields) if params.field_gate else None
        self.mlp = MLP(fields * params.out_dim, params.hidden, out_dim=1, dropout=params.dropout,
                       norm=params.norm, activation=params.activation)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.cross(self.embedding(inputs))
        if self.gate is not None:
            out = self.gate(out)
        return self.mlp(out.flatten(1))
