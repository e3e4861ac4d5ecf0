"""Building blocks shared by the ranking models, each written once.

Every block is export-friendly: no data-dependent Python control flow, no
in-place ops on inputs, masks built from `ids != 0` with tensor ops, so the
TorchScript ONNX exporter traces them into a batch-size-agnostic graph.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any, Literal

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


def _field_rows(num: int, dim: int) -> torch.Tensor:
    """One vocabulary's rows, small-normal (N(0,1) rows blow up FM sums).

    Drawn as `nn.Embedding(num, dim)` then `nn.init.normal_(std=0.01)` drew them (N(0,1)
    first, overwritten), vocabulary by vocabulary, so a seed still gives the weights one
    table per field gave.
    """
    return torch.empty(num, dim).normal_().normal_(std=0.01)


class FieldEmbedding(nn.Module):
    """Fields -> stacked embeddings (B, M, d).

    Categorical fields look up their own vocabulary (id 0 = missing -> zero vector);
    numeric fields become `v_m * x_m`; sequence fields look up the vocabulary of the
    field they share it with and are mean-pooled over non-padding ids, unless named in
    `raw_sequences` (then they are left out of the stack for the caller to attend over
    via `sequence`). `dim=1` gives per-field scalar weights (the linear part of LR and FM).

    Every vocabulary lives in one table (TorchRec's EmbeddingBagCollection idea): row 0 is
    the shared, always-zero padding row and vocabulary `o` owns rows `offset_o + 1 ..
    offset_o + V_o - 1`, so all categorical fields are one lookup and one backward instead
    of one per field. The maths is that of one `nn.Embedding(V_o, d, padding_idx=0)` per
    vocabulary (the layout before), and a `state_dict` in that layout (`tables.{i}.weight`)
    still loads.
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
        # which vocabulary each id-valued field reads; sequences share their vocabulary's
        self._table_of = {
            n: (spec[n].shares_vocab_with or n) if spec[n].kind == "sequence" else n
            for n in self.input_names if spec[n].kind != "numeric"
        }
        owners = list(dict.fromkeys(self._table_of.values()))
        unfitted = [o for o in owners if spec[o].vocab_size is None]
        if unfitted:
            raise ValueError(f"field(s) {unfitted} have no vocab_size; fit the feature spec first")
        self._sizes = [int(spec[o].vocab_size) for o in owners]
        starts = [0, *itertools.accumulate(s - 1 for s in self._sizes)]
        self._offset = {o: starts[i] for i, o in enumerate(owners)}
        rows = [torch.zeros(1, dim), *(_field_rows(size, dim)[1:] for size in self._sizes)]
        self.table = nn.Embedding(1 + starts[-1], dim, padding_idx=0, _weight=torch.cat(rows))
        numeric = [n for n in self.input_names if self._kind[n] == "numeric"]
        self._numeric_index = {n: i for i, n in enumerate(numeric)}
        self.numeric = nn.Parameter(torch.randn(len(numeric), dim) * 0.01)
        self._categorical = [n for n in self.fields if self._kind[n] == "categorical"]
        self._numeric = [n for n in self.fields if self._kind[n] == "numeric"]
        self._pooled = [n for n in self.fields if self._kind[n] == "sequence"]
        self.register_buffer("offsets", torch.tensor(
            [self._offset[self._table_of[n]] for n in self._categorical], dtype=torch.long),
            persistent=False)
        self.register_buffer("numeric_rows", torch.tensor(
            [self._numeric_index[n] for n in self._numeric], dtype=torch.long), persistent=False)
        stacked = self._categorical + self._numeric + self._pooled
        order = [stacked.index(n) for n in self.fields]
        # forward stacks kind by kind; a static gather restores spec order when they interleave
        self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)
        self._reorder = order != list(range(len(order)))
        self.register_load_state_dict_pre_hook(_join_tables)

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def vocab_sizes(self) -> list[int]:
        """Rows of each vocabulary (its padding row 0 included), in the shared table's order."""
        return list(self._sizes)

    @property
    def numeric_fields(self) -> list[str]:
        """Numeric inputs in the order of `numeric`'s rows."""
        return list(self._numeric_index)

    def rows(self, ids: torch.Tensor, offset: torch.Tensor | int) -> torch.Tensor:
        """Vocabulary-local ids -> rows of the shared table (0, missing, stays the padding row)."""
        return torch.where(ids > 0, ids + offset, 0)

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows of the shared table; in training, through `SharedLookup`'s cheaper backward
        (exported and eval graphs keep the plain embedding op)."""
        weight = self.table.weight
        if self.training and weight.requires_grad and torch.is_grad_enabled():
            return SharedLookup.apply(weight, rows)
        return self.table(rows)

    def lookup(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of `ids` (any shape) in the vocabulary field `name` reads."""
        return self.gather(self.rows(ids, self._offset[self._table_of[name]]))

    def sequence(self, inputs: dict[str, torch.Tensor], name: str
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unpooled sequence embeddings (B, L, d) and the non-padding mask (B, L)."""
        ids = inputs[name]
        return self.lookup(name, ids), ids != 0

    def embed(self, inputs: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """One field as a (B, d) vector."""
        kind = self._kind[name]
        if kind == "numeric":
            return inputs[name].unsqueeze(-1) * self.numeric[self._numeric_index[name]]
        if kind == "sequence":
            emb, mask = self.sequence(inputs, name)
            count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(emb.dtype)
            return emb.sum(dim=1) / count  # padding rows are zero, so the sum skips them
        return self.lookup(name, inputs[name])

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """All categorical fields in one lookup, all numeric ones in one product."""
        blocks = []
        if self._categorical:
            ids = torch.stack([inputs[n] for n in self._categorical], dim=1)
            blocks.append(self.gather(self.rows(ids, self.offsets)))
        if self._numeric:
            values = torch.stack([inputs[n] for n in self._numeric], dim=1)
            blocks.append(values.unsqueeze(-1) * self.numeric.index_select(0, self.numeric_rows))
        blocks += [self.embed(inputs, n).unsqueeze(1) for n in self._pooled]
        out = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
        return out.index_select(1, self.order) if self._reorder else out


class SharedLookup(torch.autograd.Function):
    """`embedding(rows, weight, padding_idx=0)` with its weight gradient as one
    `index_add_` (row 0, the padding row, gets none): on CPU ~2x faster than the
    embedding backward for the ~10^5 ids of a batch of all categorical fields."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.num_rows = weight.shape[0]
        return weight.index_select(0, rows.reshape(-1)).view(*rows.shape, weight.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (rows,) = ctx.saved_tensors
        dim = grad.shape[-1]
        weight_grad = grad.new_zeros(ctx.num_rows, dim)
        weight_grad.index_add_(0, rows.reshape(-1), grad.reshape(-1, dim))
        weight_grad[0] = 0.0
        return weight_grad, None


def _join_tables(module: FieldEmbedding, state: dict[str, Any], prefix: str, *_: Any) -> None:
    """`load_state_dict` of the per-vocabulary layout (`tables.{i}.weight`, V_o rows each):
    the tables become the shared one (their row 0, the always-zero padding row, is dropped)."""
    keys = [f"{prefix}tables.{i}.weight" for i in range(len(module.vocab_sizes))]
    if prefix + "table.weight" in state or not all(k in state for k in keys):
        return  # a strict load then names what is missing
    tables = [state.pop(k) for k in keys]
    state[prefix + "table.weight"] = torch.cat([tables[0][:1].new_zeros(1, tables[0].shape[1]),
                                                *(t[1:] for t in tables)])


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
            # in place: the Linear / norm output it overwrites is not kept for backward
            layers.append(Dice(h) if activation == "dice" else nn.ReLU(inplace=True))
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
        """W_l x_l + b_l; full rank as one addmm (the bias rides in the GEMM, no extra pass)."""
        if self.low_rank is None:
            return torch.addmm(self.bias[layer], x, self.weight[layer].weight.t())
        low = torch.einsum("bd,kdr->bkr", x, self.v[layer])
        experts = torch.einsum("bkr,kre->bke", low, self.u[layer])
        gates = torch.softmax(self.gate[layer](x), dim=-1).unsqueeze(-1)
        return (gates * experts).sum(dim=1) + self.bias[layer]

    def forward(self, x0: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, D)
        x = x0
        for layer in range(len(self.bias)):
            x = torch.addcmul(x, x0, self._transform(layer, x))
        return x


class CompressionCross(nn.Module):
    """MLCC's interaction block: global compression -> layered crossing -> local compression.

    Per sample, field embeddings E (M, d) are split into C channels E_c (M, d/C) (MC-MLCC;
    C = 1 is MLCC). With k_0 = d/C and `cross_dims` = [k_1 .. k_L]:

    * global compressor: g_c = vec(E_c) W_c, W_c (M·k_0, H·P), P = Σ_l k_{l-1}·k_l, cut
      into per-head matrices A_{c,h,l} (k_{l-1}, k_l) that depend on every field;
    * layered crossing: Z_{c,h,0} = E_c, Z_{c,h,l} = Z_{c,h,l-1} A_{c,h,l} (no activation):
      level l is of degree l+1 in the embeddings, each field crossed with all of them;
    * local compressor: u_m = [Z_{c,h,l}[m] for every c, h, l; e_m], D = C·H·Σk_l + d, and
      o_m = u_m V_m with a matrix V_m (D, out_dim) of its own per field.

    (B, M, d) -> (B, M, out_dim). The crossing matrices are input-dependent, so those
    matmuls are not `nn.Linear` layers: `matmul_flops` counts them for the profiler.
    """

    def __init__(self, num_fields: int, dim: int, channels: int = 1, heads: int = 4,
                 cross_dims: Sequence[int] = (4, 1), out_dim: int = 8) -> None:
        super().__init__()
        if dim % channels:
            raise ValueError(f"embedding dim {dim} is not divisible into {channels} channels")
        self.channels, self.heads = channels, heads
        width = dim // channels
        sizes = [width, *cross_dims]
        self.shapes = list(zip(sizes[:-1], sizes[1:], strict=True))
        self.kept = heads * sum(cross_dims)  # per field and channel: every level of every head
        per_head = sum(i * o for i, o in self.shapes)
        self.compress = nn.ModuleList(nn.Linear(num_fields * width, heads * per_head, bias=False)
                                      for _ in range(channels))
        self.local = nn.Parameter(torch.empty(num_fields, channels * self.kept + dim, out_dim))
        for linear in self.compress:  # the reference implementation's (Glorot-normal) init
            nn.init.xavier_normal_(linear.weight)
        nn.init.xavier_normal_(self.local)
        self.output_dim = out_dim

    def matmul_flops(self) -> int:
        """Forward FLOPs per sample of the input-dependent and per-field matmuls."""
        fields, concat, out = self.local.shape
        crossing = self.channels * self.heads * sum(2 * fields * i * o for i, o in self.shapes)
        return crossing + 2 * fields * concat * out

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        batch, fields, _ = emb.shape
        chunks = emb.view(batch, fields, self.channels, -1)
        (first_in, first_out), later = self.shapes[0], self.shapes[1:]
        kept = []
        for c, compress in enumerate(self.compress):
            e = chunks[:, :, c]  # (B, M, k_0)
            weights = compress(e.flatten(1)).view(batch, self.heads, -1)
            # level 1 with the heads side by side, one (M, k_0) @ (k_0, H·k_1) per sample,
            # later levels as product-sums: ~3x faster on CPU than B·H tiny matmuls per level
            first = weights[..., :first_in * first_out].reshape(
                batch, self.heads, first_in, first_out).permute(0, 2, 1, 3)
            z = (e @ first.reshape(batch, first_in, -1)).view(batch, fields, self.heads, -1)
            levels, start = [z], first_in * first_out
            for i, o in later:  # a broadcast product-sum over k_{l-1}
                a = weights[..., start:start + i * o].reshape(batch, 1, self.heads, i, o)
                z = (z.unsqueeze(-1) * a).sum(dim=-2)  # (B, M, H, k_l)
                levels.append(z)
                start += i * o
            kept.append(torch.cat(levels, dim=-1).flatten(2))  # (B, M, H·Σk_l)
        # field-major (M, B, D): one contiguous bmm with the per-field matrices (the block's
        # forward + backward ~1.2x faster than an einsum over (B, M, D), which copies twice)
        local_in = torch.cat([t.transpose(0, 1) for t in (*kept, emb)], dim=-1)
        return torch.bmm(local_in, self.local).transpose(0, 1)


class FieldGate(nn.Module):
    """Squeeze-and-excitation over fields: a_m = σ(W_2 LN(ReLU(W_1 s + b_1)) + b_2), s_m the
    mean of field m's vector, output a_m·x_m. LN has no affine part; (B, M, d) -> (B, M, d)."""

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        hidden = max(1, num_fields // 2)
        self.squeeze = nn.Linear(num_fields, hidden)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.excite = nn.Linear(hidden, num_fields)
        for linear in (self.squeeze, self.excite):
            nn.init.xavier_normal_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(torch.relu(self.squeeze(x.mean(dim=-1))))
        return x * torch.sigmoid(self.excite(hidden)).unsqueeze(-1)


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
