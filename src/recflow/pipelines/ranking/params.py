"""Typed `ranking` parameters; Kedro validates them before any node runs."""

from __future__ import annotations

from pydantic import Field, model_validator

from recflow.config_types import StrictModel
from recflow.training.entry import ModelEntry
from recflow.training.trainer import TrainerConfig

_FILE = "parameters_ranking.yml"


class RankingParams(StrictModel):
    """The whole `ranking` block of parameters_ranking.yml."""

    trainer: TrainerConfig = TrainerConfig()
    baseline: str = Field("lr", description="Entry every model's AUC lift is measured against.")
    models: dict[str, ModelEntry] = Field(min_length=1)
    seeds: list[int] | None = Field(
        None, min_length=1,
        description="Train every model once per seed; the report gives each run and "
                    "mean ± std (sample std). The first seed's model is the one exported. "
                    "Default: the trainer seed, once.",
    )
    rare_item_impressions: int = Field(
        10, ge=1, description="auc_rare_items covers test rows whose item has fewer train "
                              "impressions than this.")

    @model_validator(mode="after")
    def _seeds_distinct(self) -> RankingParams:
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"{_FILE}: seeds {self.seeds} repeat a seed; each run must differ")
        return self

    @model_validator(mode="after")
    def _baseline_listed(self) -> RankingParams:
        if self.baseline not in self.models:
            raise ValueError(
                f"{_FILE}: baseline '{self.baseline}' is not one of the listed models "
                f"{sorted(self.models)}"
            )
        return self
