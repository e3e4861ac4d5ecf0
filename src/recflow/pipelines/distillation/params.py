"""Typed `distillation` parameters (conf/*/parameters_distillation.yml), validated before any node runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from recflow.config_types import BatchSize, StrictModel
from recflow.registry.entry import refuse_renamed_key
from recflow.training.distillation import LossEntry
from recflow.training.entry import ModelEntry
from recflow.training.trainer import TrainerConfig

_FILE = "parameters_distillation.yml"


class TeacherMember(StrictModel):
    """A teacher: a registered model trained here (`name`/`params`/`trainer`), or a saved
    payload (`checkpoint`: a .pt written by TorchModelDataset, e.g. data/06_models/ranking/din.pt)."""

    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    trainer: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed_key(cls, raw: Any) -> Any:
        refuse_renamed_key(raw, "model", "model", _FILE)
        return raw

    @model_validator(mode="after")
    def _one_source(self) -> TeacherMember:
        if (self.name is None) == (self.checkpoint is None):
            raise ValueError(f"{_FILE}: teacher.members: give either `name` (a registered "
                             "model, trained here) or `checkpoint` (a saved payload), not both "
                             "or neither")
        if self.name is not None:
            self.entry()  # validates the model name, params and trainer keys
        return self

    def entry(self) -> ModelEntry:
        return ModelEntry(name=self.name, params=self.params, trainer=self.trainer)


class TeacherParams(StrictModel):
    members: list[TeacherMember] = Field(
        min_length=1, description="One teacher, or several whose logits are averaged (an ensemble).")


class DistillationParams(StrictModel):
    """The whole `distillation` block."""

    mode: Literal["offline", "online"] = Field(
        "offline", description="offline: cache teacher logits once, then train the student; "
                               "online: train teacher(s) and student together, teacher detached.")
    trainer: TrainerConfig = TrainerConfig()
    teacher: TeacherParams
    student: ModelEntry
    baseline: ModelEntry | None = Field(
        None, description="Reference model (LR) for the 'AUC lift retained' figure; null: none.")
    losses: list[LossEntry] = Field(
        default_factory=lambda: [LossEntry(name="kd_bce", params={"alpha": 0.5, "temperature": 2.0})],
        min_length=1)
    latency_batches: list[BatchSize] = Field(default_factory=lambda: [1, 256], min_length=1)


def pipeline_kwargs(parameters: dict[str, Any]) -> dict[str, Any]:
    """`create_pipeline` arguments from the active env's parameters (for pipeline_registry.py)."""
    raw = parameters.get("distillation") or {}
    mode = raw.get("mode", "offline")
    if mode not in ("offline", "online"):
        raise ValueError(f"{_FILE}: distillation.mode must be 'offline' or 'online', got {mode!r}")
    return {"mode": mode}


def validate(raw: dict[str, Any]) -> DistillationParams:
    try:
        return DistillationParams.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"distillation.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"{_FILE}: {problems}") from None
