"""Two-tower retrieval: a user tower over the history, an item tower over id + features.

Both towers end in an MLP and L2 normalisation, so a score is a cosine
similarity and the item side is a fixed matrix an ANN index can hold.

* **Item representation** ``x(i) = [e_id(row(i)), e_f1(c_f1(i)), ...]``: the item's
  id embedding concatenated with one embedding per categorical item feature
  (``RetrievalData.item_features``, any set of columns, none included; code 0 =
  padding/unknown).
* **User tower** over the last ``max_len`` history items: pooled ``x`` (``mean_last``:
  masked mean + the last item; ``attention``: + a learned-query attention pool with
  recency positions) -> MLP -> L2 norm.
* **Item tower**: ``x(i)`` -> MLP -> L2 norm.
* **Loss**: in-batch softmax with logQ correction (Yi et al. 2019):
  for a batch of B (history, next item) pairs, ``s_ij = <u_i, v_j> / temperature -
  log Q_j`` over the batch's items, cross-entropy on the diagonal. ``Q_j = B q_j``
  with ``q_j`` the share of training pairs whose target is item j (the chance a
  batch slot holds it), so popular items are not pushed down merely for being
  frequent negatives. Other slots holding the row's own target are masked (not
  false negatives). Optional ``uniform_negatives`` U adds items drawn uniformly
  from the catalogue (mixed negative sampling, Yang et al. 2020); then every
  column's correction is its expected count ``B q_j + U / n_items``.
* **Cold items**: every item without a training interaction maps to one shared OOV
  id row (``id_rows``), and ``id_dropout`` sends that share of training targets to
  the same row, so the OOV row is trained and a cold item's vector comes from its
  features: this is what gives two-tower non-zero cold recall, which ID-only
  models cannot have.

``recommend`` is a batched full-catalogue dot product + top-k.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recflow.config_types import (
    MAX_BATCH,
    MAX_COUNT,
    MAX_EMBED_DIM,
    MAX_EPOCHS,
    MAX_WIDTH,
    StrictModel,
)
from recflow.models.retrieval.base import (
    RETRIEVAL_MODELS,
    RetrievalData,
    Retriever,
    coerce_params,
    fit_retriever,
    left_pad,
    top_k,
)
from recflow.models.retrieval.blocks import use_fast_dropout
from recflow.training.core import Step


class TwoTowerParams(StrictModel):
    max_len: int = Field(20, ge=1, le=512, description="History items the user tower reads.")
    embed_dim: int = Field(32, ge=2, le=MAX_EMBED_DIM,
                           description="Size of the id and of each feature embedding.")
    hidden_dim: int = Field(128, ge=4, le=MAX_WIDTH)
    out_dim: int = Field(64, ge=2, le=MAX_EMBED_DIM, description="Size of the (L2-normalised) user/item vectors.")
    pooling: Literal["mean_last", "attention"] = "mean_last"
    dropout: float = Field(0.1, ge=0, lt=1)
    temperature: float = Field(0.2, gt=0)
    logq_correction: bool = Field(True, description=(
        "Subtract log(expected count) of each candidate from its logit (logQ correction)."))
    id_dropout: float = Field(0.1, ge=0, lt=1, description=(
        "Share of training targets whose id row is swapped for the OOV row (trains the row "
        "cold items use)."))
    uniform_negatives: int = Field(512, ge=0, le=MAX_COUNT, description=(
        "Extra negatives per batch drawn uniformly from the catalogue (mixed negative "
        "sampling): rare items, never in-batch negatives, get pushed down too."))
    target_window: int = Field(1, ge=1, le=512, description=(
        "Positive of each (history before t, target) pair: the item at t (1, next-item), or "
        "one of the items at t .. t + window - 1 drawn afresh each step (PinnerFormer's "
        "dense all-action objective): the user vector learns the next few interests rather "
        "than one arbitrary order within a session."))
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(512, ge=2, le=MAX_BATCH, description="Pairs per batch = in-batch candidates.")
    lr: float = Field(5e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)


def _mlp(d_in: int, p: TwoTowerParams) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, p.hidden_dim), nn.ReLU(), nn.Dropout(p.dropout),
                         nn.Linear(p.hidden_dim, p.out_dim))


class TwoTowerModule(nn.Module):
    """User tower ``history (B, L) -> (B, d)`` and item tower ``(id, features) -> (B, d)``.

    Id-embedding rows: 0 padding, ``i`` for a trained item ``i``, ``n_items + 1`` OOV
    (the buffer ``id_rows`` maps item index -> row). ``codes`` holds the item
    feature codes, ``(n_items + 1, F)``; its row 0 (padding) is all zeros.
    """

    def __init__(self, n_items: int, feature_vocab: list[int], p: TwoTowerParams) -> None:
        super().__init__()
        self.n_items, self.oov = n_items, n_items + 1
        self.max_len, self.pooling = p.max_len, p.pooling
        self.feature_vocab = list(feature_vocab)
        self.register_buffer("id_rows", torch.arange(n_items + 1))
        self.register_buffer("codes", torch.zeros(n_items + 1, len(feature_vocab),
                                                  dtype=torch.long))
        self.id_emb = nn.Embedding(n_items + 2, p.embed_dim, padding_idx=0)
        self.feat_emb = nn.ModuleList(nn.Embedding(v, p.embed_dim, padding_idx=0)
                                      for v in feature_vocab)
        d_in = p.embed_dim * (1 + len(feature_vocab))
        n_pool = 2
        if p.pooling == "attention":
            self.pos = nn.Embedding(p.max_len, d_in)
            self.att = nn.Linear(d_in, 1)
            n_pool = 3
        self.user_mlp = _mlp(n_pool * d_in, p)
        self.item_mlp = _mlp(d_in, p)
        use_fast_dropout(self)
        for emb in (self.id_emb, *self.feat_emb):
            nn.init.normal_(emb.weight, std=0.05)
            with torch.no_grad():
                emb.weight[0].zero_()

    def content(self, rows: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(...) id rows + (..., F) feature codes -> (..., d_in); codes out of range -> 0."""
        parts = [self.id_emb(rows)]
        for f, emb in enumerate(self.feat_emb):
            c = codes[..., f]
            parts.append(emb(torch.where((c >= 0) & (c < emb.num_embeddings), c,
                                         torch.zeros_like(c))))
        return torch.cat(parts, dim=-1)

    def user(self, history: torch.Tensor) -> torch.Tensor:
        """(B, max_len) left-padded item indices (0 = padding) -> (B, d) unit vectors."""
        x = self.content(self.id_rows[history], self.codes[history])  # pads are all-zero rows
        mask = (history > 0).unsqueeze(-1).to(x.dtype)
        mean = (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        pooled = [mean, x[:, -1]]
        if self.pooling == "attention":
            pos = self.pos.weight[self.max_len - history.shape[1]:]
            logit = self.att(torch.tanh(x + pos)).squeeze(-1)
            logit = logit.masked_fill(history == 0, -1e9)
            w = torch.softmax(logit, dim=1).unsqueeze(-1) * mask
            pooled.append((w * x).sum(1))
        return F.normalize(self.user_mlp(torch.cat(pooled, dim=-1)), dim=-1)

    def item(self, rows: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Id rows (B,) + feature codes (B, F) -> (B, d) unit vectors."""
        return F.normalize(self.item_mlp(self.content(rows, codes)), dim=-1)

    def item_tower(self, items: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Serving form: catalogue index (B,) (anything outside 1..n_items, e.g. 0 for a new
        item, takes the OOV row) + its feature codes (B, F) -> (B, d)."""
        known = (items >= 1) & (items <= self.n_items)
        rows = self.id_rows[torch.where(known, items, torch.zeros_like(items))]
        rows = torch.where(known, rows, torch.full_like(rows, self.oov))
        return self.item(rows, codes)

    def item_vectors(self) -> torch.Tensor:
        """(n_items + 1, d): row i = item index i; row 0 (padding) is zeros."""
        items = torch.arange(self.n_items + 1, device=self.codes.device)
        v = self.item(self.id_rows[items], self.codes[items])
        return torch.cat([torch.zeros_like(v[:1]), v[1:]])


def in_batch_softmax_loss(user: torch.Tensor, item: torch.Tensor, items: torch.Tensor,
                          log_q: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """Mean CE of ``s_ij = <u_i, v_j> / temperature - log q_j``; row i's positive is column i.

    `user` (B, d); `item` (C, d), C >= B: the batch's own items first, then any extra
    negatives; `items` (C,) their item indices; `log_q` (C,) the log sampling probability
    (or expected count) of each column's item, None for no correction. Other columns
    holding row i's own item are masked (not negatives).
    """
    b = len(user)
    logits = user @ item.T / temperature
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    same = items.unsqueeze(0) == items[:b].unsqueeze(1)
    same[torch.arange(b), torch.arange(b)] = False
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(b, device=logits.device))


def training_pairs(sequences: list[np.ndarray], max_len: int, window: int = 1
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Every (last `max_len` items before t, items at t .. t + window - 1) with t >= 1:
    (N, max_len) histories and (N, window) targets, 0-padded past a sequence's end."""
    hist, targets = [], []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64)
        if len(seq) < 2:
            continue
        padded = np.concatenate([np.zeros(max_len, dtype=np.int64), seq])
        view = np.lib.stride_tricks.sliding_window_view(padded, max_len)
        hist.append(view[1:len(seq)])  # window ending right before position t = 1 .. n-1
        ahead = np.concatenate([seq[1:], np.zeros(window - 1, dtype=np.int64)])
        targets.append(np.lib.stride_tricks.sliding_window_view(ahead, window))
    if not hist:
        return np.zeros((0, max_len), dtype=np.int64), np.zeros((0, window), dtype=np.int64)
    return np.concatenate(hist), np.concatenate(targets)


def feature_table(item_features: dict[str, np.ndarray], n_items: int
                  ) -> tuple[list[str], np.ndarray]:
    """Feature names and their (n_items + 1, F) int64 code table (row 0 zeros)."""
    names = list(item_features)
    table = np.zeros((n_items + 1, len(names)), dtype=np.int64)
    for f, name in enumerate(names):
        col = np.asarray(item_features[name])
        if col.shape != (n_items + 1,):
            raise ValueError(f"item_features['{name}'] has shape {col.shape}; expected "
                             f"({n_items + 1},) (one code per item index, 0 = padding)")
        if col.min(initial=0) < 0:
            raise ValueError(f"item_features['{name}'] has negative codes; 0 means unknown")
        table[:, f] = col
    table[0] = 0
    return names, table


@RETRIEVAL_MODELS.register("two_tower", params=TwoTowerParams)
class TwoTower(Retriever):
    """Two-tower (id + item features), in-batch softmax with logQ correction, OOV cold items."""

    name = "two_tower"

    def __init__(self, params: TwoTowerParams) -> None:
        self.params = params
        self.module: TwoTowerModule | None = None
        self.feature_names: list[str] = []
        self.history: list[float] = []
        self._vectors: torch.Tensor | None = None

    def fit(self, data: RetrievalData) -> TwoTower:
        p = self.params
        torch.manual_seed(data.seed)
        self.feature_names, codes = feature_table(data.item_features, data.n_items)
        vocab = [int(codes[:, f].max()) + 1 for f in range(codes.shape[1])]
        self.module = m = TwoTowerModule(data.n_items, vocab, p)
        flat = (np.concatenate(data.train_sequences) if data.train_sequences
                else np.zeros(0, np.int64))
        seen = np.zeros(data.n_items + 1, dtype=bool)
        seen[flat] = True
        id_rows = np.where(seen, np.arange(data.n_items + 1), m.oov)
        id_rows[0] = 0
        m.id_rows.copy_(torch.as_tensor(id_rows))
        m.codes.copy_(torch.as_tensor(codes))

        hist, ahead = training_pairs(data.train_sequences, p.max_len, p.target_window)
        counts = np.bincount(ahead[:, 0], minlength=data.n_items + 1).astype(np.float64)
        q = torch.as_tensor(counts / max(counts.sum(), 1.0), dtype=torch.float32)
        hist_t, ahead_t = torch.as_tensor(hist), torch.as_tensor(ahead)
        reach = torch.as_tensor((ahead > 0).sum(1))  # targets available per pair (>= 1)

        def step(idx: torch.Tensor) -> Step:
            h = hist_t[idx]
            if p.target_window > 1:
                t = ahead_t[idx, (torch.rand(len(idx)) * reach[idx]).long()]
            else:
                t = ahead_t[idx, 0]
            rows = m.id_rows[t]
            if p.id_dropout > 0:
                drop = torch.rand(len(t)) < p.id_dropout
                rows = torch.where(drop, torch.full_like(rows, m.oov), rows)
            items = t
            if p.uniform_negatives:
                extra = torch.randint(1, data.n_items + 1, (p.uniform_negatives,))
                items, rows = torch.cat([t, extra]), torch.cat([rows, m.id_rows[extra]])
            # expected count of each column's item among the batch's candidates
            expected = len(t) * q[items] + p.uniform_negatives / data.n_items
            loss = in_batch_softmax_loss(
                m.user(h), m.item(rows, m.codes[items]), items,
                torch.log(expected) if p.logq_correction else None, p.temperature)
            return Step(loss, len(idx))

        def forget_vectors() -> None:  # the item tower changed since the last cache
            self._vectors = None

        fit_retriever(self, data, epochs=p.epochs, lr=p.lr, weight_decay=p.weight_decay,
                      n_samples=len(ahead), batch_size=p.batch_size, step=step, min_batch=2,
                      before_validation=forget_vectors)
        self._vectors = None
        return self

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """(n_items + 1, d) float32; row i = item index i, row 0 zeros (cached)."""
        if self._vectors is None:
            self._vectors = self.module.eval().item_vectors()
        return self._vectors

    @torch.no_grad()
    def user_vectors(self, histories: list[np.ndarray]) -> torch.Tensor:
        m = self.module.eval()
        return m.user(torch.as_tensor(left_pad(histories, self.params.max_len)))

    @torch.no_grad()
    def scores(self, histories: list[np.ndarray]) -> torch.Tensor:
        """(n, n_items) cosine scores / temperature-free: <user, item> for items 1..n."""
        return self.user_vectors(histories) @ self.item_vectors()[1:].T

    def recommend(self, histories: list[np.ndarray], k: int,
                  exclude: list[np.ndarray] | None = None) -> np.ndarray:
        return top_k(self.scores, histories, k, exclude)

    def state(self) -> dict[str, Any]:
        return {"state_dict": self.module.state_dict(), "feature_names": list(self.feature_names)}

    @classmethod
    def from_state(cls, params: TwoTowerParams | dict[str, Any] | None, state: dict[str, Any]
                   ) -> TwoTower:
        """Rebuild a fitted retriever from `state()` (shapes come from the state dict)."""
        p = coerce_params(TwoTowerParams, params)
        sd = state["state_dict"]
        names = list(state.get("feature_names") or [])
        vocab = [int(sd[f"feat_emb.{f}.weight"].shape[0]) for f in range(len(names))]
        model = cls(p)
        model.feature_names = names
        model.module = TwoTowerModule(int(sd["id_rows"].shape[0]) - 1, vocab, p)
        model.module.load_state_dict(sd)
        model.module.eval()
        return model
