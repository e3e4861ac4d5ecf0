"""Raw records in, scores out: the fitted FeatureSpec transforms + onnxruntime, nothing else.

Requests are checked against the training contract (`validate`), then turned into the
graph's feeds by one of two routes over the same fitted state: a few records through
the compiled per-value lookups (`compiled`, ~0.1 ms), larger batches and DataFrames
through the very `FeatureSpec.transform_frame` preprocessing ran (vectorised). Tests pin
the two routes equal on a whole test split, and both equal to the offline scores. It
imports neither torch nor Kedro, so a production image needs numpy, pandas, pydantic and
onnxruntime.

    scorer = Scorer.from_bundle("data/07_model_output/serving/deepfm")
    scorer.score([{"user_id": 7, "item_id": 12, ..., "hist_item_id": [3, 9]}])
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

from recflow.features import FeatureSpec
from recflow.features.transforms import OOV, PAD
from recflow.serving.bundle import BundleError, read_bundle, read_file
from recflow.serving.compiled import CompiledInputs
from recflow.serving.schema import OUTPUT_NAME, feeds_from_frame, raw_schema, serving_fields
from recflow.serving.validate import (
    TYPE_HELP,
    RecordError,
    check_column,
    frame_columns,
    numeric_values,
    record_columns,
)

__all__ = ["RecordError", "Scorer"]


@dataclass
class _Checked:
    """A validated request: its columns (lists, or a DataFrame) and numeric keys as float64."""

    columns: dict[str, list[Any]] | pd.DataFrame
    numbers: dict[str, np.ndarray]

    def __len__(self) -> int:
        if isinstance(self.columns, pd.DataFrame):
            return len(self.columns)
        return len(next(iter(self.columns.values()), []))


class Scorer:
    """Scores raw records with an exported recflow model and its fitted feature spec.

    Args:
        model: path to the `.onnx` file (or its bytes) written by the export pipeline.
        spec: `feature_spec.json` as a path, its parsed dict, or a FeatureSpec.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
        manifest: the bundle's manifest (provenance and the input example's scores).
        input_example: a few raw records the model was exported with (`check` scores them).
    """

    #: lists of at most this many records take the compiled per-value route; larger lists
    #: and DataFrames the vectorised one (measured: the compiled route is faster up to
    #: about 1-2k records on the embedded DIN, docs/serving.md)
    compiled_max_batch: int = 1024

    def __init__(self, model: str | Path | bytes, spec: str | Path | Mapping[str, Any] | FeatureSpec,
                 *, threads: int | None = None, manifest: Mapping[str, Any] | None = None,
                 input_example: list[dict[str, Any]] | None = None) -> None:
        if isinstance(spec, str | Path):  # read the file once: fields and serving contract
            spec = json.loads(Path(spec).read_text())
        contract = dict(spec) if isinstance(spec, Mapping) else {}  # raw_names, raw_checks
        self.aliases = {k: v for k, v in contract.get("raw_names", {}).items() if k != v}
        self.spec = spec if isinstance(spec, FeatureSpec) else FeatureSpec.from_dict(dict(spec))
        self.session = _session(model, threads)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.manifest = dict(manifest or {})
        self.input_example = list(input_example or [])
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
        checks = contract.get("raw_checks", {})
        self.bounds = {c: checks[c] for c, kind in self.raw_schema.items()
                       if kind == "numeric" and checks.get(c)}
        self._compiled = CompiledInputs(self._spec, self.input_schema, self.aliases)
        #: id inputs and what their stats count: sequences only unseen ids (padding slots are
        #: not missing values), vocabularies both, other id transforms only missing values
        self._id_inputs = [
            (e["name"], "oov" if e["kind"] == "sequence" else
             "both" if self.spec[e["name"]].transform == "vocab" else "missing")
            for e in self.input_schema if e["kind"] != "numeric"]
        #: numeric input -> the raw key its values come from
        self._numeric_inputs = {
            e["name"]: self.aliases.get(c, c) for e in self.input_schema if e["kind"] == "numeric"
            for c in self.spec[e["name"]].columns[:1]}

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_bundle(cls, directory: str | Path, *, int8: bool = False,
                    threads: int | None = None, allow_unverified: bool = False) -> Scorer:
        """Load a serving bundle directory (manifest.json + model + feature spec + example).

        Every file is checked against the manifest's SHA-256; a bundle without checksums
        is refused unless `allow_unverified`. Errors name the file and what is wrong.
        """
        bundle = read_bundle(directory, allow_unverified=allow_unverified)
        role = "model_int8" if int8 else "model"
        model = read_file(bundle, role)
        if model is None:
            raise FileNotFoundError(f"{directory}: the bundle has no int8 model (export with "
                                    "`export.quantize: true`)")
        spec = _json_file(bundle, "feature_spec")
        example = _json_file(bundle, "input_example") if bundle.has("input_example") else None
        try:
            return cls(model, spec, threads=threads, manifest=bundle.manifest,
                       input_example=example)
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{bundle.path(role)} with {bundle.path('feature_spec')}: "
                              f"{exc}") from exc

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
            "fields": {k: TYPE_HELP[v] for k, v in self.raw_schema.items()},
            "bounds": self.bounds,
            "test_metrics": json.loads(self.metadata.get("test_metrics", "{}")),
        }

    def check(self) -> dict[str, Any]:
        """Score the bundle's input example; raise ValueError unless it matches the export.

        `recflow serve --check` and the service's readiness call this: a bundle that
        loads but scores differently from when it was exported (another onnxruntime,
        an edited spec) is caught before it takes traffic.
        """
        if not self.input_example:
            raise ValueError(f"model '{self.name}': the bundle has no input example to check "
                             "(re-export it; streaming/Spark preprocessing writes none)")
        scores = self.score(self.input_example)
        want = self.manifest.get("input_example_scores")
        if want is not None:
            gap = float(np.abs(scores - np.asarray(want, dtype=np.float32)).max())
            if not gap <= 1e-5:
                raise ValueError(f"model '{self.name}': the input example scores differ from "
                                 f"the export's by up to {gap:.3g}")
        return {"model": self.name, "records": len(self.input_example),
                "scores": scores[:, 0].round(6).tolist(), "verified": want is not None}

    # ---- scoring --------------------------------------------------------------------------
    def feeds(self, records: Any) -> dict[str, np.ndarray]:
        """The graph's inputs for raw records (a list of objects, one object or a DataFrame)."""
        return self._feeds(self._checked(records))

    def score(self, records: Any) -> np.ndarray:
        """Probabilities (n, len(score_names)), float32; column 0 is pCTR."""
        return self._run(self.feeds(records))

    def score_frame(self, records: Any) -> pd.DataFrame:
        """Scores as columns `score_<name>` (the layout of the offline test scores)."""
        scores = self.score(records)
        return pd.DataFrame({f"score_{n}": scores[:, i] for i, n in enumerate(self.score_names)})

    def score_with_stats(self, records: Any) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
        """Scores plus, per field, how many values were unseen (-> OOV) or missing (-> default)."""
        checked = self._checked(records)
        feeds = self._feeds(checked)
        return self._run(feeds), self._stats(feeds, checked.numbers)

    def transform(self, records: Any) -> pd.DataFrame:
        """Validated raw records -> the model-ready columns preprocessing would produce."""
        return self._transform(self._frame(self._checked(records)))

    def _feeds(self, checked: _Checked) -> dict[str, np.ndarray]:
        if not isinstance(checked.columns, pd.DataFrame) and \
                len(checked) <= self.compiled_max_batch:
            return self._compiled.feeds(checked.columns, checked.numbers)
        return feeds_from_frame(self._transform(self._frame(checked)), self.input_schema)

    def _transform(self, raw: pd.DataFrame) -> pd.DataFrame:
        if self.aliases:  # the dataset's own column names -> the spec's canonical ones
            raw = raw.rename(columns={v: k for k, v in self.aliases.items()})
        fill = {c: pd.Series([None] * len(raw), index=raw.index, dtype=object)
                for f in self._spec.fields for c in f.columns if c not in raw}
        # vocabulary owners of sequences the model reads without their own column
        return self._spec.transform_frame(raw.assign(**fill) if fill else raw)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if not len(next(iter(feeds.values()))):
            return np.zeros((0, len(self.score_names)), dtype=np.float32)
        (scores,) = self.session.run([OUTPUT_NAME], feeds)
        return scores

    def _stats(self, feeds: dict[str, np.ndarray],
               numbers: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
        """Per input: unseen ids (OOV) and missing values (PAD / NaN). Padding slots of a
        sequence are not missing values. Counted over every id input at once (a handful
        of numpy calls, not two per input: this runs on every request)."""
        ids = self._id_inputs
        stats: dict[str, dict[str, int]] = {}
        if ids:
            flat = np.concatenate([feeds[n].ravel() for n, _ in ids])
            starts = np.cumsum([0] + [feeds[n].size for n, _ in ids[:-1]])
            if flat.size:
                oov = np.add.reduceat(flat == OOV, starts).tolist()
                pad = np.add.reduceat(flat == PAD, starts).tolist()
            else:
                oov = pad = [0] * len(ids)
            for (name, counts), n_oov, n_pad in zip(ids, oov, pad, strict=True):
                stats[name] = {"oov": n_oov, "missing": n_pad} if counts == "both" else \
                    {"oov": n_oov} if counts == "oov" else {"missing": n_pad}
        for name, column in self._numeric_inputs.items():
            stats[name] = {"missing": int(np.count_nonzero(np.isnan(numbers[column])))}
        return {name: stats[name] for name in self.input_names}

    # ---- validation ------------------------------------------------------------------------
    def _checked(self, records: Any) -> _Checked:
        """Refuse what training would have refused (see `validate`), naming record and field."""
        names = list(self.raw_schema)
        columns = frame_columns(records, names) if isinstance(records, pd.DataFrame) \
            else record_columns(records, names)
        numbers = {}
        for column, kind in self.raw_schema.items():
            check_column(columns[column], column, kind)
            if kind == "numeric":
                numbers[column] = numeric_values(columns[column], column, self.bounds.get(column))
        return _Checked(columns, numbers)

    @staticmethod
    def _frame(checked: _Checked) -> pd.DataFrame:
        if isinstance(checked.columns, pd.DataFrame):
            return checked.columns
        return pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in checked.columns.items()},
                            index=pd.RangeIndex(len(checked)))


# ---- helpers ------------------------------------------------------------------------------
def _session(model: str | Path | bytes, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidProtobuf, ...)
        where = "the model bytes" if isinstance(model, bytes) else str(model)
        raise ValueError(f"{where}: onnxruntime cannot load it as an ONNX model "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from None


def _json_file(bundle: Any, role: str) -> Any:
    blob = read_file(bundle, role)
    try:
        return json.loads(blob)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{bundle.path(role)}: not valid JSON ({exc})") from None
