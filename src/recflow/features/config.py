"""Typed configuration of features: what `conf/*/parameters_preprocessing.yml` may say.

Each field names one transform by its `transform` tag; pydantic rejects unknown
tags and unknown keys with the YAML path, so a typo fails before any node runs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from annotated_types import Le
from pydantic import ConfigDict, Field, model_validator

from recflow.config_types import MAX_BUCKETS, MAX_LAYERS, StrictModel


class _Strict(StrictModel):
    # strict numbers: `length: true` or `num_buckets: 1e12` is an error naming the range
    model_config = ConfigDict(frozen=True)


class VocabConfig(_Strict):
    """Categorical vocabulary fitted on train; rare and unseen values map to OOV."""

    transform: Literal["vocab"]
    column: str | None = None
    min_count: int = Field(1, ge=1)
    max_size: int | None = Field(None, ge=1, le=MAX_BUCKETS)
    missing: Literal["pad", "token"] = Field(
        "pad", description="pad: a missing value takes the padding id 0 (a fixed zero "
        "embedding: 'unknown', no signal); token: an id of its own, learned like any value "
        "(FuxiCTR fills missing with a token), for logs where being missing carries meaning.")


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
    num_buckets: int = Field(10_000, ge=2, le=MAX_BUCKETS)


class SequenceConfig(_Strict):
    """Last `length` items of an event before each impression, strictly earlier in time."""

    transform: Literal["sequence"]
    of: str = Field(description="Vocabulary field whose values the sequence holds, e.g. item_id.")
    length: int = Field(20, ge=1, le=512)
    event: str = Field("click", description="Interaction column that marks a behaviour.")


class SemanticPrefixConfig(_Strict):
    """Item -> semantic-ID prefix tokens c1, c1c2, ..., one categorical field per level.

    Fields are named `<name>_p<level>`; items sharing a prefix share its embedding,
    so rare items borrow from content neighbours. Needs the dataset
    `semantic_ids.<tokenizer>.table` (the semantic_ids pipeline runs first).
    """

    transform: Literal["semantic_prefix"]
    tokenizer: str = Field(description="Entry of semantic_ids.tokenizers whose IDs are used.")
    column: str = Field("item_id", description="Raw item-id column looked up in the table.")
    levels: list[Annotated[int, Le(MAX_LAYERS)]] | None = Field(
        None, min_length=1,
        description="Prefix lengths to emit; default every code level (not the digit).")
    min_count: int = Field(1, ge=1, description="Train impressions a prefix needs, else OOV.")

    @model_validator(mode="after")
    def _levels_valid(self) -> SemanticPrefixConfig:
        if self.levels is not None and (
            min(self.levels) < 1 or len(set(self.levels)) != len(self.levels)
        ):
            raise ValueError(f"levels {self.levels}: prefix lengths must be distinct "
                             f"integers >= 1, e.g. [1, 2, 3]")
        return self


FieldConfig = Annotated[
    VocabConfig | StandardizeConfig | QuantileBucketConfig | HashCrossConfig | SequenceConfig
    | SemanticPrefixConfig,
    Field(discriminator="transform"),
]


SplitStrategy = Literal["temporal", "leave_one_out", "random", "given"]
# The keys each strategy takes; a key of another strategy is a YAML error, not ignored.
SPLIT_KEYS: dict[str, tuple[str, ...]] = {
    "temporal": ("valid_start", "test_start"),
    "leave_one_out": ("min_interactions", "short_users"),
    "random": ("valid_ratio", "test_ratio", "seed"),
    "given": (),
}
#: strategies that order rows in time (they need `dataset.events.time`)
TIMED_STRATEGIES = ("temporal", "leave_one_out")


class SplitConfig(_Strict):
    """How rows are split into train / valid / test (`recflow.features.split.assign_splits`).

    `temporal` (default): global cut-offs at timestamp quantiles, no row sees the future.
    `leave_one_out`: per user by time, last row -> test, second-to-last -> valid.
    `random`: seeded row-level shuffle with exact ratios (CTR comparisons only).
    `given`: the user's own split: `dataset.events.tables` (train / valid / test files)
    or `dataset.events.split_column`.
    """

    strategy: SplitStrategy = "temporal"
    valid_start: float = Field(0.8, gt=0, lt=1, description="temporal: quantile where valid starts.")
    test_start: float = Field(0.9, gt=0, lt=1, description="temporal: quantile where test starts.")
    min_interactions: int = Field(
        3, ge=3, description="leave_one_out: users with fewer rows are `short_users`."
    )
    short_users: Literal["train", "drop"] = Field(
        "train", description="leave_one_out: put short users' rows in train, or drop them."
    )
    valid_ratio: float = Field(0.1, gt=0, lt=1, description="random: share of rows in valid.")
    test_ratio: float = Field(0.1, gt=0, lt=1, description="random: share of rows in test.")
    seed: int = Field(0, description="random: seed of the row shuffle.")

    @model_validator(mode="after")
    def _consistent(self) -> SplitConfig:
        # Another strategy's key left at its default is fine (base YAML + `--params
        # preprocessing.split.strategy=...`); changed, it would silently do nothing.
        own = SPLIT_KEYS[self.strategy]
        foreign = sorted(
            k for k in self.model_fields_set
            if k != "strategy" and k not in own
            and getattr(self, k) != type(self).model_fields[k].default
        )
        if foreign:
            owners = {k: s for s, keys in SPLIT_KEYS.items() for k in keys}
            listed = ", ".join(f"split.{k} (strategy '{owners[k]}')" for k in foreign)
            raise ValueError(
                f"{listed} has no effect with split.strategy '{self.strategy}', which takes "
                f"{', '.join('split.' + k for k in own)}; remove the key or change the strategy"
            )
        if self.strategy == "temporal" and self.valid_start >= self.test_start:
            raise ValueError(
                f"split.valid_start ({self.valid_start}) must be below "
                f"split.test_start ({self.test_start})"
            )
        if self.strategy == "random" and self.valid_ratio + self.test_ratio >= 1:
            raise ValueError(
                f"split.valid_ratio + split.test_ratio ({self.valid_ratio} + {self.test_ratio}) "
                "must be below 1, or train is empty"
            )
        return self

    def parameters(self) -> dict[str, Any]:
        """The strategy and only its own keys: what split records and reports carry."""
        return {"strategy": self.strategy,
                **{k: getattr(self, k) for k in SPLIT_KEYS[self.strategy]}}


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
