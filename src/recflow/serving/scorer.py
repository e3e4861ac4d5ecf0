"""Raw records in, scores out: the fitted FeatureSpec transforms + onnxruntime, nothing else.

The scorer runs the very `FeatureSpec.transform_frame` that preprocessing ran
(no re-implementation, so no train/serve skew), feeds the graph the inputs its
metadata declares, and returns `predict` probabilities. It imports neither torch
nor Kedro, so a production image needs numpy, pandas, pydantic and onnxruntime.

    scorer = Scorer.from_bundle("data/07_model_output/serving/deepfm")
    scorer.score([{"user_id": 7, "item_id": 12, ..., "hist_item_id": [3, 9]}])
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Mapping
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

from recflow.features import FeatureSpec
from recflow.features.transforms import OOV, PAD
from recflow.serving.bundle import read_file, read_manifest
from recflow.serving.schema import OUTPUT_NAME, feeds_from_frame, raw_schema, serving_fields

_TYPE_HELP = {
    "numeric": "a number or null",
    "categorical": "a string or integer id, or null",
    "sequence": "a list of string or integer ids (oldest first), or null",
}


class RecordError(ValueError):
    """A malformed request: a missing key or a value of the wrong type, named precisely."""

    def __init__(self, message: str, field: str | None = None, record: int | None = None) -> None:
        super().__init__(message)
        self.field, self.record = field, record


class Scorer:
    """Scores raw records with an exported recflow model and its fitted feature spec.

    Args:
        model: path to the `.onnx` file (or its bytes) written by the export pipeline.
        spec: `feature_spec.json` as a path, its parsed dict, or a FeatureSpec.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
    """

    def __init__(self, model: str | Path | bytes, spec: str | Path | Mapping[str, Any] | FeatureSpec,
                 *, threads: int | None = None, manifest: Mapping[str, Any] | None = None) -> None:
        self.aliases = _aliases(spec)  # canonical column -> the client's raw key
        self.spec = _load_spec(spec)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.manifest = dict(manifest or {})
        required = ("input_schema", "score_names", "feature_spec_hash")
        absent = [k for k in required if k not in self.metadata]
        if absent:
            raise ValueError(f"{model!s:.200}: ONNX metadata lacks {absent}; "
                             "export it with recflow's export pipeline")
        if self.metadata["feature_spec_hash"] != self.spec.hash:
            raise ValueError(
                f"model '{self.name}' was exported for feature spec "
                f"{self.metadata['feature_spec_hash']}, but the given feature_spec.json is "
                f"{self.spec.hash}; serve the spec from the same bundle (train/serve skew guard)")
        self.input_schema: list[dict[str, Any]] = json.loads(self.metadata["input_schema"])
        self.score_names: list[str] = json.loads(self.metadata["score_names"])
        self.input_names = [e["name"] for e in self.input_schema]
        graph_inputs = [i.name for i in self.session.get_inputs()]
        if sorted(graph_inputs) != sorted(self.input_names):
            raise ValueError(f"graph inputs {graph_inputs} do not match the metadata's input "
                             f"schema {self.input_names}")
        self._spec = FeatureSpec(fields=[self.spec[n] for n in serving_fields(self.spec,
                                                                              self.input_names)],
                                 labels=[])
        self.raw_schema = {self.aliases.get(k, k): v
                           for k, v in raw_schema(self.spec, self.input_names).items()}

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_bundle(cls, directory: str | Path, *, int8: bool = False,
                    threads: int | None = None) -> Scorer:
        """Load a serving bundle directory (manifest.json + model + feature spec)."""
        manifest = read_manifest(directory)
        role = "model_int8" if int8 else "model"
        model = read_file(directory, manifest, role)
        if model is None:
            raise FileNotFoundError(f"{directory}: the bundle has no int8 model (export with "
                                    "`export.quantize: true`)")
        spec = json.loads(read_file(directory, manifest, "feature_spec"))
        return cls(model, spec, threads=threads, manifest=manifest)

    @property
    def name(self) -> str:
        return self.metadata.get("model_name", "model")

    def describe(self) -> dict[str, Any]:
        """What a client needs to call the model: fields, their types, outputs, provenance."""
        return {
            "model": self.name,
            "registered_model": self.metadata.get("registered_model"),
            "recflow_version": self.metadata.get("recflow_version"),
            "feature_spec_hash": self.metadata["feature_spec_hash"],
            "precision": self.metadata.get("precision", "fp32"),
            "opset": self.metadata.get("opset"),
            "score_names": self.score_names,
            "fields": {k: _TYPE_HELP[v] for k, v in self.raw_schema.items()},
            "test_metrics": json.loads(self.metadata.get("test_metrics", "{}")),
        }

    # ---- scoring --------------------------------------------------------------------------
    def transform(self, records: Any) -> pd.DataFrame:
        """Validated raw records -> the model-ready columns preprocessing would produce."""
        return self._transform(self._validated_frame(records))

    def _transform(self, raw: pd.DataFrame) -> pd.DataFrame:
        if self.aliases:  # the dataset's own column names -> the spec's canonical ones
            raw = raw.rename(columns={v: k for k, v in self.aliases.items()})
        fill = {c: pd.Series([None] * len(raw), index=raw.index, dtype=object)
                for f in self._spec.fields for c in f.columns if c not in raw}
        # vocabulary owners of sequences the model reads without their own column
        return self._spec.transform_frame(raw.assign(**fill) if fill else raw)

    def score(self, records: Any) -> np.ndarray:
        """Probabilities (n, len(score_names)), float32; column 0 is pCTR."""
        return self._run(self.transform(records))

    def score_frame(self, records: Any) -> pd.DataFrame:
        """Scores as columns `score_<name>` (the layout of the offline test scores)."""
        scores = self.score(records)
        return pd.DataFrame({f"score_{n}": scores[:, i] for i, n in enumerate(self.score_names)})

    def score_with_stats(self, records: Any) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
        """Scores plus, per field, how many values were unseen (-> OOV) or missing (-> default)."""
        raw = self._validated_frame(records)
        frame = self._transform(raw)
        return self._run(frame), self._stats(raw, frame)

    def _run(self, frame: pd.DataFrame) -> np.ndarray:
        if not len(frame):
            return np.zeros((0, len(self.score_names)), dtype=np.float32)
        (scores,) = self.session.run([OUTPUT_NAME], feeds_from_frame(frame, self.input_schema))
        return scores

    def _stats(self, raw: pd.DataFrame, frame: pd.DataFrame) -> dict[str, dict[str, int]]:
        stats = {}
        for e in self.input_schema:
            field = self.spec[e["name"]]
            values = frame[e["columns"]].to_numpy()
            if e["kind"] == "numeric":
                column = pd.to_numeric(raw[field.columns[0]], errors="coerce")
                missing = int((~np.isfinite(column.to_numpy(np.float64, na_value=np.nan))).sum())
                stats[e["name"]] = {"missing": missing}
            elif field.kind == "sequence":  # padding slots are not missing values
                stats[e["name"]] = {"oov": int((values == OOV).sum())}
            elif field.transform == "vocab":
                stats[e["name"]] = {"oov": int((values == OOV).sum()),
                                    "missing": int((values == PAD).sum())}
            else:
                stats[e["name"]] = {"missing": int((values == PAD).sum())}
        return stats

    # ---- validation ------------------------------------------------------------------------
    def _validated_frame(self, records: Any) -> pd.DataFrame:
        columns = list(self.raw_schema)
        if isinstance(records, pd.DataFrame):
            missing = [c for c in columns if c not in records.columns]
            if missing:
                raise RecordError(f"missing field(s) {missing}; the model needs "
                                  f"{columns}", field=missing[0])
            frame = records[columns].reset_index(drop=True)
        else:
            if isinstance(records, Mapping):
                records = [records]
            if not isinstance(records, Iterable) or isinstance(records, str | bytes):
                raise RecordError("records must be a list of objects (field -> value) "
                                  f"or a DataFrame, got {type(records).__name__}")
            records = list(records)
            for i, record in enumerate(records):
                if not isinstance(record, Mapping):
                    raise RecordError(f"record {i} must be an object (field -> value), got "
                                      f"{type(record).__name__}", record=i)
                for column in columns:
                    if column not in record:
                        raise RecordError(f"record {i}: missing field '{column}' (the model "
                                          f"needs {columns})", field=column, record=i)
            frame = pd.DataFrame({c: pd.Series([r[c] for r in records], dtype=object)
                                  for c in columns}, index=pd.RangeIndex(len(records)))
        for column, kind in self.raw_schema.items():
            _check_column(frame[column], column, kind)
        return frame


# ---- helpers ------------------------------------------------------------------------------
def _load_spec(spec: str | Path | Mapping[str, Any] | FeatureSpec) -> FeatureSpec:
    if isinstance(spec, FeatureSpec):
        return spec
    if isinstance(spec, str | Path):
        spec = json.loads(Path(spec).read_text())
    return FeatureSpec.from_dict(dict(spec))


def _aliases(spec: str | Path | Mapping[str, Any] | FeatureSpec) -> dict[str, str]:
    """`feature_spec.json`'s `raw_names` (canonical -> the user's column), if it has them."""
    if isinstance(spec, str | Path):
        spec = json.loads(Path(spec).read_text())
    names = spec.get("raw_names", {}) if isinstance(spec, Mapping) else {}
    return {k: v for k, v in names.items() if k != v}


def _is_null(value: Any) -> bool:
    return value is None or value is pd.NA or (
        isinstance(value, float | np.floating) and np.isnan(value))


def _id_type(t: type) -> bool:
    return issubclass(t, str | numbers.Integral | float | np.floating) and not issubclass(
        t, bool | np.bool_)


def _number_type(t: type) -> bool:
    return issubclass(t, numbers.Real) and not issubclass(t, bool | np.bool_)


_NULL_TYPES = (type(None), type(pd.NA))
_CHECKS = {"numeric": _number_type, "categorical": _id_type,
           "sequence": lambda t: issubclass(t, list | tuple | np.ndarray)}


def _all_types_ok(values: Iterable[Any], ok: Any) -> bool:
    """Fast path: one check per distinct type instead of per value."""
    return all(t in _NULL_TYPES or ok(t) for t in set(map(type, values)))


def _check_column(values: pd.Series, column: str, kind: str) -> None:
    """Raise RecordError naming the field and record of the first wrongly typed value."""
    dtype = values.dtype
    if kind == "numeric" and pd.api.types.is_numeric_dtype(dtype) \
            and not pd.api.types.is_bool_dtype(dtype):
        return
    if kind == "categorical" and (isinstance(dtype, pd.StringDtype)
                                  or pd.api.types.is_integer_dtype(dtype)
                                  or pd.api.types.is_float_dtype(dtype)):
        return
    items = values.to_numpy(dtype=object)
    ok = _CHECKS[kind]
    if _all_types_ok(items, ok) and (kind != "sequence" or _all_types_ok(
            chain.from_iterable(v for v in items if isinstance(v, list | tuple | np.ndarray)),
            _id_type)):
        return
    for i, value in enumerate(items):  # slow path: find and name the first offender
        if _is_null(value):
            continue
        if not ok(type(value)):
            raise _type_error(i, column, kind, value)
        if kind == "sequence":
            for item in value:
                if not (_is_null(item) or _id_type(type(item))):
                    raise RecordError(
                        f"record {i}: field '{column}' must be {_TYPE_HELP[kind]}; it holds "
                        f"{type(item).__name__} {_short(item)}", field=column, record=i)


def _type_error(i: int, column: str, kind: str, value: Any) -> RecordError:
    return RecordError(f"record {i}: field '{column}' must be {_TYPE_HELP[kind]}, got "
                       f"{type(value).__name__} {_short(value)}", field=column, record=i)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
