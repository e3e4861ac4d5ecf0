"""A Kedro dataset for trained models: state dict + config + feature-spec hash.

Saved with `torch.save` into a temporary file and renamed, loaded with
`weights_only=True`: only tensors and plain data (dict, list, str, number, ...)
are read back, so a planted or corrupt file is refused before any of its code
can run. The model is rebuilt through the registry by
`recflow.models.build_from_payload`, which refuses a payload trained on a
different feature spec.

Two payload shapes are accepted:

- one model: ``{"model", "params", "state_dict", "feature_spec_hash", ...}``;
- a bundle of models (the distillation teacher, an ensemble):
  ``{"members": [model payload, ...], "tasks", "feature_spec_hash", ...}``.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError

PAYLOAD_KEYS = frozenset({"model", "params", "state_dict", "feature_spec_hash"})
BUNDLE_KEYS = frozenset({"members", "tasks", "feature_spec_hash"})
_REASON = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", re.DOTALL)


class TorchModelDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """Reads/writes a model payload dict: {model, params, state_dict, feature_spec_hash, ...},
    or a bundle of them: {members: [payload, ...], tasks, feature_spec_hash, ...}."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _load(self) -> dict[str, Any]:
        if not self._filepath.exists():
            raise DatasetError(
                f"no trained model at {self._filepath}; run `kedro run --pipelines=ranking` first"
            )
        try:
            with warnings.catch_warnings():  # "Detected pickle protocol N": noise for a refusal
                warnings.simplefilter("ignore", UserWarning)
                data = torch.load(self._filepath, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - every failure is the same refusal
            raise DatasetError(
                f"{self._filepath}: refused to load, not a recflow model file made of tensors "
                f"and plain data ({_reason(exc)}). Nothing in it was run. Re-create it by "
                "re-running the pipeline that writes it, or restore it from a trusted copy."
            ) from None
        self._check(data, "load")
        return data

    def _save(self, data: dict[str, Any]) -> None:
        self._check(data, "save")
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._filepath.with_name(self._filepath.name + ".tmp")
        try:
            torch.save(data, tmp)
            os.replace(tmp, self._filepath)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _check(self, data: Any, action: str) -> None:
        what = f"model payload {'read from' if action == 'load' else 'for'} {self._filepath}"
        if not isinstance(data, dict):
            raise DatasetError(f"{what} is a {type(data).__name__}, not a dict")
        if "members" not in data:
            _require(data, PAYLOAD_KEYS, what)
            return
        _require(data, BUNDLE_KEYS, what)
        members = data["members"]
        if not isinstance(members, list) or not members:
            raise DatasetError(f"{what}: `members` must be a non-empty list of model payloads")
        for i, member in enumerate(members):
            if not isinstance(member, dict):
                raise DatasetError(f"{what}: members[{i}] is a {type(member).__name__}, "
                                   "not a model payload dict")
            _require(member, PAYLOAD_KEYS, f"{what}: members[{i}]")

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


def _require(data: dict[str, Any], keys: frozenset[str], what: str) -> None:
    missing = keys - set(data)
    if missing:
        raise DatasetError(f"{what} lacks keys {sorted(missing)}")


def _reason(exc: Exception) -> str:
    """A one-line cause, without torch's advice to retry with code execution enabled."""
    text = str(exc)
    match = _REASON.search(text)
    reason = match.group(1).strip() if match else (text.strip().splitlines() or [""])[0]
    if not reason or "weights_only" in reason or len(reason) > 200:
        reason = type(exc).__name__
    return reason
