"""SASRec: causal self-attention over item-ID sequences, full or sampled softmax.

Loss (``loss:``), at every position t with next item y_t and state h_t, logits
``o_j = <h_t, e_j>`` with tied item embeddings:

* ``full_softmax`` (default): cross-entropy over the *whole* catalogue, which
  FIELD_NOTES records as much stronger than the original BCE-with-one-negative
  SASRec. No negatives are sampled.
* ``sampled_softmax``: cross-entropy over ``{y_t} ∪ N``, where N is
  ``num_negatives`` items drawn with replacement per batch (shared by every
  position of the batch) from ``q``: the training item frequency
  (``negative_sampling: frequency``) or uniform. With ``logq_correction`` every
  logit (positive and negatives) becomes ``o_j - log(K q_j)`` (K q_j = the
  expected count of j among the K draws), which makes the sampled softmax an
  unbiased-in-the-limit estimate of the full one rather than a popularity-
  penalised one; negatives equal to the position's target are masked
  ("accidental hits"). Cost per batch is O(K) instead of O(n_items) logits.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recflow.config_checks import (
    MAX_BATCH,
    MAX_COUNT,
    MAX_EMBED_DIM,
    MAX_EPOCHS,
    MAX_LAYERS,
    StrictModel,
)
from recflow.models.retrieval.base import (
    RETRIEVAL_MODELS,
    RetrievalData,
    Retriever,
    causal_pad_mask,
    coerce_params,
    left_pad,
    train_next_token,
    windows,
)


class SASRecParams(StrictModel):
    max_len: int = Field(20, ge=2, le=512)
    embed_dim: int = Field(64, ge=4, le=MAX_EMBED_DIM)
    heads: int = Field(2, ge=1, le=MAX_LAYERS)
    layers: int = Field(2, ge=1, le=MAX_LAYERS)
    dropout: float = Field(0.2, ge=0, lt=1)
    epochs: int = Field(30, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    loss: Literal["full_softmax", "sampled_softmax"] = "full_softmax"
    num_negatives: int = Field(256, ge=1, le=MAX_COUNT, description="Sampled negatives per batch "
                               "(loss: sampled_softmax).")
    negative_sampling: Literal["frequency", "uniform"] = "frequency"
    logq_correction: bool = Field(True, description="Subtract log(K q_j) from sampled logits.")


class SASRecModule(nn.Module):
    """Sequence encoder: (B, S) item indices -> (B, S, d) states; score = h @ E^T."""

    def __init__(self, n_items: int, p: SASRecParams) -> None:
        super().__init__()
        self.heads = p.heads
        self.item = nn.Embedding(n_items + 1, p.embed_dim, padding_idx=0)
        self.pos = nn.Embedding(p.max_len, p.embed_dim)
        layer = nn.TransformerEncoderLayer(p.embed_dim, p.heads, 2 * p.embed_dim, p.dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, p.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(p.embed_dim)
        self.drop = nn.Dropout(p.dropout)
        nn.init.normal_(self.item.weight, std=0.05)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        pad = seq == 0
        pos = torch.arange(seq.shape[1], device=seq.device) + (self.pos.num_embeddings
                                                                - seq.shape[1])
        x = self.drop(self.item(seq) * self.item.embedding_dim ** 0.5 + self.pos(pos))
        h = self.encoder(x, mask=causal_pad_mask(pad, self.heads))
        return self.norm(h)

    def user_embedding(self, seq: torch.Tensor) -> torch.Tensor:
        """State after the last history item: the query vector for ANN search."""
        return self.forward(seq)[:, -1]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item.weight[1:].T  # (.., n_items) for items 1..n


def sampled_softmax_loss(h: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor,
                         negatives: torch.Tensor, log_q: torch.Tensor | None) -> torch.Tensor:
    """Mean CE over [target, negatives] per row, logits ``<h, e_j> - log(K q_j)``.

    `h` (N, d) states; `item_emb` (n_items + 1, d) rows by item index; `targets` (N,)
    item indices; `negatives` (K,) item indices shared by every row; `log_q` (n_items + 1,)
    log sampling probabilities (None: no correction). Negatives equal to a row's
    target are masked.
    """
    pos = (h * item_emb[targets]).sum(-1, keepdim=True)  # (N, 1)
    neg = h @ item_emb[negatives].T  # (N, K)
    if log_q is not None:
        log_k = float(np.log(len(negatives)))
        pos = pos - (log_q[targets].unsqueeze(1) + log_k)
        neg = neg - (log_q[negatives].unsqueeze(0) + log_k)
    neg = neg.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos, neg], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(h), dtype=torch.long, device=h.device))


def sampling_distribution(sequences: list[np.ndarray], n_items: int, how: str) -> np.ndarray:
    """(n_items + 1,) probabilities over item indices (0 never drawn)."""
    if how == "uniform":
        q = np.ones(n_items + 1)
    else:
        flat = np.concatenate(sequences) if sequences else np.zeros(0, np.int64)
        q = np.bincount(flat, minlength=n_items + 1).astype(np.float64)
        if q[1:].sum() == 0:
            q = np.ones(n_items + 1)
    q[0] = 0.0
    return q / q.sum()


@RETRIEVAL_MODELS.register("sasrec", params=SASRecParams)
class SASRec(Retriever):
    """SASRec (Kang & McAuley 2018): full-softmax CE (default) or sampled softmax with logQ.

    See the module docstring for both losses; ``export`` needs ``module.user_embedding``
    ((B, max_len) history -> (B, d)) and ``item_matrix()`` (row i = item index i).
    """

    name = "sasrec"

    def __init__(self, params: SASRecParams) -> None:
        self.params = params
        self.module: SASRecModule | None = None
        self.history: list[float] = []

    def fit(self, data: RetrievalData) -> SASRec:
        p = self.params
        torch.manual_seed(data.seed)
        self.module = m = SASRecModule(data.n_items, p)
        seqs = torch.as_tensor(left_pad(windows(data.train_sequences, p.max_len + 1),
                                        p.max_len + 1))

        q = torch.as_tensor(sampling_distribution(data.train_sequences, data.n_items,
                                                  p.negative_sampling), dtype=torch.float32)
        log_q = torch.log(q.clamp(min=1e-12)) if p.logq_correction else None

        def step_loss(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
            valid = (targets > 0) & (inputs > 0)
            h = m(inputs)[valid]
            if p.loss == "full_softmax":
                return F.cross_entropy(m.logits(h), targets[valid] - 1), int(valid.sum())
            negatives = torch.multinomial(q, p.num_negatives, replacement=True)
            return (sampled_softmax_loss(h, m.item.weight, targets[valid], negatives, log_q),
                    int(valid.sum()))

        opt = torch.optim.AdamW(m.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        history, self.train_seconds = train_next_token(
            m, seqs, step_loss, epochs=p.epochs, batch_size=p.batch_size, optimizer=opt,
            seed=data.seed)
        self.history.extend(history)
        return self

    @torch.no_grad()
    def scores(self, histories: list[np.ndarray]) -> torch.Tensor:
        m = self.module.eval()
        seq = torch.as_tensor(left_pad(histories, self.params.max_len))
        return m.logits(m.user_embedding(seq))

    def recommend(self, histories: list[np.ndarray], k: int) -> np.ndarray:
        out = []
        for start in range(0, len(histories), 1024):
            s = self.scores(histories[start:start + 1024])
            out.append(torch.topk(s, k, dim=1).indices.numpy() + 1)
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)

    @torch.no_grad()
    def item_matrix(self) -> np.ndarray:
        """(n_items + 1, d) float32 item embeddings, row i = item index i (row 0 zeroed).

        The ANN side of `user_embedding`: score(u, i) = <user_embedding(u), row i>.
        """
        out = self.module.item.weight.detach().float().numpy().copy()
        out[0] = 0.0
        return out

    def state(self) -> dict[str, Any]:
        return {"state_dict": self.module.state_dict()}

    @classmethod
    def from_state(cls, params: SASRecParams | dict[str, Any] | None, state: dict[str, Any]
                   ) -> SASRec:
        """Rebuild a fitted retriever from `state()` (n_items from the embedding table)."""
        p = coerce_params(SASRecParams, params)
        sd = state["state_dict"]
        model = cls(p)
        model.module = SASRecModule(int(sd["item.weight"].shape[0]) - 1, p)
        model.module.load_state_dict(sd)
        model.module.eval()
        return model
