"""Parameter schemas and the base class shared by the ranking models."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from recflow.features import FeatureSpec
from recflow.models.base import RankingModel
from recflow.models.layers import Activation, Norm, resolve_fields


class FieldsParams(BaseModel):
    """`fields` picks a subset of the spec (e.g. for a small student); None = all."""

    model_config = ConfigDict(extra="forbid")

    fields: list[str] | None = Field(None, min_length=1)


class EmbeddingParams(FieldsParams):
    embed_dim: int = Field(16, ge=1)


class DeepParams(EmbeddingParams):
    """An embedding model with an MLP over the flattened field embeddings."""

    hidden: list[PositiveInt] = [256, 128, 64]
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    norm: Norm = None
    activation: Activation = "relu"


class FieldModel(RankingModel):
    """A ranking model that reads a known subset of the spec's fields."""

    def __init__(self, spec: FeatureSpec, reads: Iterable[str] | None) -> None:
        super().__init__(spec)
        self._reads = resolve_fields(spec, reads)

    @property
    def input_names(self) -> list[str]:
        return list(self._reads)

