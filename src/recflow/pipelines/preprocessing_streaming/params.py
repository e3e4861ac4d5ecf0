"""Typed `preprocessing_streaming` parameters (the features themselves: `preprocessing`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PreprocessingStreamingParams(BaseModel):
    """Memory bounds of the streaming fit; nothing here changes which features exist."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantile_max_distinct: int = Field(
        1_000_000, ge=1_000,
        description="Distinct values a quantile_bucket column may have before its exact "
                    "counts turn into a mantissa-truncating sketch (edges then approximate).",
    )
