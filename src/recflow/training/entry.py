"""One model to train, as YAML declares it: a registered ranking model, its params, trainer overrides.

Shared by the ranking and distillation blocks (`ranking.models.<entry>`,
`distillation.student`, ...); Kedro's parameter validation prefixes errors with the YAML path.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from recflow.registry import MODELS
from recflow.registry.entry import ComponentEntry
from recflow.training.trainer import TrainerConfig


class ModelEntry(ComponentEntry):
    """One model to train: a registered name (`recflow list`), its params, trainer overrides."""

    registry = MODELS
    source = None  # ranking and distillation files alike; Kedro prefixes the YAML path
    renamed_from = "model"

    trainer: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of ranking.trainer for this model."
    )

    @model_validator(mode="after")
    def _known_trainer_keys(self) -> ModelEntry:
        unknown = sorted(set(self.trainer) - set(TrainerConfig.model_fields))
        if unknown:
            raise ValueError(
                f"trainer: unknown key(s) {unknown}; "
                f"allowed keys: {sorted(TrainerConfig.model_fields)}"
            )
        return self

    def trainer_config(self, base: TrainerConfig) -> TrainerConfig:
        return TrainerConfig.model_validate({**base.model_dump(), **self.trainer})
