"""A Kedro dataset for trained models: state dict + config + feature-spec hash.

Saved with `torch.save` into a temporary file and renamed, loaded with
`weights_only=True` (no pickled code runs). The payload is plain data; the
model is rebuilt through the registry by `recflow.models.build_from_payload`,
which refuses a payload trained on a different feature spec.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError


class TorchModelDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """Reads/writes a model payload dict: {model, params, state_dict, feature_spec_hash, ...}."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _load(self) -> dict[str, Any]:
        if not self._filepath.exists():
            raise DatasetError(
                f"no trained model at {self._filepath}; run `kedro run --pipeline=ranking` first"
            )
        return torch.load(self._filepath, map_location="cpu", weights_only=True)

    def _save(self, data: dict[str, Any]) -> None:
        missing = {"model", "params", "state_dict", "feature_spec_hash"} - set(data)
        if missing:
            raise DatasetError(f"model payload for {self._filepath} lacks keys {sorted(missing)}")
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._filepath.with_name(self._filepath.name + ".tmp")
        torch.save(data, tmp)
        os.replace(tmp, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
