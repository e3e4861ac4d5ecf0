"""Building blocks shared by the ranking models, each written once.

Every block is export-friendly: no data-dependent Python control flow, no
in-place ops on inputs, masks built from `ids != 0` with tensor ops, so the
TorchScript ONNX exporter traces them into a batch-size-agnostic graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import nn

from recflow.features import FeatureSpec

Norm = Literal["batch", "layer"] | None
Activation = Literal["relu", "dice"]


def resolve_fields(spec: FeatureSpec, fields: Iterable[str] | None) -> list[str]:
    """Field names in spec order (all when None), so inputs line up the same everywhere."""
    if fields is None:
        return spec.names
    wanted = set(fields)
    unknown = sorted(wanted - set(spec.names))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; the feature spec has {spec.names}")
    return [n for n in spec.names if n in wanted]


def _embedding(num: int, dim: int) -> nn.Embedding:
    """Small-normal init (N(0,1) rows blow up FM sums); the padding row stays zero."""
    table = nn.Embedding(num, dim, padding_idx=0)
    nn.init.normal_(table.weight, std=0.01)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


class FieldEmbedding(nn.Module):
    """Fields -> stacked embeddings (B, M, d).

    Categorical fields look up their own table (id 0 = missing -> zero vector);
    numeric fields become `v_m * x_m`; sequence fields look up the table of the
    field they share a vocabulary with and are mean-pooled over non-padding ids,
    unless named in `raw_sequences` (then they are left out of the stack for the
    caller to attend over via `sequence`). `dim=1` gives per-field scalar weights
    (the linear part of LR and FM).
    """

    def __init__(self, spec: FeatureSpec, dim: int, fields: Iterable[str] | None = None,
                 raw_sequences: Sequence[str] = ()) -> None:
        super().__init__()
        self.input_names = resolve_fields(spec, fields)
        for name in raw_sequences:
            if name not in self.input_names or spec[name].kind != "sequence":
                raise ValueError(f"'{name}' is not a selected sequence field")
        self.fields = [n for n in self.input_names if n not in raw_sequences]
        self._kind = {n: spec[n].kind for n in self.input_names}
        # which table each id-valued field reads; sequences share their vocabulary's table
        self._table_of = {
            n: (spec[n].shares_vocab_with or n) if spec[n].kind == "sequence" else n
            for n in self.input_names if spec[n].kind != "numeric"
        }
        owners = list(dict.fromkeys(self._table_of.values()))
        unfitted = [o for o in owners if spec[o].vocab_size is None]
        if unfitted:
            raise ValueError(f"field(s) {unfitted} have no vocab_size; fit the feature spec first")
        self._table_index = {o: i for i, o in enumerate(owners)}
        self.tables = nn.ModuleList(_embedding(int(spec[o].vocab_size), dim) for o in owners)
        numeric = [n for n in self.input_names if self._kind[n] == "numeric"]
        self._numeric_index = {n: i for i, n in enumerate(numeric)}
        self.numeric = nn.Parameter(torch.randn(len(numeric), dim) * 0.01)

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    def table(self, name: str) -> nn.Embedding:
        return self.tables[self._table_index[self._table_of[name]]]

    def sequence(self, inputs: dict[str, torch.Tensor], name: str
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unpooled sequence embeddings (B, L, d) and the non-padding mask (B, L)."""
        ids = inputs[name]
        return self.table(name)(ids), ids != 0

    def embed(self, inputs: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """One field as a (B, d) vector."""
        kind = self._kind[name]
        if kind == "numeric":
            return inputs[name].unsqueeze(-1) * self.numeric[self._numeric_index[name]]
        if kind == "sequence":
            emb, mask = self.sequence(inputs, name)
            count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(emb.dtype)
            return emb.sum(dim=1) / count  # padding rows are zero, so the sum skips them
        return self.table(name)(inputs[name])

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([self.embed(inputs, n) for n in self.fields], dim=1)


class Dice(nn.Module):
    """DIN's data-adaptive activation: p·x + (1−p)·α·x with p = σ(BN(x))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.norm(x))
        return p * x + (1 - p) * self.alpha * x


class MLP(nn.Module):
    """Linear -> [norm] -> activation -> [dropout] per hidden dim; optional linear head.

    Takes (N, in_dim); callers flatten extra leading dims (BatchNorm needs 2-D).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int | None = None,
                 dropout: float = 0.0, norm: Norm = None,
                 activation: Activation = "relu") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for h in hidden:
            layers.append(nn.Linear(dim, h))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(h))
            elif norm == "layer":
                layers.append(nn.LayerNorm(h))
            layers.append(Dice(h) if activation == "dice" else nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            dim = h
        if out_dim is not None:
            layers.append(nn.Linear(dim, out_dim))
            dim = out_dim
        self.layers = nn.Sequential(*layers)
        self.output_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FMInteraction(nn.Module):
    """Second-order FM term ½·Σ_f[(Σ_i e_if)² − Σ_i e_if²]: all pairwise dots in O(M·d)."""

    def forward(self, emb: torch.Tensor) -> torch.Tensor:  # (B, M, d) -> (B, 1)
        square_of_sum = emb.sum(dim=1).pow(2)
        sum_of_square = emb.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)


class CrossNetV2(nn.Module):
    """DCN-v2 cross layers x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l.

    Full-rank W_l by default; with `low_rank=r`, W_l = Σ_k g_k(x_l)·U_k V_kᵀ, a
    softmax-gated mixture of `num_experts` rank-r experts (cheaper for wide x).
    """

    def __init__(self, dim: int, num_layers: int, low_rank: int | None = None,
                 num_experts: int = 1) -> None:
        super().__init__()
        self.low_rank = low_rank
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(num_layers))
        if low_rank is None:
            self.weight = nn.ModuleList(nn.Linear(dim, dim, bias=False)
                                        for _ in range(num_layers))
            return
        scale = dim ** -0.5
        self.v = nn.ParameterList(nn.Parameter(torch.randn(num_experts, dim, low_rank) * scale)
                                  for _ in range(num_layers))
        self.u = nn.ParameterList(
            nn.Parameter(torch.randn(num_experts, low_rank, dim) * low_rank ** -0.5)
            for _ in range(num_layers))
        self.gate = nn.ModuleList(nn.Linear(dim, num_experts, bias=False)
                                  for _ in range(num_layers))

    def _transform(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        if self.low_rank is None:
            return self.weight[layer](x)
        low = torch.einsum("bd,kdr->bkr", x, self.v[layer])
        experts = torch.einsum("bkr,kre->bke", low, self.u[layer])
        gates = torch.softmax(self.gate[layer](x), dim=-1).unsqueeze(-1)
        return (gates * experts).sum(dim=1)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, D)
        x = x0
        for layer, bias in enumerate(self.bias):
            x = x0 * (self._transform(layer, x) + bias) + x
        return x


class DotInteraction(nn.Module):
    """DLRM interaction: the M(M−1)/2 pairwise dots <e_i, e_j>, i < j, as (B, M(M−1)/2)."""

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        # one flat gather keeps the exported graph to a single Gather on a static index
        self.register_buffer("index", rows * num_fields + cols, persistent=False)
        self.output_dim = int(self.index.numel())

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        dots = torch.bmm(emb, emb.transpose(1, 2)).flatten(1)
        return dots.index_select(1, self.index)


class MultiHeadSelfAttention(nn.Module):
    """AutoInt interacting layer: self-attention across fields with a ReLU residual.

    Per head α_mk = softmax_k(<W_Q e_m, W_K e_k>), ẽ_m = Σ_k α_mk W_V e_k; heads are
    concatenated and ReLU(ẽ_m + W_res e_m) is returned, (B, M, d_in) -> (B, M, heads·head_dim).
    """

    def __init__(self, in_dim: int, head_dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.output_dim = heads * head_dim
        self.query = nn.Linear(in_dim, self.output_dim, bias=False)
        self.key = nn.Linear(in_dim, self.output_dim, bias=False)
        self.value = nn.Linear(in_dim, self.output_dim, bias=False)
        self.residual = nn.Linear(in_dim, self.output_dim, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, M, H·h) -> (B, H, M, h)
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(emb)), self._split(self.key(emb)), self._split(self.value(emb))
        attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        out = (attn @ v).transpose(1, 2).flatten(2)
        return torch.relu(out + self.residual(emb))


class TargetAttention(nn.Module):
    """DIN activation unit: w_j = MLP([e_j, v_a, e_j − v_a, e_j ⊙ v_a]), u = Σ_j w_j e_j.

    No softmax, so the interest vector keeps the intensity of matching behaviours;
    padding positions get weight 0.
    """

    def __init__(self, dim: int, hidden: Sequence[int], activation: Activation = "dice") -> None:
        super().__init__()
        self.mlp = MLP(4 * dim, hidden, out_dim=1, activation=activation)

    def forward(self, keys: torch.Tensor, query: torch.Tensor, mask: torch.Tensor
                ) -> torch.Tensor:  # (B, L, d), (B, d), (B, L) -> (B, d)
        q = query.unsqueeze(1).expand_as(keys)
        feats = torch.cat([keys, q, keys - q, keys * q], dim=-1)
        weights = self.mlp(feats.flatten(0, 1)).view_as(mask) * mask.to(keys.dtype)
        return (weights.unsqueeze(-1) * keys).sum(dim=1)
