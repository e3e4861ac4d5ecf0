"""One model to train, as YAML declares it: a registered ranking model, its params, trainer overrides.

Shared by the ranking and distillation blocks (`ranking.models.<name>`,
`distillation.teacher`, ...); Kedro's parameter validation prefixes errors with the YAML path.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from recflow.config_types import StrictModel
from recflow.registry import MODELS
from recflow.training.trainer import TrainerConfig


class ModelEntry(StrictModel):
    """One model to train: a registered name, its params, optional trainer overrides."""

    model: str = Field(description="Registered model name, e.g. deepfm (see MODELS.list()).")
    params: dict[str, Any] = Field(default_factory=dict)
    trainer: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of ranking.trainer for this model."
    )

    @model_validator(mode="after")
    def _known_and_valid(self) -> ModelEntry:
        component = MODELS.get(self.model)
        component.validate_params(self.params, where="params")
        unknown = sorted(set(self.trainer) - set(TrainerConfig.model_fields))
        if unknown:
            raise ValueError(
                f"trainer: unknown key(s) {unknown}; "
                f"allowed keys: {sorted(TrainerConfig.model_fields)}"
            )
        return self

    def typed_params(self) -> BaseModel:
        return MODELS.get(self.model).validate_params(self.params)

    def trainer_config(self, base: TrainerConfig) -> TrainerConfig:
        return TrainerConfig.model_validate({**base.model_dump(), **self.trainer})
