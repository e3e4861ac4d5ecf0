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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel

from recflow.metrics.retrieval import recall_ndcg_at_k
from recflow.registry import RETRIEVAL_MODELS
from recflow.training.core import Checkpoints, FitConfig, FitResult, Step, build_optimizer
from recflow.training.core import fit as core_fit

logger = logging.getLogger(__name__)



@dataclass
class EvalSet:
    """Users to rank for: their histories (model input), targets and the items to mask.

    `seen[u]`: every item the user interacted with before the target period (not just the
    last `eval_history`), masked when evaluation excludes seen items (RecBole's rule for
    general models such as popularity and two-tower).
    """

    histories: list[np.ndarray]
    targets: list[set[int]]
    cold_items: set[int]
    n_items: int
    statistics: dict[str, Any] | None = None
    seen: list[np.ndarray] | None = None


@dataclass
class RetrievalData:
    """What a retrieval model trains on, and how the training core validates it."""

    n_items: int  # catalogue size; item indices are 1..n_items
    train_sequences: list[np.ndarray]  # per user, time-ordered item indices (training window)
    item_features: dict[str, np.ndarray] = field(default_factory=dict)  # (n_items + 1,) ints
    semantic_ids: np.ndarray | None = None  # (n_items + 1, T) token per position; row 0 unused
    cold_items: np.ndarray | None = None  # indices of items with no training interaction at all
    seed: int = 0
    valid: EvalSet | None = None  # held-out targets for early stopping (None: no validation)
    exclude_seen: bool = False  # mask `valid.seen` when validating (as at test time)
    fit: FitConfig | None = None  # the training core's settings (epochs come from the model)
    checkpoints: Checkpoints | None = None


class Retriever:
    """fit(data) -> self; recommend(histories, k, exclude) -> (n, k) item indices, best first.

    `exclude[u]`: item indices never to return for user u (their seen items); only models
    with `can_exclude_seen` take it (TIGER's beam search decodes a fixed number of IDs).
    """

    name = "retriever"
    train_seconds: float = 0.0
    can_exclude_seen: bool = True
    history: list[float]
    fit_result: FitResult | None = None

    def fit(self, data: RetrievalData) -> Retriever:
        raise NotImplementedError

    def recommend(self, histories: list[np.ndarray], k: int,
                  exclude: list[np.ndarray] | None = None) -> np.ndarray:
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


def windows(sequences: list[np.ndarray], length: int, min_length: int = 2,
            stride: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Windows of at most `length` items ending every `stride` items from each sequence's
    end, and per window the first target position it owns.

    Each target (an item with at least one item before it) is owned, so trained on, by
    exactly one window: the one in which it has the most context. With the default stride
    `length - 1` consecutive windows overlap by one item and a target may see only a few
    items of context; a smaller stride gives every owned target at least
    `length - 1 - stride` items before it (RecBole trains each target on its full
    `max_len` history) at `length / stride` times the compute.
    Returns (windows, own_from): window w owns its targets at positions >= own_from[w]
    (0-based within the window; position 0 is never a target).
    """
    stride = length - 1 if stride is None else stride
    out, own = [], []
    for seq in sequences:
        end = len(seq)
        while end >= min_length:
            start = max(0, end - length)
            earliest = start == 0 or end - stride < min_length
            out.append(np.asarray(seq[start:end]))
            own.append(1 if earliest else max(1, end - stride - start))
            if earliest:
                break
            end -= stride
    return out, np.asarray(own, dtype=np.int64)


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


def mask_seen(scores: torch.Tensor, exclude: list[np.ndarray] | None) -> torch.Tensor:
    """Set the scores (n, n_items) of each row's excluded item indices (1-based) to -inf."""
    if exclude is None:
        return scores
    rows = np.repeat(np.arange(len(exclude)), [len(e) for e in exclude])
    cols = np.concatenate(exclude).astype(np.int64) - 1 if len(rows) else np.zeros(0, np.int64)
    scores[torch.as_tensor(rows), torch.as_tensor(cols)] = float("-inf")
    return scores


def top_k(score: Callable[[list[np.ndarray]], torch.Tensor], histories: list[np.ndarray],
          k: int, exclude: list[np.ndarray] | None = None, chunk: int = 1024) -> np.ndarray:
    """(n, k) best item indices from a full-catalogue scorer, `chunk` users at a time.

    With k > n_items the columns past the catalogue are 0 (padding: no item)."""
    out, width = [], k
    for start in range(0, len(histories), chunk):
        s = score(histories[start:start + chunk])
        s = mask_seen(s, None if exclude is None else exclude[start:start + chunk])
        best = torch.topk(s, min(k, s.shape[1]), dim=1)
        items = best.indices.numpy() + 1
        items[~torch.isfinite(best.values).numpy()] = 0  # masked: fewer unseen items than k
        out.append(np.pad(items, ((0, 0), (0, width - items.shape[1]))))
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def validation_metrics(model: Retriever, data: RetrievalData, k: int = 10) -> dict[str, float]:
    """recall@k / ndcg@k on `data.valid` (the training core's validation of a retriever)."""
    valid = data.valid
    exclude = valid.seen if data.exclude_seen else None
    topk = model.recommend(valid.histories, k, exclude)
    recall, ndcg = recall_ndcg_at_k(topk, valid.targets, k)
    return {f"valid_recall@{k}": recall, f"valid_ndcg@{k}": ndcg}


class IndexBatchTask:
    """A retriever for the training core: shuffled batches of sample indices, the model's
    `step(indices) -> Step`, and `validate()` on the held-out users."""

    def __init__(self, module: torch.nn.Module, n_samples: int, batch_size: int,
                 step: Callable[[torch.Tensor], Step],
                 validate: Callable[[], dict[str, float]], min_batch: int = 1) -> None:
        self.module, self.n_samples, self.batch_size = module, n_samples, batch_size
        self.step, self.validate, self.min_batch = step, validate, min_batch

    def batches(self, generator: torch.Generator):
        order = torch.randperm(self.n_samples, generator=generator)
        for start in range(0, self.n_samples, self.batch_size):
            idx = order[start:start + self.batch_size]
            if len(idx) >= self.min_batch:
                yield idx

    def steps(self) -> int:
        return -(-self.n_samples // self.batch_size)


def fit_config(data: RetrievalData, epochs: int) -> FitConfig:
    """The run's `FitConfig` with the model's epochs and the data's seed; without a
    validation split, every epoch is trained and the last weights kept."""
    config = (data.fit or FitConfig(monitor="valid_ndcg@10")).model_copy(
        update={"epochs": epochs, "seed": data.seed})
    if data.valid is None:
        config = config.model_copy(update={"monitor": "train_loss", "mode": "min",
                                           "patience": None})
    return config


def fit_retriever(model: Retriever, data: RetrievalData, *, epochs: int, lr: float,
                  weight_decay: float, n_samples: int, batch_size: int,
                  step: Callable[[torch.Tensor], Step], min_batch: int = 1,
                  before_validation: Callable[[], None] | None = None) -> FitResult:
    """Train `model.module` through the training core (AdamW): validation on `data.valid`
    after each epoch (recall / ndcg at the monitored K), early stopping, best weights,
    checkpoints and exact resume. Sets `model.history` (train loss per epoch) and
    `model.fit_result`."""
    config = fit_config(data, epochs)
    k = int(config.monitor.rsplit("@", 1)[1]) if "@" in config.monitor else 10

    def validate() -> dict[str, float]:
        if before_validation is not None:
            before_validation()
        return validation_metrics(model, data, k) if data.valid is not None else {}

    task = IndexBatchTask(model.module, n_samples, batch_size, step, validate, min_batch)
    optimizer = build_optimizer(model.module, name="adamw", lr=lr, weight_decay=weight_decay)
    result = core_fit(task, config, optimizer, data.checkpoints, name=model.name,
                      steps=task.steps())
    model.history = [row["train_loss"] for row in result.history]
    model.fit_result = result
    model.train_seconds = result.train_seconds
    return result


@runtime_checkable
class RetrieverProtocol(Protocol):
    """What the retrieval pipeline and its evaluation call on a retrieval model.

    Optional, read with a default when absent: `from_state(params, state)` (a classmethod;
    export rebuilds a fitted model with it), `fit_result` and `history` (training curves).
    `Retriever` implements all of it but `fit` and `recommend`.
    """

    #: False when `recommend` cannot take `exclude` (the config check refuses exclude_seen)
    can_exclude_seen: bool

    def fit(self, data: RetrievalData) -> RetrieverProtocol:
        """Train on `data` (histories of item indices 1..n_items); returns self."""

    def recommend(self, histories: list[np.ndarray], k: int,
                  exclude: list[np.ndarray] | None = None) -> np.ndarray:
        """(n, k) item indices per history, best first, never an index in `exclude[u]`."""

    def state(self) -> dict[str, Any]:
        """The fitted state as plain data and tensors (saved with the payload)."""

    def n_params(self) -> int:
        """Trainable parameter count (reported beside the metrics)."""


RETRIEVAL_MODELS.set_contract(RetrieverProtocol, base=Retriever, stubs=("fit", "recommend"))
