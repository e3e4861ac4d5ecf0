"""Sequence blocks for the retrieval zoo beside PyTorch's Transformer layer.

``LiGRLayer`` is the gated pre-LN block of LinkedIn's LiGR ("From Features to
Transformers: Redefining Ranking for Scalable Impact", 2025), which eSASRec (SASRec's
objective with LiGR layers) reports as a stronger SASRec backbone. For an input
``x`` (B, S, d):

    a = MHA(LN(x))                            # causal self-attention, pre-LN
    x = x + sigmoid(x W_1 + b_1) * Dropout(a) # gated residual: the gate reads x itself
    f = SwiGLU(LN(x)) = (silu(LN(x) U) * LN(x) V) W     # no biases
    x = x + sigmoid(x W_2 + b_2) * Dropout(f)

The gates let each position decide how much of each sublayer to take, which damps the
early updates that otherwise swamp a small model's item embeddings.

>>> import torch
>>> layer = LiGRLayer(d=8, heads=2, ffn_dim=16, dropout=0.0)
>>> layer(torch.zeros(3, 5, 8), mask=None).shape
torch.Size([3, 5, 8])
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recflow.config_types import MAX_EMBED_DIM, MAX_LAYERS, MAX_WIDTH, StrictModel


class TransformerParams(StrictModel):
    """The Transformer options SASRec and TIGER share; the defaults are SASRec / BERT's
    block as RecBole trains it (post-LN, GELU, FFN 4d, LayerNorm on the input, weights at
    N(0, 0.02²)), which converged faster than pre-LN / ReLU / FFN 2d / torch's init for
    both models on ML-100K (docs/evaluation.md). Each model declares its own `dropout`."""

    embed_dim: int = Field(64, ge=4, le=MAX_EMBED_DIM)
    heads: int = Field(2, ge=1, le=MAX_LAYERS)
    layers: int = Field(2, ge=1, le=MAX_LAYERS)
    ffn_dim: int | None = Field(None, ge=4, le=MAX_WIDTH, description="Feed-forward width; "
                                "None: 4 x embed_dim (the Transformer's ratio).")
    activation: Literal["gelu", "relu"] = "gelu"
    norm: Literal["post", "pre"] = Field("post", description="LayerNorm after each residual "
                                         "(SASRec / BERT) or before each sublayer (pre-LN, "
                                         "then a final LayerNorm).")
    input_norm: bool = Field(True, description="LayerNorm on the item / token + position "
                             "embeddings (before the input dropout).")
    init_std: float = Field(0.02, gt=0, le=1, description="Normal init std of embeddings and "
                            "linear weights (positions included).")
    attn_dropout: float | None = Field(
        None, ge=0, lt=1, description="Dropout on attention weights; None: `dropout`. 0 "
        "lets torch's CPU kernel skip drawing a (B, heads, S, S) mask (faster steps).")


def transformer_layer(p: TransformerParams, dropout: float) -> nn.TransformerEncoderLayer:
    """One `nn.TransformerEncoderLayer` as `p` describes it (batch first)."""
    layer = nn.TransformerEncoderLayer(p.embed_dim, p.heads, p.ffn_dim or 4 * p.embed_dim,
                                       dropout, activation=p.activation, batch_first=True,
                                       norm_first=p.norm == "pre")
    if p.attn_dropout is not None:
        layer.self_attn.dropout = p.attn_dropout
    return layer


class SwiGLU(nn.Module):
    """``(silu(x U) * x V) W``: the gated feed-forward of LLaMA / LiGR, (.., d) -> (.., d)."""

    def __init__(self, d: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.gate = nn.Linear(d, hidden, bias=False)
        self.up = nn.Linear(d, hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.drop(F.silu(self.gate(x)) * self.up(x)))


class LiGRLayer(nn.Module):
    """One LiGR block (module docstring): (B, S, d) -> (B, S, d).

    `mask` is an attention mask as `nn.MultiheadAttention` takes it ((S, S) or
    (B * heads, S, S), True = blocked).
    """

    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float,
                 attn_dropout: float | None = None) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout if attn_dropout is None
                                          else attn_dropout, batch_first=True)
        self.gate1, self.gate2 = nn.Linear(d, d), nn.Linear(d, d)
        self.ffn = SwiGLU(d, ffn_dim, dropout)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = x + torch.sigmoid(self.gate1(x)) * self.drop1(a)
        return x + torch.sigmoid(self.gate2(x)) * self.drop2(self.ffn(self.norm2(x)))


class LiGRStack(nn.Module):
    """``layers`` LiGR blocks and a final LayerNorm (the blocks are pre-LN)."""

    def __init__(self, d: int, heads: int, ffn_dim: int, layers: int, dropout: float,
                 attn_dropout: float | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(LiGRLayer(d, heads, ffn_dim, dropout, attn_dropout)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class FastDropout(nn.Dropout):
    """`nn.Dropout` with the mask drawn by `rand_like` instead of `bernoulli_`.

    Same distribution (keep with probability 1 - p, scale kept values by 1 / (1 - p)),
    but on CPU torch's `bernoulli_` draws element by element and was measured 3.5x
    slower than `rand_like` on a (37, 50, 256) activation; with SASRec's nine dropouts
    it was a third of a training step.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return torch.zeros_like(x)
        keep = torch.rand_like(x) >= self.p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


def init_normal(module: nn.Module, std: float) -> nn.Module:
    """Embeddings and linear weights (attention's fused in-projection too) ~ N(0, std²),
    biases 0, in place: BERT's init, so position embeddings do not swamp items at start
    (torch's default N(0, 1) embeddings do)."""
    for child in module.modules():
        if isinstance(child, nn.Linear | nn.Embedding):
            nn.init.normal_(child.weight, std=std)
        if isinstance(child, nn.Linear) and child.bias is not None:
            nn.init.zeros_(child.bias)
    for name, weight in module.named_parameters():
        if name.endswith("in_proj_weight"):
            nn.init.normal_(weight, std=std)
    return module


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Swap every `nn.Dropout` inside `module` for a `FastDropout` of the same p (in place)."""
    for name, child in module.named_children():
        if type(child) is nn.Dropout:
            setattr(module, name, FastDropout(child.p))
        else:
            use_fast_dropout(child)
    return module
