"""Typed `preprocessing_streaming` parameters (the features themselves: `preprocessing`)."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from recflow.config_types import MAX_BUCKETS, StrictModel


class PreprocessingStreamingParams(StrictModel):
    """Memory bounds of the streaming fit; nothing here changes which features exist."""

    model_config = ConfigDict(frozen=True)

    quantile_max_distinct: int = Field(
        1_000_000, ge=1_000, le=MAX_BUCKETS,
        description="Distinct values a quantile_bucket column may have before its exact "
                    "counts turn into a mantissa-truncating sketch (edges then approximate).",
    )
