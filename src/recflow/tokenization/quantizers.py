"""Residual quantisers that turn item vectors into L-level code tuples.

Residual quantisation (Zeghidour et al. 2021; TIGER, Rajput et al. 2023): r_0 = z; per level c_l = argmin_k ||r_{l-1} - C_l[k]||,
r_l = r_{l-1} - C_l[c_l]; the ID is (c_1..c_L).

* ``rq_kmeans``: each codebook C_l is a k-means (k-means++) fit on level-l residuals.
* ``rq_vae`` (TIGER): MLP encoder z = Enc(x), residual quantisation of z with a
  straight-through gradient, x_hat = Dec(sum_l C_l[c_l]); loss
  ||x - x_hat||^2 + sum_l ||sg[r_{l-1}] - C_l[c_l]||^2 + beta ||r_{l-1} - sg[C_l[c_l]]||^2,
  codebooks initialised by k-means on the first batch, dead codes re-seeded each epoch.

Every tokenizer keeps its fitted state as tensors (`state()` / `load_state`), so it can
be saved with torch and loaded with ``weights_only=True``, and encodes unseen items
without refitting.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import Field
from sklearn.cluster import KMeans
from torch import nn

from recflow.config_types import MAX_BATCH, MAX_COUNT, MAX_EMBED_DIM, MAX_EPOCHS, StrictModel, Width
from recflow.registry import TOKENIZERS
from recflow.training.core import FitConfig, Step, build_optimizer
from recflow.training.core import fit as core_fit

logger = logging.getLogger(__name__)


def residual_assign(x: torch.Tensor, codebooks: list[torch.Tensor]) -> tuple[torch.Tensor, list]:
    """Greedy residual assignment: codes (n, L) and the residual before each level."""
    residual = x
    codes, residuals = [], []
    for cb in codebooks:
        residuals.append(residual)
        c = torch.cdist(residual, cb).argmin(dim=1)
        codes.append(c)
        residual = residual - cb[c]
    return torch.stack(codes, dim=1), residuals


def _kmeans(x: np.ndarray, k: int, seed: int, max_iter: int = 100) -> np.ndarray:
    """k-means++ centroids (k clipped to the number of distinct rows)."""
    k_eff = max(1, min(k, len(np.unique(x.round(6), axis=0))))
    km = KMeans(n_clusters=k_eff, init="k-means++", n_init=1, max_iter=max_iter,
                random_state=seed).fit(x)
    centers = km.cluster_centers_.astype(np.float32)
    if k_eff < k:  # pad unused codes far away so they are never chosen
        pad = np.full((k - k_eff, x.shape[1]), 1e6, dtype=np.float32)
        centers = np.vstack([centers, pad])
    return centers


@runtime_checkable
class TokenizerProtocol(Protocol):
    """What the semantic-ID pipeline calls on a tokenizer (to fit, report, save and reload it).

    `ResidualTokenizer` implements `reconstruction_errors` from `encode` and `reconstruct`.
    """

    #: code levels L of every ID
    levels: int
    #: codes per level
    codebook_size: int

    def fit(self, x: np.ndarray) -> TokenizerProtocol:
        """Learn the codebooks from item vectors (N, D); returns self."""

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Item vectors (N, D) -> int64 codes (N, levels), without refitting."""

    def reconstruct(self, codes: np.ndarray, levels: int | None = None) -> np.ndarray:
        """Codes -> vectors (N, D) from the first `levels` levels (all when None)."""

    def reconstruction_errors(self, x: np.ndarray) -> list[float]:
        """Relative squared error using the first 1..L levels (the report's curve)."""

    def state(self) -> dict[str, Any]:
        """The fitted state as tensors and plain data (loadable with weights_only=True)."""

    def load_state(self, state: dict[str, Any]) -> TokenizerProtocol:
        """Restore a fitted state from `state()`; returns self."""


class ResidualTokenizer:
    """Shared interface: fit(x) -> self, encode(x) -> (n, L) codes, reconstruct(codes)."""

    name = "tokenizer"
    levels: int
    codebook_size: int

    def fit(self, x: np.ndarray) -> ResidualTokenizer:
        raise NotImplementedError

    def encode(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reconstruct(self, codes: np.ndarray, levels: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def reconstruction_errors(self, x: np.ndarray) -> list[float]:
        """Relative squared error ||x - x_hat||^2 / ||x||^2 using the first 1..L levels."""
        codes = self.encode(x)
        denom = float(np.sum(x.astype(np.float64) ** 2)) or 1.0
        return [float(np.sum((x - self.reconstruct(codes, levels=lv)) ** 2) / denom)
                for lv in range(1, self.levels + 1)]

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> ResidualTokenizer:
        raise NotImplementedError


TOKENIZERS.set_contract(TokenizerProtocol, base=ResidualTokenizer,
                        stubs=("fit", "encode", "reconstruct", "state", "load_state"))


class RQKMeansParams(StrictModel):
    levels: int = Field(3, ge=1, le=8)
    codebook_size: int = Field(32, ge=2, le=4096)
    max_iter: int = Field(100, ge=1, le=MAX_COUNT)
    seed: int = 0


@TOKENIZERS.register("rq_kmeans", params=RQKMeansParams)
class RQKMeans(ResidualTokenizer):
    """Residual k-means: level-by-level k-means++ on the residuals (GRID, OneRec)."""

    params_schema = RQKMeansParams
    name = "rq_kmeans"

    def __init__(self, params: RQKMeansParams) -> None:
        self.params = params
        self.levels = params.levels
        self.codebook_size = params.codebook_size
        self.codebooks: list[torch.Tensor] = []

    def fit(self, x: np.ndarray) -> RQKMeans:
        residual = np.asarray(x, dtype=np.float32)
        self.codebooks = []
        for level in range(self.levels):
            centers = _kmeans(residual, self.codebook_size, self.params.seed + level,
                              self.params.max_iter)
            cb = torch.from_numpy(centers)
            codes = torch.cdist(torch.from_numpy(residual), cb).argmin(dim=1)
            residual = residual - centers[codes.numpy()]
            self.codebooks.append(cb)
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        if not self.codebooks:
            raise RuntimeError("rq_kmeans is not fitted; call fit() first")
        codes, _ = residual_assign(torch.as_tensor(np.asarray(x, np.float32)), self.codebooks)
        return codes.numpy().astype(np.int64)

    def reconstruct(self, codes: np.ndarray, levels: int | None = None) -> np.ndarray:
        levels = self.levels if levels is None else levels
        out = torch.zeros(len(codes), self.codebooks[0].shape[1])
        for lv in range(levels):
            out += self.codebooks[lv][torch.as_tensor(codes[:, lv])]
        return out.numpy()

    def state(self) -> dict[str, Any]:
        return {"codebooks": torch.stack(self.codebooks)}

    def load_state(self, state: dict[str, Any]) -> RQKMeans:
        self.codebooks = list(state["codebooks"].float())
        return self


class RQVAEParams(StrictModel):
    levels: int = Field(3, ge=1, le=8)
    codebook_size: int = Field(32, ge=2, le=4096)
    latent_dim: int = Field(32, ge=2, le=MAX_EMBED_DIM)
    hidden: list[Width] = Field(default_factory=lambda: [128])
    beta: float = Field(0.25, ge=0, description="Commitment weight (TIGER: 0.25).")
    epochs: int = Field(60, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(512, ge=8, le=MAX_BATCH)
    lr: float = Field(1e-3, gt=0)
    reset_dead_codes: bool = True
    seed: int = 0
    valid_share: float = Field(0.1, ge=0, lt=1, description="Items held out to validate the "
                               "loss after each epoch (0: validate on the training items).")
    patience: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="Epochs without a "
                                 "lower (smoothed) validation loss before stopping; the best "
                                 "epoch's weights are restored. None: every epoch.")
    smoothing: int = Field(3, ge=1, le=20, description="Epochs the validation loss is "
                           "averaged over before comparing.")


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class _RQVAEModule(nn.Module):
    def __init__(self, in_dim: int, p: RQVAEParams) -> None:
        super().__init__()
        self.encoder = _mlp([in_dim, *p.hidden, p.latent_dim])
        self.decoder = _mlp([p.latent_dim, *reversed(p.hidden), in_dim])
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(p.codebook_size, p.latent_dim) * 0.1)
             for _ in range(p.levels)])

    def quantize(self, z: torch.Tensor, levels: int | None = None):
        cbs = list(self.codebooks)[: levels or len(self.codebooks)]
        codes, residuals = residual_assign(z.detach(), [cb.detach() for cb in cbs])
        # codebook + commitment terms per level, on the live residuals
        zq = torch.zeros_like(z)
        residual = z
        cb_loss = commit_loss = z.new_zeros(())
        for lv, cb in enumerate(cbs):
            e = cb[codes[:, lv]]
            cb_loss = cb_loss + ((residual.detach() - e) ** 2).sum(-1).mean()
            commit_loss = commit_loss + ((residual - e.detach()) ** 2).sum(-1).mean()
            zq = zq + e
            residual = residual - e.detach()
        zq_st = z + (zq - z).detach()  # straight-through estimator
        return codes, zq_st, cb_loss, commit_loss, residuals


class _RQVAETask:
    """RQ-VAE for the training core; counts code usage to re-seed dead codes per epoch."""

    def __init__(self, tokenizer: RQVAE, train: torch.Tensor, valid: torch.Tensor) -> None:
        self.tokenizer, self.module = tokenizer, tokenizer.module
        self.train, self.valid = train, valid
        p = tokenizer.params
        self.batch_size = min(p.batch_size, len(train))
        self.usage = torch.zeros(p.levels, p.codebook_size)
        self.epoch = 0

    def steps(self) -> int:
        return -(-len(self.train) // self.batch_size)

    def batches(self, generator: torch.Generator):
        self.usage.zero_()
        perm = torch.randperm(len(self.train), generator=generator)
        for start in range(0, len(self.train), self.batch_size):
            yield self.train[perm[start:start + self.batch_size]]

    def step(self, batch: torch.Tensor) -> Step:
        loss, codes = self.tokenizer.loss(batch)
        for lv in range(codes.shape[1]):
            self.usage[lv] += torch.bincount(codes[:, lv], minlength=self.usage.shape[1])
        return Step(loss, len(batch))

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        p = self.tokenizer.params
        self.epoch += 1
        if p.reset_dead_codes and self.epoch < p.epochs:  # seeded per epoch: resume-exact
            generator = torch.Generator().manual_seed(p.seed * 10_007 + self.epoch)
            self.tokenizer.reset_dead(self.train, self.usage, generator)
        loss, _ = self.tokenizer.loss(self.valid)
        return {"valid_loss": float(loss)}


@TOKENIZERS.register("rq_vae", params=RQVAEParams)
class RQVAE(ResidualTokenizer):
    """TIGER's RQ-VAE: MLP autoencoder with residual codebooks, STE, k-means init, dead-code reset."""

    params_schema = RQVAEParams
    name = "rq_vae"

    def __init__(self, params: RQVAEParams) -> None:
        self.params = params
        self.levels = params.levels
        self.codebook_size = params.codebook_size
        self.module: _RQVAEModule | None = None
        self.history: list[float] = []

    def fit(self, x: np.ndarray) -> RQVAE:
        """k-means-initialised codebooks, then the training core: reconstruction + codebook +
        beta * commitment loss, validation loss on held-out items, dead codes re-seeded
        between epochs."""
        p = self.params
        torch.manual_seed(p.seed)
        data = torch.as_tensor(np.asarray(x, np.float32))
        self.module = m = _RQVAEModule(data.shape[1], p)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(p.seed))
        n_valid = int(len(data) * p.valid_share)
        valid, train = (data[order[:n_valid]], data[order[n_valid:]]) if n_valid else (data, data)
        self._init_codebooks(train[: max(min(p.batch_size, len(train)), p.codebook_size)])
        task = _RQVAETask(self, train, valid)
        config = FitConfig(epochs=p.epochs, seed=p.seed, monitor="valid_loss", mode="min",
                           patience=p.patience, smoothing=p.smoothing, progress=False)
        result = core_fit(task, config, build_optimizer(m, lr=p.lr), name="rq_vae",
                          steps=task.steps())
        self.history = [row["train_loss"] for row in result.history]
        return self

    @torch.no_grad()
    def _init_codebooks(self, first: torch.Tensor) -> None:
        """k-means on the encoded first batch, level by level on the residuals."""
        p, m = self.params, self.module
        rng = np.random.default_rng(p.seed)
        residual = m.encoder(first).numpy()
        for lv in range(p.levels):
            centers = _kmeans(residual, p.codebook_size, p.seed + lv, 50)
            unused = (centers >= 1e5).any(1)
            centers[unused] = residual[rng.integers(0, len(residual), int(unused.sum()))]
            m.codebooks[lv].copy_(torch.from_numpy(centers))
            codes = torch.cdist(torch.from_numpy(residual), m.codebooks[lv]).argmin(1)
            residual = residual - centers[codes.numpy()]

    def loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(recon + codebook + beta * commitment, codes (B, levels))."""
        m = self.module
        codes, zq, cb_loss, commit_loss, _ = m.quantize(m.encoder(batch))
        recon = ((m.decoder(zq) - batch) ** 2).sum(-1).mean()
        return recon + cb_loss + self.params.beta * commit_loss, codes

    @torch.no_grad()
    def reset_dead(self, data: torch.Tensor, usage: torch.Tensor,
                   generator: torch.Generator) -> None:
        """Re-seed codes no item used this epoch with residuals of random items."""
        m = self.module
        pick = torch.randperm(len(data), generator=generator)[: 4 * self.codebook_size]
        sample = data[pick]
        _, _, _, _, residuals = m.quantize(m.encoder(sample))
        for lv in range(self.levels):
            dead = torch.nonzero(usage[lv] == 0).ravel()
            if len(dead):
                rows = torch.randint(0, len(sample), (len(dead),), generator=generator)
                m.codebooks[lv][dead] = residuals[lv][rows]

    def _check(self) -> _RQVAEModule:
        if self.module is None:
            raise RuntimeError("rq_vae is not fitted; call fit() first")
        return self.module

    @torch.no_grad()
    def encode(self, x: np.ndarray) -> np.ndarray:
        m = self._check().eval()
        codes, *_ = m.quantize(m.encoder(torch.as_tensor(np.asarray(x, np.float32))))
        return codes.numpy().astype(np.int64)

    @torch.no_grad()
    def reconstruct(self, codes: np.ndarray, levels: int | None = None) -> np.ndarray:
        m = self._check().eval()
        levels = self.levels if levels is None else levels
        zq = sum(m.codebooks[lv][torch.as_tensor(codes[:, lv])] for lv in range(levels))
        return m.decoder(zq).numpy()

    def state(self) -> dict[str, Any]:
        m = self._check()
        return {"in_dim": int(m.encoder[0].in_features), "state_dict": m.state_dict()}

    def load_state(self, state: dict[str, Any]) -> RQVAE:
        self.module = _RQVAEModule(int(state["in_dim"]), self.params)
        self.module.load_state_dict(state["state_dict"])
        return self
