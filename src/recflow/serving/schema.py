"""Input contracts shared by the exporter and the scorer (numpy/pandas only).

Two schemas describe an exported model:

* the **input schema**: the graph's inputs, one per feature-spec field the model
  reads (`model.input_names`): dtype, shape with a dynamic `batch` axis, and for
  sequences the padded length and the padding id that the in-graph mask is built
  from (`ids != 0`). It is derived from the FeatureSpec alone, so the exporter
  knows nothing model-specific, and it is stored in the ONNX metadata.
* the **raw schema**: the raw record keys a scorer needs to build those inputs
  with the fitted transforms, and the value type each key must hold.

Neither imports torch or Kedro: `recflow.serving` runs in slim images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from recflow.features import FeatureSpec

#: graph output holding `predict(forward(x))`, shape (batch, len(score_names))
OUTPUT_NAME = "scores"
BATCH_AXIS = "batch"
PADDING_ID = 0

_DTYPES = {"categorical": "int64", "numeric": "float32", "sequence": "int64"}
#: transforms whose raw column must hold numbers (others take ids: str or int)
_NUMERIC_TRANSFORMS = {"standardize", "quantile_bucket"}


def input_schema(spec: FeatureSpec, names: list[str]) -> list[dict[str, Any]]:
    """One entry per graph input, in `names` order (the model's `input_names`)."""
    schema = []
    for name in names:
        field = spec[name]
        entry: dict[str, Any] = {
            "name": name,
            "kind": field.kind,
            "dtype": _DTYPES[field.kind],
            "shape": [BATCH_AXIS],
            "columns": field.output_columns(),
        }
        if field.kind == "sequence":
            entry.update(shape=[BATCH_AXIS, field.length], padding_id=PADDING_ID,
                         mask="ids != padding_id", vocab_of=field.shares_vocab_with,
                         order="oldest first, most recent last, left-padded")
        if field.kind == "categorical":
            entry["padding_id"] = PADDING_ID
        if field.vocab_size is not None:
            entry["vocab_size"] = int(field.vocab_size)
        schema.append(entry)
    return schema


def dynamic_axes(schema: list[dict[str, Any]]) -> dict[str, dict[int, str]]:
    """Named (string) dimensions of every input, plus the output's batch axis."""
    axes = {e["name"]: {i: d for i, d in enumerate(e["shape"]) if isinstance(d, str)}
            for e in schema}
    axes[OUTPUT_NAME] = {0: BATCH_AXIS}
    return axes


def feeds_from_frame(frame: pd.DataFrame, schema: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Model-ready columns (FeatureSpec.transform_frame output) -> ONNX input arrays."""
    feeds = {}
    for e in schema:
        missing = [c for c in e["columns"] if c not in frame]
        if missing:
            raise KeyError(f"input '{e['name']}' needs column(s) {missing[:3]} in the frame")
        if e["kind"] == "sequence":
            values = frame[e["columns"]].to_numpy()
        else:
            values = frame[e["columns"][0]].to_numpy()
        feeds[e["name"]] = np.ascontiguousarray(values, dtype=e["dtype"])
    return feeds


def serving_fields(spec: FeatureSpec, names: list[str]) -> list[str]:
    """Fields a scorer must transform: the inputs plus the vocabularies sequences look up."""
    needed = set(names)
    needed |= {spec[n].shares_vocab_with for n in names if spec[n].kind == "sequence"}
    return [n for n in spec.names if n in needed]


def raw_schema(spec: FeatureSpec, names: list[str]) -> dict[str, str]:
    """Raw record key -> kind ("numeric" | "categorical" | "sequence") for the inputs `names`.

    A key read by a numeric transform must hold numbers; a key read as an id
    holds strings or integers; a sequence field's key holds a list of ids
    (oldest first). Null values are allowed (missing -> PAD / the fitted default);
    absent keys are not.
    """
    kinds: dict[str, str] = {}
    for name in names:
        field = spec[name]
        if field.kind == "sequence":
            kinds[name] = "sequence"
            continue
        for column in field.columns:
            if field.transform in _NUMERIC_TRANSFORMS:
                kinds[column] = "numeric"
            else:
                kinds.setdefault(column, "categorical")
    return kinds
