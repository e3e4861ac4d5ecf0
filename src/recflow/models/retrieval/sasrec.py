"""SASRec: causal self-attention over item-ID sequences, trained with full-softmax CE.

Loss: at every position t the next item is the target of a cross-entropy over
the *whole* catalogue (logits <h_t, e_j> with tied item embeddings), i.e. the
full-softmax variant, which FIELD_NOTES records as much stronger than the
original BCE-with-one-negative SASRec. No negatives are sampled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from recflow.models.retrieval.base import (
    RETRIEVAL_MODELS,
    RetrievalData,
    Retriever,
    causal_pad_mask,
    left_pad,
    train_next_token,
    windows,
)


class SASRecParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_len: int = Field(20, ge=2, le=512)
    embed_dim: int = Field(64, ge=4)
    heads: int = Field(2, ge=1)
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)


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


@RETRIEVAL_MODELS.register("sasrec", params=SASRecParams)
class SASRec(Retriever):
    """SASRec (Kang & McAuley 2018) with full-softmax cross-entropy over the catalogue."""

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

        def step_loss(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
            valid = (targets > 0) & (inputs > 0)
            h = m(inputs)[valid]
            return F.cross_entropy(m.logits(h), targets[valid] - 1), int(valid.sum())

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

    def state(self) -> dict[str, Any]:
        return {"state_dict": self.module.state_dict()}
