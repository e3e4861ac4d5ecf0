"""Retrieval models (full-catalogue next-item prediction); importing registers them."""

from recflow.models.retrieval import (  # noqa: F401  (registers)
    popularity,
    sasrec,
    tiger,
    two_tower,
)
from recflow.models.retrieval.base import (
    RETRIEVAL_MODELS,
    RetrievalData,
    Retriever,
    RetrieverProtocol,
)
from recflow.models.retrieval.tiger import Trie, constrained_beam_search

__all__ = ["RETRIEVAL_MODELS", "RetrievalData", "Retriever", "RetrieverProtocol", "Trie",
           "constrained_beam_search"]
