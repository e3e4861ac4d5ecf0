"""The serving bundle: one self-contained directory per model, written atomically.

    <bundle>/manifest.json       format, model name, input/raw schema, scores, checksums
    <bundle>/model.onnx          fp32 graph (onnxruntime-optimised), recflow metadata inside
    <bundle>/model.int8.onnx     dynamic int8 variant (only when exported with quantize)
    <bundle>/feature_spec.json   the fitted FeatureSpec (vocabularies, statistics)
    <bundle>/input_example.json  a few raw test records (as MLflow models carry an input
                                 example); their export-time scores are in the manifest

Copy the directory into an image with onnxruntime + numpy + pandas and serve it
with `python -m recflow.serving <bundle>`; no Kedro, no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recflow.atomic import write_bytes

BUNDLE_FORMAT = "recflow-serving-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
FILES = {"model": "model.onnx", "model_int8": "model.int8.onnx",
         "feature_spec": "feature_spec.json", "input_example": "input_example.json"}


class BundleError(ValueError):
    """A serving bundle that cannot be trusted or read; the message names the file."""


def write_bundle(directory: str | Path, *, model: bytes, feature_spec: dict[str, Any],
                 manifest: dict[str, Any], model_int8: bytes | None = None,
                 input_example: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write a bundle into a temporary sibling, then swap it in; returns the manifest written.

    A crash at any point leaves either the previous bundle or the new one, never a mix.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    blobs = {"model": model, "feature_spec": json.dumps(feature_spec, indent=1).encode()}
    if model_int8 is not None:
        blobs["model_int8"] = model_int8
    if input_example:
        blobs["input_example"] = json.dumps(input_example, indent=1).encode()
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
            write_bytes(staging / FILES[role], blob)
        write_bytes(staging / MANIFEST, json.dumps(manifest, indent=2, default=str).encode())
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


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its checked manifest; files are read through `read_file`."""

    directory: Path
    manifest: dict[str, Any]
    verified: bool

    def has(self, role: str) -> bool:
        return bool(self.manifest["files"].get(role))

    def path(self, role: str) -> Path:
        return self.directory / (self.manifest["files"].get(role) or FILES[role])


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The bundle's manifest, checked to be one (clear errors for a wrong directory)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a recflow serving bundle: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc}); the bundle is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BundleError(f"{path}: format {found!r} is not {BUNDLE_FORMAT!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files.get("model") or not files.get("feature_spec"):
        raise BundleError(f"{path}: `files` must name at least the model and the feature_spec, "
                          f"got {files!r:.200}")
    return manifest


def read_bundle(directory: str | Path, *, allow_unverified: bool = False) -> Bundle:
    """Open a bundle for serving: checksums are required unless `allow_unverified`."""
    manifest = read_manifest(directory)
    sums = manifest.get("sha256")
    unlisted = [name for name in manifest["files"].values()
                if name and not (isinstance(sums, dict) and isinstance(sums.get(name), str))]
    if unlisted and not allow_unverified:
        raise BundleError(f"{Path(directory) / MANIFEST}: no SHA-256 checksum for {unlisted}; "
                          "refusing an unverifiable bundle (re-export it, or pass "
                          "--allow-unverified to serve it anyway)")
    return Bundle(Path(directory), manifest, verified=not unlisted)


def read_file(bundle: Bundle | str | Path, role: str,
              manifest: dict[str, Any] | None = None) -> bytes | None:
    """One bundle file's bytes, verified against the manifest checksum (None if absent).

    `bundle`: an opened Bundle, or a directory plus its `manifest` (checked when it
    lists a checksum for the file).
    """
    if not isinstance(bundle, Bundle):
        bundle = Bundle(Path(bundle), manifest or read_manifest(bundle), verified=False)
    if not bundle.has(role):
        return None
    path = bundle.path(role)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the bundle's {role.replace('_', ' ')} "
                          f"({exc.strerror or exc})") from None
    want = (bundle.manifest.get("sha256") or {}).get(path.name)
    if want is not None and hashlib.sha256(blob).hexdigest() != want:
        raise BundleError(f"{path}: SHA-256 does not match the manifest; the bundle was "
                          "modified or partially copied")
    return blob
