"""Typed `retrieval` parameters; Kedro validates them before any node runs."""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import Field, model_validator

from recflow.config_checks import MAX_COUNT, StrictModel
from recflow.features.config import SplitConfig
from recflow.models.retrieval import RETRIEVAL_MODELS

_FILE = "parameters_retrieval.yml"


class RetrievalEntry(StrictModel):
    """One retrieval model: a registered name, its params, and (tiger) the semantic-ID table."""

    model: str = Field(description="Registered retrieval model (RETRIEVAL_MODELS): popularity, "
                       "sasrec, two_tower, tiger.")
    params: dict[str, Any] = Field(default_factory=dict)
    tokenizer: str | None = Field(
        None, description="Entry of semantic_ids.tokenizers whose IDs the model decodes (tiger).")

    @model_validator(mode="after")
    def _valid(self) -> RetrievalEntry:
        RETRIEVAL_MODELS.get(self.model).validate_params(self.params, where=f"{_FILE}: params")
        if self.model == "tiger" and not self.tokenizer:
            raise ValueError(f"{_FILE}: a '{self.model}' entry needs `tokenizer:` (an entry of "
                             "semantic_ids.tokenizers, e.g. rq_kmeans)")
        return self


class RetrievalParams(StrictModel):
    """The whole `retrieval` block."""

    event: str = Field("click", description="Interaction column marking a positive event.")
    baseline: str = "popularity"
    ks: list[Annotated[int, Ge(1), Le(MAX_COUNT)]] = Field(
        default_factory=lambda: [5, 10, 20], min_length=1)
    eval_history: int = Field(50, ge=1, le=MAX_COUNT, description="History items kept per user at test time.")
    seed: int = 42
    seeds: list[int] | None = Field(
        None, min_length=1, description="Train every model once per seed and report mean ± std "
        "(sample std) and each run; unset: one run with `seed`.")
    split: SplitConfig = Field(
        default_factory=SplitConfig,
        description="Evaluation protocol: `temporal` (default; the preprocessing test cut-off) "
                    "or `leave_one_out` (per user: last click = target).")
    item_features: list[str] | None = Field(
        None, description="raw_items columns the feature-aware models (two_tower) embed; "
        "default: text/categorical columns with at most n_items / 4 distinct values.")
    models: dict[str, RetrievalEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _baseline_listed(self) -> RetrievalParams:
        if self.baseline not in self.models:
            raise ValueError(f"{_FILE}: baseline '{self.baseline}' is not one of the listed "
                             f"models {sorted(self.models)}")
        if self.split.strategy == "random":
            raise ValueError(f"{_FILE}: retrieval.split.strategy 'random' is for CTR "
                             "comparisons; next-item retrieval takes 'temporal' or "
                             "'leave_one_out'")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"{_FILE}: retrieval.seeds has duplicates: {self.seeds}")
        if 10 not in self.ks:
            raise ValueError(f"{_FILE}: ks must include 10 (the report contract uses recall@10)")
        return self
