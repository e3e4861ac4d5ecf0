"""Model <-> plain-data payload, the form models take in the catalog and in ONNX metadata."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import recflow
from recflow.features import FeatureSpec
from recflow.models.base import RankingModel
from recflow.registry import MODELS


def to_payload(model: RankingModel, name: str, params: BaseModel, spec: FeatureSpec,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to rebuild `model`; tensors + plain types only (weights_only-safe)."""
    return {
        "name": name,
        "model": _registered_name(model),
        "params": params.model_dump(mode="json"),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "feature_spec_hash": spec.hash,
        "tasks": list(model.tasks),
        "recflow_version": recflow.__version__,
        **(extra or {}),
    }


def from_payload(payload: dict[str, Any], spec: FeatureSpec) -> RankingModel:
    """Rebuild a trained model; refuses one trained on a different feature spec."""
    if payload["feature_spec_hash"] != spec.hash:
        raise ValueError(
            f"model '{payload.get('name', payload['model'])}' was trained on feature spec "
            f"{payload['feature_spec_hash']}, but the current feature_spec.json is {spec.hash}; "
            "re-train it (kedro run --pipelines=ranking) after changing preprocessing"
        )
    model = MODELS.create(payload["model"], spec, params=payload["params"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def _registered_name(model: RankingModel) -> str:
    for component in MODELS:
        if component.target is type(model):
            return component.name
    raise ValueError(f"{type(model).__name__} is not a registered model")
