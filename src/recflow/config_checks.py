"""Strict configuration: number types, size bounds, and the checks run at pipeline registration.

* `StrictModel`: the base of every typed parameter block and component schema
  (config `STRICT`). Numbers are strict: an int field refuses `true` (no bool -> 1) and
  `1e12` (a float), naming the integer range it takes; a float field refuses a bool but
  takes an int; unknown keys are refused.
* `MAX_*`: upper bounds of size-like parameters (buckets, vocabularies, widths, batch
  sizes, ...), generous but finite, so `num_buckets: 1e12` fails with the bound in the
  message instead of "can't allocate 4 TB" deep in training.
* `check_parameters`: called by `register_pipelines`, so before any node runs. It refuses
  a top-level block no typed model owns, and validates every per-entry override *merged
  with its base* (`ranking.models.<name>.trainer` over `ranking.trainer`, each entry's
  `params` against its registered schema; the same for distillation, retrieval and
  semantic IDs), errors naming the file and the full YAML path.

This module imports nothing of recflow at import time (the params modules import it).
"""

from __future__ import annotations

import importlib.util
import pkgutil
import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

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


_SEP = "; "
#: "<key>: expected an integer ...", one per key, from StrictModel's check
_LAX_INT = re.compile(r"^(\w+): (expected an integer .*)$")


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
            raise ValueError(_SEP.join(problems))
        return data


#: top-level keys recflow once accepted and no longer reads -> what to write instead
RETIRED_KEYS = {
    "seed": "the top-level `seed` was never read; each block has its own: "
            "ranking.trainer.seed, retrieval.seed, semantic_ids.tokenizers.<name>.params.seed, "
            "distillation.trainer.seed",
}
# Blocks whose model does not live in recflow.pipelines.<block>.params (docs/gen_reference.py).
_EXPLICIT_BLOCKS = ("dataset", "preprocessing")


def known_blocks() -> list[str]:
    """Top-level keys a parameters file may have: one per typed block."""
    import recflow.pipelines

    blocks = list(_EXPLICIT_BLOCKS)
    for info in pkgutil.iter_modules(recflow.pipelines.__path__):
        if info.ispkg and info.name not in blocks and importlib.util.find_spec(
                f"recflow.pipelines.{info.name}.params") is not None:
            blocks.append(info.name)
    return blocks


def check_top_level(parameters: dict[str, Any]) -> None:
    """Refuse a top-level key no typed block owns: a misspelt block would be ignored."""
    retired = sorted(k for k in parameters if k in RETIRED_KEYS)
    if retired:
        raise ValueError("parameters: " + "; ".join(f"{k}: {RETIRED_KEYS[k]}" for k in retired)
                         + " (remove it from conf/<env>/parameters*.yml)")
    known = known_blocks()
    unknown = sorted(k for k in parameters if k not in known and not str(k).startswith("_"))
    if unknown:
        raise ValueError(
            f"parameters: unknown top-level key(s) {unknown} (conf/<env>/parameters*.yml or "
            f"--params); a misspelt block would be ignored and the base config run. Known "
            f"blocks: {known}")


def _problems(exc: ValidationError, prefix: str, where: Any = None) -> str:
    """'prefix.loc: msg (got x)' for each error; `where(loc)` may re-root a location."""
    out = []
    for e in exc.errors():
        msg = e["msg"].removeprefix("Value error, ")
        # StrictModel's "key: expected an integer ..." parts: the key joins the path
        parts = [_LAX_INT.match(part) for part in msg.split(_SEP)]
        located = [((*e["loc"], m[1]), m[2]) for m in parts if m] if all(parts) else [
            (tuple(e["loc"]), msg)]
        for loc, text in located:
            path = where(loc) if where is not None else ".".join([prefix, *map(str, loc)])
            got = f" (got {e['input']!r})" if "input" in e and "got" not in text and (
                not isinstance(e["input"], dict | list)) else ""
            out.append(f"{path}: {text}{got}")
    return _SEP.join(out)


def _mapping(value: Any, file: str, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{file}: {path}: expected a mapping, got {value!r}")
    return value


def _check_component(registry: Any, name: Any, params: Any, file: str, path: str,
                     name_key: str) -> None:
    """`path.params` against the schema registered under `name` (`path.<name_key>`)."""
    from recflow.registry import RegistryError

    if not isinstance(name, str):
        raise ValueError(f"{file}: {path}.{name_key}: expected a registered name, got {name!r}")
    try:
        registry.get(name).validate_params(_mapping(params, file, f"{path}.params"),
                                           where=f"{path}.params")
    except RegistryError as exc:
        raise ValueError(f"{file}: {path}: {exc}") from None


def _base_trainer(raw: Any, file: str, path: str) -> dict[str, Any]:
    """The block's own `trainer`, validated alone (its errors name `path`)."""
    from recflow.training.trainer import TrainerConfig

    base = _mapping(raw, file, path)
    try:
        TrainerConfig.model_validate(base)
    except ValidationError as exc:
        raise ValueError(f"{file}: {_problems(exc, path)}") from None
    return base


def _check_entry(entry: Any, base: dict[str, Any], file: str, path: str, base_path: str) -> None:
    """One model entry: its params against the model's schema, its trainer over the base."""
    from recflow.registry import MODELS
    from recflow.training.trainer import TrainerConfig

    entry = _mapping(entry, file, path)
    if entry.get("checkpoint") is not None and entry.get("model") is None:
        return  # a saved teacher: nothing to train, its payload is checked when loaded
    _check_component(MODELS, entry.get("model"), entry.get("params"), file, path, "model")
    override = _mapping(entry.get("trainer"), file, f"{path}.trainer")
    unknown = sorted(set(override) - set(TrainerConfig.model_fields))
    if unknown:  # a typo: name the keys that exist
        raise ValueError(f"{file}: {path}.trainer: unknown key(s) {unknown}; trainer keys: "
                         f"{sorted(TrainerConfig.model_fields)}")

    def where(loc: tuple) -> str:
        key = str(loc[0]) if loc else ""
        root = f"{path}.trainer" if key in override or not loc else base_path
        return ".".join([root, *map(str, loc)])

    try:
        TrainerConfig.model_validate({**base, **override})
    except ValidationError as exc:
        raise ValueError(f"{file}: {_problems(exc, path, where)}") from None


def check_ranking(parameters: dict[str, Any]) -> None:
    file = "parameters_ranking.yml"
    block = _mapping(parameters.get("ranking"), file, "ranking")
    base = _base_trainer(block.get("trainer"), file, "ranking.trainer")
    for name, entry in _mapping(block.get("models"), file, "ranking.models").items():
        _check_entry(entry, base, file, f"ranking.models.{name}", "ranking.trainer")


def check_distillation(parameters: dict[str, Any]) -> None:
    file = "parameters_distillation.yml"
    block = _mapping(parameters.get("distillation"), file, "distillation")
    if not block:
        return
    base = _base_trainer(block.get("trainer"), file, "distillation.trainer")
    teacher = _mapping(block.get("teacher"), file, "distillation.teacher")
    members = teacher.get("members") or []
    if not isinstance(members, list):
        raise ValueError(f"{file}: distillation.teacher.members: expected a list, got {members!r}")
    entries = [(f"distillation.teacher.members[{i}]", m) for i, m in enumerate(members)]
    entries += [(f"distillation.{k}", block[k]) for k in ("student", "baseline")
                if block.get(k) is not None]
    for path, entry in entries:
        _check_entry(entry, base, file, path, "distillation.trainer")


def check_retrieval(parameters: dict[str, Any]) -> None:
    from recflow.models.retrieval import RETRIEVAL_MODELS

    file = "parameters_retrieval.yml"
    block = _mapping(parameters.get("retrieval"), file, "retrieval")
    _check_entries(RETRIEVAL_MODELS, block.get("models"), file, "retrieval.models", "model")


def _check_entries(registry: Any, entries: Any, file: str, path: str, name_key: str) -> None:
    """Each entry of the mapping at `path`: its `params` against the component it names."""
    for name, entry in _mapping(entries, file, path).items():
        entry = _mapping(entry, file, f"{path}.{name}")
        _check_component(registry, entry.get(name_key), entry.get("params"), file,
                         f"{path}.{name}", name_key)


def check_semantic_ids(parameters: dict[str, Any]) -> None:
    from recflow.registry import ITEM_ENCODERS, TOKENIZERS

    file = "parameters_semantic_ids.yml"
    block = _mapping(parameters.get("semantic_ids"), file, "semantic_ids")
    if not block:
        return
    encoder = _mapping(block.get("encoder"), file, "semantic_ids.encoder")
    if encoder:
        _check_component(ITEM_ENCODERS, encoder.get("name", "tfidf_svd"), encoder.get("params"),
                         file, "semantic_ids.encoder", "name")
    _check_entries(TOKENIZERS, block.get("tokenizers"), file, "semantic_ids.tokenizers",
                   "tokenizer")


def check_parameters(parameters: dict[str, Any]) -> None:
    """Everything checkable from the parameters alone that a node would otherwise find late.

    Raises ValueError "<file>: <full.yaml.path>: <problem>" on the first block that fails.
    """
    check_top_level(parameters)
    check_ranking(parameters)
    check_distillation(parameters)
    check_retrieval(parameters)
    check_semantic_ids(parameters)


