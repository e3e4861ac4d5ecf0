"""Parameter schemas and the base class shared by the ranking models."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from recflow.config_types import MAX_EMBED_DIM, MAX_WIDTH, StrictModel, Width
from recflow.features import FeatureSpec
from recflow.models.base import RankingModel
from recflow.models.layers import Activation, Norm, resolve_fields


class FieldsParams(StrictModel):
    """`fields` picks a subset of the spec (e.g. for a small student); None = all.

    Numbers are strict (no bool -> int). Every int of a ranking model's params is a size
    (widths, layers, heads, experts, ranks), so one without its own `le` bound is held
    to MAX_WIDTH here, subclasses' fields included.
    """

    fields: list[str] | None = Field(None, min_length=1)
    exclude_fields: list[str] = Field(
        default_factory=list, description="Fields not to read (applied after `fields`): "
        "e.g. a wide hashed cross that a deep model would only memorise.")

    def selected(self, spec: FeatureSpec) -> list[str]:
        """`fields` (every spec field when None) minus `exclude_fields`, in spec order."""
        unknown = sorted(set(self.exclude_fields) - set(spec.names))
        if unknown:
            raise ValueError(f"exclude_fields: unknown field(s) {unknown}; the feature spec "
                             f"has {spec.names}")
        return [n for n in resolve_fields(spec, self.fields) if n not in self.exclude_fields]

    @field_validator("*", mode="after")
    @classmethod
    def _sizes_bounded(cls, value: Any, info: ValidationInfo) -> Any:
        sizes = value if isinstance(value, list) else [value]
        too_big = [v for v in sizes
                   if isinstance(v, int) and not isinstance(v, bool) and v > MAX_WIDTH]
        if too_big:
            raise ValueError(f"{too_big[0]} is above the bound {MAX_WIDTH} for a size "
                             f"(width, layers, heads) of a ranking model")
        return value


class EmbeddingParams(FieldsParams):
    embed_dim: int = Field(16, ge=1, le=MAX_EMBED_DIM)


class DeepParams(EmbeddingParams):
    """An embedding model with an MLP over the flattened field embeddings."""

    hidden: list[Width] = [256, 128, 64]
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

