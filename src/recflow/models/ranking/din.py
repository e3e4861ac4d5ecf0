"""DIN: the candidate item attends over the user's behaviour sequence."""

from __future__ import annotations

import torch
from pydantic import PositiveInt

from recflow.features import FeatureSpec
from recflow.models.layers import (
    MLP,
    Activation,
    FieldEmbedding,
    TargetAttention,
)
from recflow.models.ranking.common import DeepParams, FieldModel
from recflow.registry import MODELS


class DINParams(DeepParams):
    """`sequence_field`/`candidate_field` default to the first sequence field and its vocabulary."""

    hidden: list[PositiveInt] = [200, 80]
    activation: Activation = "dice"
    attention_hidden: list[PositiveInt] = [80, 40]
    sequence_field: str | None = None
    candidate_field: str | None = None
    use_sequence: bool = True


@MODELS.register("din", params=DINParams)
class DIN(FieldModel):
    """DIN: MLP over [u, u ⊙ v_a, all field embeddings], u = Σ_j w_j(e_j, v_a)·e_j."""

    def __init__(self, spec: FeatureSpec, params: DINParams) -> None:
        reads = params.selected(spec)
        sequence = params.sequence_field or next(
            (n for n in reads if spec[n].kind == "sequence"), None)
        if sequence is None or spec[sequence].kind != "sequence":
            raise ValueError(f"din needs a sequence field; got {sequence!r} "
                             f"(sequence fields: {[f.name for f in spec.by_kind('sequence')]})")
        candidate = params.candidate_field or spec[sequence].shares_vocab_with
        if candidate is None or spec[candidate].kind != "categorical":
            raise ValueError(f"din candidate_field must be categorical; got {candidate!r}")
        if params.use_sequence:
            reads = [*reads, sequence, candidate]
        else:
            reads = [n for n in reads if n != sequence]
        super().__init__(spec, reads)
        self.sequence_field, self.candidate_field = sequence, candidate
        self.use_sequence = params.use_sequence
        raw = [self.sequence_field] if self.use_sequence else []
        self.embedding = FieldEmbedding(spec, params.embed_dim, self.input_names, raw)
        in_dim = self.embedding.num_fields * params.embed_dim
        if self.use_sequence:
            self.attention = TargetAttention(params.embed_dim, params.attention_hidden,
                                             params.activation)
            self._candidate = self.embedding.fields.index(self.candidate_field)
            in_dim += 2 * params.embed_dim  # interest and interest ⊙ candidate
        self.mlp = MLP(in_dim, params.hidden, out_dim=1, dropout=params.dropout,
                       norm=params.norm, activation=params.activation)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(inputs)
        if not self.use_sequence:
            return self.mlp(emb.flatten(1))
        behaviours, mask = self.embedding.sequence(inputs, self.sequence_field)
        candidate = emb[:, self._candidate]
        interest = self.attention(behaviours, candidate, mask)
        # the explicit product makes "interest matches candidate" one linear step for the MLP
        return self.mlp(torch.cat([interest, interest * candidate, emb.flatten(1)], dim=1))
