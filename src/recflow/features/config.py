"""Typed configuration of features: what `conf/*/parameters_preprocessing.yml` may say.

Each field names one transform by its `transform` tag; pydantic rejects unknown
tags and unknown keys with the YAML path, so a typo fails before any node runs.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VocabConfig(_Strict):
    """Categorical vocabulary fitted on train; rare and unseen values map to OOV."""

    transform: Literal["vocab"]
    column: str | None = None
    min_count: int = Field(1, ge=1)
    max_size: int | None = Field(None, ge=1)


class StandardizeConfig(_Strict):
    """Numeric z-score (optionally of log1p) with train mean/std; missing -> train mean."""

    transform: Literal["standardize"]
    column: str | None = None
    log: bool = False
    clip: float | None = Field(5.0, gt=0)


class QuantileBucketConfig(_Strict):
    """Numeric -> bucket id from train quantiles, so it can be embedded like a category."""

    transform: Literal["quantile_bucket"]
    column: str | None = None
    num_buckets: int = Field(10, ge=2, le=10_000)
    log: bool = False


class HashCrossConfig(_Strict):
    """Hashed cross of several raw columns (stateless, so nothing to fit)."""

    transform: Literal["hash_cross"]
    columns: list[str] = Field(min_length=2)
    num_buckets: int = Field(10_000, ge=2)


class SequenceConfig(_Strict):
    """Last `length` items of an event before each impression, strictly earlier in time."""

    transform: Literal["sequence"]
    of: str = Field(description="Vocabulary field whose values the sequence holds, e.g. item_id.")
    length: int = Field(20, ge=1, le=512)
    event: str = Field("click", description="Interaction column that marks a behaviour.")


FieldConfig = Annotated[
    VocabConfig | StandardizeConfig | QuantileBucketConfig | HashCrossConfig | SequenceConfig,
    Field(discriminator="transform"),
]


class SplitConfig(_Strict):
    """Global temporal split: cut-offs are quantiles of the timestamp column."""

    valid_start: float = Field(0.8, gt=0, lt=1)
    test_start: float = Field(0.9, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> SplitConfig:
        if self.valid_start >= self.test_start:
            raise ValueError(
                f"split.valid_start ({self.valid_start}) must be below "
                f"split.test_start ({self.test_start})"
            )
        return self


class FeaturesConfig(_Strict):
    """The `preprocessing` parameters block."""

    fields: dict[str, FieldConfig] = Field(min_length=1)
    labels: list[str] = Field(["click", "purchase"], min_length=1)
    split: SplitConfig = SplitConfig()

    @model_validator(mode="after")
    def _references_resolve(self) -> FeaturesConfig:
        for name, cfg in self.fields.items():
            if isinstance(cfg, SequenceConfig):
                target = self.fields.get(cfg.of)
                if not isinstance(target, VocabConfig):
                    raise ValueError(
                        f"fields.{name}.of: '{cfg.of}' must name a field with "
                        f"transform 'vocab'; vocab fields are "
                        f"{[n for n, c in self.fields.items() if isinstance(c, VocabConfig)]}"
                    )
        return self
