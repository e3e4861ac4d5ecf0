"""Shared pieces of the retrieval models: registry, data container, sequence helpers.

Retrieval models live in their own registry (``RETRIEVAL_MODELS``), not in
``MODELS``: they do not follow the ranking contract (``forward(inputs) -> logits
(B, tasks)``), so a ranking YAML must not be able to name them.

Item indices: the catalogue is ``item_ids`` (raw ids, sorted); index ``i + 1`` is
``item_ids[i]`` and 0 is padding. Every model takes time-ordered histories of
item indices and returns, per user, a ranked array of item indices over the whole
catalogue (no sampled negatives).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from pydantic import BaseModel

from recflow.registry import Registry

logger = logging.getLogger(__name__)

RETRIEVAL_MODELS = Registry("retrieval_models")


def _discover(registry: Registry) -> None:
    import importlib

    importlib.import_module("recflow.models.retrieval")


RETRIEVAL_MODELS.set_discovery(_discover)


@dataclass
class RetrievalData:
    """What a retrieval model trains on."""

    n_items: int  # catalogue size; item indices are 1..n_items
    train_sequences: list[np.ndarray]  # per user, time-ordered item indices (training window)
    item_features: dict[str, np.ndarray] = field(default_factory=dict)  # (n_items + 1,) ints
    semantic_ids: np.ndarray | None = None  # (n_items + 1, T) token per position; row 0 unused
    cold_items: np.ndarray | None = None  # indices of items with no training interaction at all
    seed: int = 0


class Retriever:
    """fit(data) -> self; recommend(histories, k) -> (n, k) item indices, best first."""

    name = "retriever"
    train_seconds: float = 0.0

    def fit(self, data: RetrievalData) -> Retriever:
        raise NotImplementedError

    def recommend(self, histories: list[np.ndarray], k: int) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {}

    def n_params(self) -> int:
        module = getattr(self, "module", None)
        return int(sum(p.numel() for p in module.parameters())) if module is not None else 0


P = TypeVar("P", bound=BaseModel)


def coerce_params(kind: type[P], params: P | dict[str, Any] | None) -> P:
    """Typed params from a model, a dict (e.g. a saved payload) or None (defaults)."""
    return params if isinstance(params, kind) else kind.model_validate(dict(params or {}))


def windows(sequences: list[np.ndarray], length: int, min_length: int = 2) -> list[np.ndarray]:
    """Split each sequence into chunks of at most `length` items, the latest chunk complete."""
    out = []
    for seq in sequences:
        end = len(seq)
        while end >= min_length:
            out.append(np.asarray(seq[max(0, end - length):end]))
            end -= length - 1  # consecutive windows overlap by one item (its next target)
    return out


def left_pad(seqs: list[np.ndarray], length: int) -> np.ndarray:
    """(n, length) int64, sequences right-aligned (latest last), 0 = padding."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = np.asarray(s)[-length:]
        if len(s):
            out[i, length - len(s):] = s
    return out


def causal_pad_mask(pad: torch.Tensor, heads: int) -> torch.Tensor:
    """(B * heads, S, S) bool mask (True = blocked): causal, pads blocked except self.

    Built from index comparisons only (no triu/eye): the exported graphs then run in
    onnxruntime, which has no boolean EyeLike kernel.
    """
    idx = torch.arange(pad.shape[1], device=pad.device)
    later = idx.unsqueeze(0) > idx.unsqueeze(1)  # [i, j]: key j after query i
    blocked = later.unsqueeze(0) | pad.unsqueeze(1)
    blocked = blocked & (idx.unsqueeze(0) != idx.unsqueeze(1)).unsqueeze(0)
    return blocked.repeat_interleave(heads, dim=0)


def batches(n: int, batch_size: int, rng: np.random.Generator | None = None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def train_next_token(
    module: torch.nn.Module,
    sequences: torch.Tensor,
    step_loss: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, int]],
    *, epochs: int, batch_size: int, optimizer: torch.optim.Optimizer, seed: int,
) -> tuple[list[float], float]:
    """Shuffled next-token training shared by the sequence retrievers.

    `step_loss(inputs, targets)` returns the mean loss of a batch and how many
    targets it covered; returns (mean loss per epoch, train seconds).
    """
    rng = np.random.default_rng(seed)
    history: list[float] = []
    with Timer() as timer:
        for _ in range(epochs):
            module.train()
            total, count = 0.0, 0
            for idx in batches(len(sequences), batch_size, rng):
                batch = sequences[torch.as_tensor(idx)]
                loss, n = step_loss(batch[:, :-1], batch[:, 1:])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * n
                count += n
            history.append(total / max(count, 1))
    return history, timer.seconds


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
