"""Request bodies -> records, refusing what would crash or mislead the scorer.

Python's `json` happily parses `NaN`, `Infinity` and `1e400` (to inf), and recurses
once per nesting level until `RecursionError`. A scoring request is at most four
levels deep (`{"records": [{"hist_item_id": [...]}]}`), so a vectorised scan of the
brackets refuses deep input *before* the parser sees it, and parser hooks refuse
the non-finite numbers, which the scorer would otherwise take for missing values.
Every refusal is a `PayloadError` carrying its HTTP status and, where it can be
found, the record and field that hold the offending value.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = np.zeros(256, dtype=np.int32)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1


class PayloadError(ValueError):
    """A request body that cannot become records; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.extra = status, {k: v for k, v in extra.items() if v is not None}


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays/objects in a JSON text (strings skipped), without parsing."""
    if b'"' in body:
        body = _STRING.sub(b"", body)
    steps = _STEP[np.frombuffer(body.translate(None, _NOT_BRACKETS), dtype=np.uint8)]
    return int(np.cumsum(steps).max()) if steps.size else 0


class _NonFinite(float):
    """Stands in for NaN/Infinity/overflow on the error path, so the culprit can be located."""


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON (send null for a missing value)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is beyond the range of a float64")
    return value


def parse_records(body: bytes, *, max_depth: int, max_records: int) -> Any:
    """The records of `{"records": [...]}` (or a bare list); raises PayloadError."""
    # fewer opening brackets than the limit cannot nest deeper: skip the scan (most requests)
    depth = json_depth(body) if body.count(b"[") + body.count(b"{") > max_depth else 0
    if depth > max_depth:
        raise PayloadError(400, f"request body nests {depth} levels deep, over the limit of "
                                f"{max_depth} (--max-json-depth)", limit=max_depth)
    try:
        payload = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:  # the scan above makes this unreachable; never a 500 regardless
        raise PayloadError(400, "request body nests too deeply", limit=max_depth) from None
    except (ValueError, UnicodeDecodeError) as exc:
        where = _culprit(body)
        if where:
            raise PayloadError(400, f"record {where['record']}: field '{where['field']}': {exc}",
                               **where) from None
        raise PayloadError(400, f"request body is not valid JSON: {exc}") from None
    records = payload.get("records") if isinstance(payload, dict) else payload
    if not isinstance(records, list):
        raise PayloadError(400, 'expected a JSON object {"records": [{field: value, ...}, ...]} '
                                "or a JSON list of records")
    if len(records) > max_records:
        raise PayloadError(413, f"batch of {len(records)} records exceeds the limit of "
                                f"{max_records} (--max-batch); split it into smaller requests",
                           limit=max_records)
    return records


def _culprit(body: bytes) -> dict[str, Any]:
    """Record index and field of the first non-finite number, if that is what failed."""
    try:
        payload = json.loads(body, parse_constant=_NonFinite,
                             parse_float=lambda t: _NonFinite(t) if math.isinf(float(t))
                             else float(t))
    except (ValueError, RecursionError, UnicodeDecodeError):
        return {}
    records = payload.get("records") if isinstance(payload, dict) else payload
    for i, record in enumerate(records if isinstance(records, list) else []):
        for field, value in (record.items() if isinstance(record, dict) else ()):
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, _NonFinite) for v in values):
                return {"record": i, "field": field}
    return {}
