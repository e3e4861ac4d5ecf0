"""Typed `retrieval` parameters; Kedro validates them before any node runs."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from annotated_types import Ge, Le
from pydantic import Field, field_validator, model_validator

from recflow.config_types import MAX_COUNT, MAX_EPOCHS, StrictModel
from recflow.features.config import SplitConfig
from recflow.models.retrieval import RETRIEVAL_MODELS
from recflow.registry.entry import ComponentEntry

_FILE = "parameters_retrieval.yml"


class RetrievalEntry(ComponentEntry):
    """One retrieval model: a registered name (popularity, sasrec, two_tower, tiger, plugins),
    its params, and (tiger) the semantic-ID entry it decodes."""

    registry = RETRIEVAL_MODELS
    source = _FILE
    renamed_from = "model"

    tokenizer: str | None = Field(
        None, description="Entry of semantic_ids.tokenizers whose IDs the model decodes (tiger).")
    exclude_seen: bool | None = Field(
        None, description="Mask each user's seen items when ranking (validation and test); "
        "None: the run's `retrieval.exclude_seen`.")

    @model_validator(mode="after")
    def _tiger_names_its_ids(self) -> RetrievalEntry:
        if self.name == "tiger" and not self.tokenizer:
            raise ValueError(f"{_FILE}: a '{self.name}' entry needs `tokenizer:` (an entry of "
                             "semantic_ids.tokenizers, e.g. rq_kmeans)")
        return self


_MONITOR = re.compile(r"(recall|ndcg)@(\d+)")


class RetrievalTraining(StrictModel):
    """`retrieval.training`: the training core's settings shared by every retrieval model
    (`recflow.training.core.FitConfig`; each model's `epochs` stay in its params)."""

    monitor: str = Field("ndcg@10", description="Validation metric picking the best epoch "
                         "and driving early stopping: recall@K or ndcg@K, K one of `ks`.")
    patience: int | None = Field(
        None, le=MAX_EPOCHS, description="Epochs without a gain of the monitored metric "
        "before stopping (the best epoch's weights are restored); null: every epoch.")
    smoothing: int = Field(1, ge=1, le=20, description="Compare the mean of the monitored "
                           "metric over the last N epochs; 1: the raw value.")
    min_delta: float = Field(0.0, ge=0, description="A gain smaller than this is no gain.")
    progress: bool = Field(True, description="tqdm bar per epoch (off when not a terminal).")
    checkpoint_dir: str | None = Field(
        None, description="Per-epoch checkpoints under <dir>/<entry>/<fingerprint hash>; "
        "null: none.")
    resume: bool = Field(True, description="Continue from the latest checkpoint (refused if "
                         "it was written for another entry, protocol, seed or data).")

    @field_validator("patience")
    @classmethod
    def _patience(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"{_FILE}: retrieval.training.patience {value}: must be >= 1 "
                             "(epochs without a gain before stopping) or null (no early "
                             "stopping)")
        return value


class RetrievalParams(StrictModel):
    """The whole `retrieval` block."""

    event: str = Field("click", description="Interaction column marking a positive event "
                       "(rows > 0 count; >= `event_min` when set), or `all`: every row.")
    event_min: float | None = Field(
        None, description="Rows whose `event` column is >= this count (e.g. a rating "
        "threshold); null: > 0.")
    tie_break: Literal["file_order", "item_id", "random"] = Field(
        "file_order", description="Order of a user's events with equal timestamps: the "
        "log's row order, item id, or a shuffle seeded by `seed`.")
    holdout_valid: bool = Field(
        True, description="Hold out validation targets (leave_one_out: each user's "
        "second-to-last event; temporal: [train_end, valid_end)) for early stopping, out "
        "of training; false: they are training history and there is no validation.")
    exclude_seen: bool = Field(
        False, description="Mask each user's seen items when ranking (RecBole's rule for "
        "general models); per model: `models.<name>.exclude_seen`.")
    training: RetrievalTraining = Field(default_factory=RetrievalTraining)
    baseline: str = "popularity"
    ks: list[Annotated[int, Ge(1), Le(MAX_COUNT)]] = Field(
        default_factory=lambda: [5, 10, 20], min_length=1)
    eval_history: int = Field(50, ge=1, le=MAX_COUNT, description="History items (the latest) "
                              "given to the models per user at validation and test time.")
    seed: int = 42
    seeds: list[int] | None = Field(
        None, min_length=1, description="Train every model once per seed and report mean ± std "
        "(sample std) and each run; unset: one run with `seed`.")
    split: SplitConfig = Field(
        default_factory=SplitConfig,
        description="Evaluation protocol: `temporal` (default; the preprocessing cut-offs) "
                    "or `leave_one_out` (per user: last event = test, second-to-last = "
                    "validation).")
    item_features: list[str] | None = Field(
        None, description="raw_items columns the feature-aware models (two_tower) embed; "
        "default: text/categorical columns with at most n_items / 4 distinct values.")
    models: dict[str, RetrievalEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _baseline_listed(self) -> RetrievalParams:
        if self.baseline not in self.models:
            raise ValueError(f"{_FILE}: baseline '{self.baseline}' is not one of the listed "
                             f"models {sorted(self.models)}")
        if self.split.strategy not in ("temporal", "leave_one_out"):
            why = ("is for CTR comparisons" if self.split.strategy == "random"
                   else "splits the impression log, not the events")
            raise ValueError(f"{_FILE}: retrieval.split.strategy '{self.split.strategy}' {why}; "
                             "next-item retrieval takes 'temporal' or 'leave_one_out'")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"{_FILE}: retrieval.seeds has duplicates: {self.seeds}")
        if 10 not in self.ks:
            raise ValueError(f"{_FILE}: ks must include 10 (the report contract uses recall@10)")
        if self.event == "all" and self.event_min is not None:
            raise ValueError(f"{_FILE}: retrieval.event_min ({self.event_min}) needs a column "
                             "in retrieval.event, not `all`")
        monitor = _MONITOR.fullmatch(self.training.monitor)
        if monitor is None or int(monitor.group(2)) not in self.ks:
            raise ValueError(f"{_FILE}: retrieval.training.monitor '{self.training.monitor}' "
                             "is a validation metric not computed: validation computes "
                             f"recall@K and ndcg@K for K in ks {self.ks}")
        if self.training.patience is not None and not self.holdout_valid:
            raise ValueError(f"{_FILE}: retrieval.training.patience needs held-out validation "
                             "(retrieval.holdout_valid: true), or set it to null")
        for name, entry in self.models.items():
            masked = self.exclude_seen if entry.exclude_seen is None else entry.exclude_seen
            if masked and not getattr(RETRIEVAL_MODELS.get(entry.name).target,
                                      "can_exclude_seen", True):
                where = (f"retrieval.models.{name}.exclude_seen" if entry.exclude_seen
                         else f"retrieval.exclude_seen (inherited by retrieval.models.{name}"
                              ".exclude_seen)")
                raise ValueError(f"{_FILE}: {where} is true, but model '{entry.name}' cannot "
                                 "exclude seen items; set retrieval.models."
                                 f"{name}.exclude_seen: false")
        return self
