"""Kedro datasets for exported models: one ONNX file, and a whole serving bundle.

Both write atomically (a temporary file/directory, then `os.replace`), so an
interrupted save never leaves a truncated model where a server would load it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
from kedro.io import AbstractDataset, DatasetError

from recflow.atomic import write_bytes
from recflow.serving.bundle import read_file, read_manifest, write_bundle

_PROTOBUF_LIMIT = 2**31 - 1


class OnnxModelDataset(AbstractDataset[onnx.ModelProto, onnx.ModelProto]):
    """Reads/writes an `onnx.ModelProto` (metadata_props included) at `filepath`.

    Example ``catalog.yml`` entry::

        "export.{name}.onnx":
          type: recflow.datasets.OnnxModelDataset
          filepath: ${globals:out}/07_model_output/onnx/{name}.onnx
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _load(self) -> onnx.ModelProto:
        if not self._filepath.exists():
            raise DatasetError(f"no ONNX model at {self._filepath}; run "
                               "`kedro run --pipelines=export` first")
        return onnx.load(str(self._filepath))

    def _save(self, data: onnx.ModelProto) -> None:
        if not isinstance(data, onnx.ModelProto):
            raise DatasetError(f"{self._filepath}: expected an onnx.ModelProto, got "
                               f"{type(data).__name__}")
        if data.ByteSize() > _PROTOBUF_LIMIT:
            raise DatasetError(f"{self._filepath}: the model is over 2 GiB, beyond what a "
                               "single ONNX protobuf holds; export it with external data")
        write_bytes(self._filepath, data.SerializeToString())

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class ServingBundleDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A serving bundle directory (see `recflow.serving.bundle`) as a dict.

    Saves ``{"model": ModelProto, "model_int8": ModelProto | None,
    "feature_spec": dict, "manifest": dict}``; loads the same, with the
    manifest as written (files and checksums added).
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _load(self) -> dict[str, Any]:
        try:
            manifest = read_manifest(self._filepath)
        except FileNotFoundError as exc:
            raise DatasetError(f"{exc}; run `kedro run --pipelines=export` first") from None
        int8 = read_file(self._filepath, "model_int8", manifest)
        return {
            "manifest": manifest,
            "feature_spec": json.loads(read_file(self._filepath, "feature_spec", manifest)),
            "model": onnx.load_from_string(read_file(self._filepath, "model", manifest)),
            "model_int8": onnx.load_from_string(int8) if int8 is not None else None,
        }

    def _save(self, data: dict[str, Any]) -> None:
        missing = {"model", "feature_spec", "manifest"} - set(data)
        if missing:
            raise DatasetError(f"serving bundle for {self._filepath} lacks {sorted(missing)}")
        int8 = data.get("model_int8")
        write_bundle(self._filepath, model=data["model"].SerializeToString(),
                     model_int8=int8.SerializeToString() if int8 is not None else None,
                     feature_spec=data["feature_spec"], manifest=data["manifest"],
                     input_example=data["feature_spec"].get("input_example"))

    def _exists(self) -> bool:
        return (self._filepath / "manifest.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
