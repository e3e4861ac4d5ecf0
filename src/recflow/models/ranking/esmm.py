"""ESMM: CVR learned over the entire impression space via pCTCVR = pCTR · pCVR."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recflow.features import FeatureSpec
from recflow.models.layers import MLP, FieldEmbedding
from recflow.models.ranking.common import DeepParams, FieldModel
from recflow.registry import MODELS


class ESMMParams(DeepParams):
    """`hidden`, `dropout`, `norm`, `activation` configure both towers alike."""


@MODELS.register("esmm", params=ESMMParams)
class ESMM(FieldModel):
    """ESMM: shared embeddings, CTR and CVR towers; CVR is only supervised through CTCVR."""

    tasks = ("click", "purchase")

    def __init__(self, spec: FeatureSpec, params: ESMMParams) -> None:
        super().__init__(spec, params.selected(spec))
        self.embedding = FieldEmbedding(spec, params.embed_dim, self.input_names)
        in_dim = self.embedding.num_fields * params.embed_dim
        tower = dict(hidden=params.hidden, out_dim=1, dropout=params.dropout, norm=params.norm,
                     activation=params.activation)
        self.ctr = MLP(in_dim, **tower)
        self.cvr = MLP(in_dim, **tower)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits [ctr, cvr] (B, 2); `predict` turns them into [pCTR, pCTCVR]."""
        x = self.embedding(inputs).flatten(1)
        return torch.cat([self.ctr(x), self.cvr(x)], dim=1)

    def loss(self, logits: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """BCE(click, pCTR) + BCE(click∧purchase, pCTR·pCVR) over all impressions.

        In log space: log pCTCVR = logσ(a) + logσ(b) and, since
        1 − σ(a)σ(b) = (e^−a + e^−b + e^−a−b)·σ(a)σ(b),
        log(1 − pCTCVR) = logsumexp(−a, −b, −a−b) + logσ(a) + logσ(b); no 0·log 0 anywhere.
        """
        a, b = logits[:, 0], logits[:, 1]
        click = labels["click"].float()
        conversion = click * labels["purchase"].float()
        ctr = F.binary_cross_entropy_with_logits(a, click)
        log_ctcvr = F.logsigmoid(a) + F.logsigmoid(b)
        log_not = torch.logsumexp(torch.stack([-a, -b, -a - b]), dim=0) + log_ctcvr
        ctcvr = -(conversion * log_ctcvr + (1 - conversion) * log_not).mean()
        return ctr + ctcvr

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        p_ctr = torch.sigmoid(logits[:, :1])
        return torch.cat([p_ctr, p_ctr * torch.sigmoid(logits[:, 1:])], dim=1)

    @property
    def score_names(self) -> list[str]:
        return ["ctr", "ctcvr"]
