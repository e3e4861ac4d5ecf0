"""The serving bundle: one self-contained directory per model, written atomically.

    <bundle>/manifest.json       format, model name, input/raw schema, scores, checksums
    <bundle>/model.onnx          fp32 graph (onnxruntime-optimised), recflow metadata inside
    <bundle>/model.int8.onnx     dynamic int8 variant (only when exported with quantize)
    <bundle>/feature_spec.json   the fitted FeatureSpec (vocabularies, statistics)

Copy the directory into an image with onnxruntime + numpy + pandas and serve it
with `python -m recflow.serving <bundle>`; no Kedro, no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

BUNDLE_FORMAT = "recflow-serving-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
FILES = {"model": "model.onnx", "model_int8": "model.int8.onnx",
         "feature_spec": "feature_spec.json"}


def write_bundle(directory: str | Path, *, model: bytes, feature_spec: dict[str, Any],
                 manifest: dict[str, Any], model_int8: bytes | None = None) -> dict[str, Any]:
    """Write a bundle into a temporary sibling, then swap it in; returns the manifest written.

    A crash at any point leaves either the previous bundle or the new one, never a mix.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    blobs = {"model": model, "feature_spec": json.dumps(feature_spec, indent=1).encode()}
    if model_int8 is not None:
        blobs["model_int8"] = model_int8
    manifest = {
        **manifest,
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "files": {role: FILES[role] if role in blobs else None for role in FILES},
        "sha256": {FILES[role]: hashlib.sha256(blob).hexdigest() for role, blob in blobs.items()},
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for role, blob in blobs.items():
            _write(staging / FILES[role], blob)
        _write(staging / MANIFEST, json.dumps(manifest, indent=2, default=str).encode())
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(directory, old)
        os.replace(staging, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The bundle's manifest, checked to be one (clear errors for a wrong directory)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a recflow serving bundle: no {MANIFEST}")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r} is not {BUNDLE_FORMAT!r}")
    return manifest


def read_file(directory: str | Path, manifest: dict[str, Any], role: str) -> bytes | None:
    """One bundle file's bytes, verified against the manifest checksum (None if absent)."""
    name = manifest["files"].get(role)
    if not name:
        return None
    path = Path(directory) / name
    blob = path.read_bytes()
    want = manifest.get("sha256", {}).get(name)
    if want is not None and hashlib.sha256(blob).hexdigest() != want:
        raise ValueError(f"{path}: checksum does not match the manifest; the bundle was "
                         "modified or partially copied")
    return blob


def _write(path: Path, blob: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(blob)
        handle.flush()
        os.fsync(handle.fileno())
