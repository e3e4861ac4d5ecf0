"""Strict configuration types: the base of every typed parameter block, and size bounds.

* `StrictModel`: the base of every typed parameter block and component schema
  (config `STRICT`). Numbers are strict: an int field refuses `true` (no bool -> 1) and
  `1e12` (a float), naming the integer range it takes; a float field refuses a bool but
  takes an int; unknown keys are refused.
* `MAX_*`: upper bounds of size-like parameters (buckets, vocabularies, widths, batch
  sizes, ...), generous but finite, so `num_buckets: 1e12` fails with the bound in the
  message instead of "can't allocate 4 TB" deep in training.

A leaf: it imports nothing of recflow (every params module imports it). The checks run
at pipeline registration live in `recflow.config_checks`.
"""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, model_validator

STRICT = ConfigDict(extra="forbid", strict=True)

# ---- bounds of size-like parameters (each error message states the bound) ------------------
MAX_BUCKETS = 100_000_000  # hash buckets, vocabulary sizes: rows of an embedding table
MAX_EMBED_DIM = 4096  # embedding / latent / output vector sizes
MAX_WIDTH = 65_536  # hidden-layer widths
MAX_BATCH = 1_000_000  # rows per batch
MAX_EPOCHS = 10_000
MAX_LAYERS = 64  # stacked layers, attention heads, code levels
MAX_COUNT = 1_000_000  # negatives, beams, repeats: per-step counts
MAX_ROWS = 1_000_000_000  # buffers and row caps

#: a hidden-layer width, bounded
Width = Annotated[int, annotated_types.Ge(1), annotated_types.Le(MAX_WIDTH)]
#: a batch size, bounded
BatchSize = Annotated[int, annotated_types.Ge(1), annotated_types.Le(MAX_BATCH)]

_BOUND_TEXT = {annotated_types.Ge: ("ge", ">="), annotated_types.Gt: ("gt", ">"),
               annotated_types.Le: ("le", "<="), annotated_types.Lt: ("lt", "<")}


def _bounds(metadata: list[Any]) -> list[str]:
    """['>= 2', '<= 100000000'] from a field's (or an Annotated type's) constraints."""
    out = []
    for m in metadata:
        for kind, (attr, op) in _BOUND_TEXT.items():
            if isinstance(m, kind):
                out.append(f"{op} {getattr(m, attr)}")
        for inner in getattr(m, "metadata", None) or []:  # pydantic's Field(...) in Annotated
            out += _bounds([inner])
    return out


def _int_type(tp: Any) -> tuple[str, list[str]] | None:
    """('int' | 'list', bounds) when `tp` is an int or a list of ints (Optional/Annotated
    unwrapped), else None."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        found = _int_type(base)
        return None if found is None else (found[0], _bounds(meta) + found[1])
    if origin in (Union, types.UnionType):
        found = [f for a in get_args(tp) if a is not type(None) and (f := _int_type(a))]
        return found[0] if len(found) == 1 else None
    if origin is list:
        (item,) = get_args(tp) or (Any,)
        found = _int_type(item)
        return ("list", found[1]) if found is not None and found[0] == "int" else None
    return ("int", []) if tp is int else None


#: joins the problems of one model in a message (checks split them again)
PROBLEM_SEPARATOR = "; "
#: "<key>: expected an integer ...", one per key, from StrictModel's check
#: a StrictModel integer problem, "key: expected an integer ..."
LAX_INT_PROBLEM = re.compile(r"^(\w+): (expected an integer .*)$")


def _lax_int(value: Any, bounds: list[str]) -> str | None:
    if isinstance(value, bool | float):
        what = " and ".join(bounds)
        return (f"expected an integer{' ' + what if what else ''}, got {value!r} "
                f"({type(value).__name__}: YAML bools and floats such as 1e12 are not integers)")
    return None


class StrictModel(BaseModel):
    """Base of the typed parameters: unknown keys refused, numbers strict."""

    model_config = STRICT

    @model_validator(mode="before")
    @classmethod
    def _strict_ints(cls, data: Any) -> Any:
        # strict mode refuses these too, but without the range: say which integers fit
        if not isinstance(data, dict):
            return data
        problems = []
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key not in data:
                continue
            found = _int_type(field.annotation)
            if found is None:
                continue
            kind, bounds = found
            values = [data[key]] if kind == "int" else (
                data[key] if isinstance(data[key], list) else [])
            bounds = _bounds(field.metadata) + bounds if kind == "int" else bounds
            for value in values:
                if (problem := _lax_int(value, bounds)) is not None:
                    problems.append(f"{key}: {problem}")
                    break
        if problems:
            raise ValueError(PROBLEM_SEPARATOR.join(problems))
        return data
