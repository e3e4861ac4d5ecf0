"""The checks run at pipeline registration (the strict types: `recflow.config_types`).

* `check_parameters`: called by `register_pipelines`, so before any node runs. It refuses
  a top-level block no typed model owns, and validates every per-entry override *merged
  with its base* (`ranking.models.<name>.trainer` over `ranking.trainer`, each entry's
  `params` against its registered schema; the same for distillation, retrieval and
  semantic IDs), errors naming the file and the full YAML path.

Registries and the trainer's config are imported where a check needs them.
"""

from __future__ import annotations

import importlib.util
import pkgutil
from typing import Any

from pydantic import ValidationError

from recflow.config_types import LAX_INT_PROBLEM, PROBLEM_SEPARATOR
from recflow.registry.entry import refuse_renamed_key

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
        parts = [LAX_INT_PROBLEM.match(part) for part in msg.split(PROBLEM_SEPARATOR)]
        located = [((*e["loc"], m[1]), m[2]) for m in parts if m] if all(parts) else [
            (tuple(e["loc"]), msg)]
        for loc, text in located:
            path = where(loc) if where is not None else ".".join([prefix, *map(str, loc)])
            got = f" (got {e['input']!r})" if "input" in e and "got" not in text and (
                not isinstance(e["input"], dict | list)) else ""
            out.append(f"{path}: {text}{got}")
    return PROBLEM_SEPARATOR.join(out)


def _mapping(value: Any, file: str, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{file}: {path}: expected a mapping, got {value!r}")
    return value


def _check_component(registry: Any, name: Any, params: Any, file: str, path: str) -> None:
    """`path.params` against the schema registered under `name` (`path.name`)."""
    from recflow.registry import RegistryError

    if not isinstance(name, str):
        raise ValueError(f"{file}: {path}.name: expected a registered name, got {name!r}")
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
    refuse_renamed_key(entry, "model", MODELS.singular, f"{file}: {path}")
    if entry.get("checkpoint") is not None and entry.get("name") is None:
        return  # a saved teacher: nothing to train, its payload is checked when loaded
    _check_component(MODELS, entry.get("name"), entry.get("params"), file, path)
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
    from recflow.registry import RETRIEVAL_MODELS

    file = "parameters_retrieval.yml"
    block = _mapping(parameters.get("retrieval"), file, "retrieval")
    _check_entries(RETRIEVAL_MODELS, block.get("models"), file, "retrieval.models", "model")


def _check_entries(registry: Any, entries: Any, file: str, path: str, old_key: str) -> None:
    """Each entry of the mapping at `path`: its `params` against the component it names
    (`name:`; `old_key` is the key that named it before)."""
    for name, entry in _mapping(entries, file, path).items():
        entry = _mapping(entry, file, f"{path}.{name}")
        refuse_renamed_key(entry, old_key, registry.singular, f"{file}: {path}.{name}")
        _check_component(registry, entry.get("name"), entry.get("params"), file,
                         f"{path}.{name}")


def check_semantic_ids(parameters: dict[str, Any]) -> None:
    from recflow.registry import ITEM_ENCODERS, TOKENIZERS

    file = "parameters_semantic_ids.yml"
    block = _mapping(parameters.get("semantic_ids"), file, "semantic_ids")
    if not block:
        return
    encoder = _mapping(block.get("encoder"), file, "semantic_ids.encoder")
    if encoder:
        _check_component(ITEM_ENCODERS, encoder.get("name", "tfidf_svd"), encoder.get("params"),
                         file, "semantic_ids.encoder")
    tokenizers = _mapping(block.get("tokenizers"), file, "semantic_ids.tokenizers")
    _check_entries(TOKENIZERS, tokenizers, file, "semantic_ids.tokenizers", "tokenizer")


def check_parameters(parameters: dict[str, Any]) -> None:
    """Everything checkable from the parameters alone that a node would otherwise find late.

    Raises ValueError "<file>: <full.yaml.path>: <problem>" on the first block that fails.
    """
    check_top_level(parameters)
    check_ranking(parameters)
    check_distillation(parameters)
    check_retrieval(parameters)
    check_semantic_ids(parameters)


