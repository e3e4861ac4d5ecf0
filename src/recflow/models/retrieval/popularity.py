"""Popularity baseline: the most clicked items of the training window, for everyone."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from recflow.models.retrieval.base import (
    RETRIEVAL_MODELS,
    RetrievalData,
    Retriever,
    coerce_params,
    top_k,
)


class PopularityParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@RETRIEVAL_MODELS.register("popularity", params=PopularityParams)
class Popularity(Retriever):
    """Most-clicked items in the training window (ties by lower index); no personalisation."""

    name = "popularity"

    def __init__(self, params: PopularityParams) -> None:
        self.params = params
        self.counts: np.ndarray | None = None

    def fit(self, data: RetrievalData) -> Popularity:
        flat = np.concatenate(data.train_sequences) if data.train_sequences else np.zeros(0, int)
        self.counts = np.bincount(flat, minlength=data.n_items + 1).astype(np.float64)
        self.counts[0] = -1  # padding is never recommended
        return self

    def scores(self, histories: list[np.ndarray]) -> torch.Tensor:
        """(n, n_items) training click counts, the same row for everyone; ties go to the
        lower index (a fraction < 1 added to integer counts never reorders them)."""
        n = len(self.counts) - 1
        ranked = self.counts[1:] + (n - np.arange(n)) / (n + 1)
        return torch.as_tensor(ranked).expand(len(histories), -1).clone()

    def recommend(self, histories: list[np.ndarray], k: int,
                  exclude: list[np.ndarray] | None = None) -> np.ndarray:
        if exclude is None:  # one ranking for everyone
            order = np.argsort(-self.counts, kind="stable")[:k]
            # k > n_items: padding (index 0, count -1) comes last and means "no item"
            return np.tile(np.pad(order, (0, k - len(order))), (len(histories), 1))
        return top_k(self.scores, histories, k, exclude)

    def state(self) -> dict[str, Any]:
        return {"counts": torch.as_tensor(self.counts)}

    @classmethod
    def from_state(cls, params: PopularityParams | dict[str, Any] | None,
                   state: dict[str, Any]) -> Popularity:
        """Rebuild a fitted baseline from `state()`."""
        model = cls(coerce_params(PopularityParams, params))
        model.counts = np.asarray(state["counts"], dtype=np.float64)
        return model
