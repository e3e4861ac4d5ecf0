"""Third-party components through Python entry points: the recflow plugin contract.

A plugin is any installed distribution that declares entry points in one of
these groups (one group per registry kind, `recflow.registry.ALL`):

    recflow.models            ranking models (MODELS)
    recflow.retrieval_models  retrieval models (RETRIEVAL_MODELS)
    recflow.tokenizers        semantic-ID tokenizers (TOKENIZERS)
    recflow.item_encoders     item content encoders (ITEM_ENCODERS)
    recflow.losses            training losses (LOSSES)

The contract, for every kind:

1. ``<name> = "package.module:Component"`` in ``[project.entry-points."recflow.<kind>"]``.
   The entry-point name is the name YAML uses (``name: <name>``); it must not
   contain ``:`` (that separator is reserved for qualified names).
2. The target *is* the component (a class, or for non-model kinds a factory
   function). recflow registers it; a plugin never calls ``register`` itself,
   so recflow alone decides names, resolves clashes and records the source
   distribution.
3. The component declares its typed parameter schema as ``params_schema``, a
   pydantic ``BaseModel`` (``extra="forbid"`` recommended) or a dataclass. YAML
   ``params`` are validated against it, then ``Component(*args, params=typed)``
   is called (models: ``Component(spec, params=typed)``).
4. The target meets its kind's contract: a `typing.Protocol` the package defining the
   kind declares beside its base class and sets with `Registry.set_contract` (ranking
   models `recflow.models.RankingModelProtocol`: ``forward(inputs: dict[str, Tensor]) ->
   logits (B, len(tasks))``, ``input_names``, ``tasks``, ``loss``, ``predict``,
   ``score_names``, in an ``nn.Module``; subclassing `RankingModel` is the easy way; the
   other kinds' Protocols are listed in docs/plugins.md). Built-ins are checked against
   the same contract when their decorator registers them.

This module uses only the public API of `recflow.registry.core.Registry`.

Loading is lazy and happens once per registry, on its first lookup, after the
built-ins. Problems never break built-ins or other plugins: the entry point is
skipped with a `PluginWarning` that names it and its distribution, and asking
for its name later raises a `RegistryError` quoting the same reason:

* the target fails to import, with any exception, including ``SystemExit`` (a
  plugin calling ``sys.exit()`` at import is skipped, not allowed to end the run;
  that one is also logged as a warning); only ``KeyboardInterrupt`` propagates;
* the target is not a component of that kind (a module, an instance, a model
  class that is not an ``nn.Module``, a class lacking a member of the kind's Protocol);
* the target has no ``params_schema`` (or it is neither pydantic nor a dataclass).

Name clashes are resolved explicitly, never by overwriting: a plugin name that
a built-in (or an already loaded plugin) owns is registered as the qualified
``<distribution>:<name>`` (distribution name normalised: lower case, runs of
``-_.`` -> ``-``), with a warning. When two plugins that load together both
provide a new name, neither gets the bare name: both are registered qualified
and the bare name raises an error listing the qualified choices.

`load_plugins(registry)` is idempotent, so after ``pip install``-ing a plugin
into a running interpreter (a notebook, a test) calling it again picks the new
entry points up. `plugin_records()` reports what each entry point became.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
import warnings
import weakref
from collections import defaultdict
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

from recflow.registry.core import Component, Registry

logger = logging.getLogger("recflow.plugins")  # the name users filter on

#: attribute of a component that holds its parameter schema
PARAMS_ATTRIBUTE = "params_schema"


class PluginWarning(UserWarning):
    """A plugin entry point was skipped or renamed; the message says which and why."""


@dataclass(frozen=True)
class PluginRecord:
    """What one entry point became: `registered_as` a name, or skipped for `problem`."""

    group: str
    entry_point: str  # "name = module:attr"
    distribution: str  # "name version"
    registered_as: str | None
    problem: str | None = None


@dataclass
class _Candidate:
    entry_point: metadata.EntryPoint
    dist: str  # normalised distribution name, the qualifier
    dist_label: str  # "name version", as installed
    where: str  # "entry point '...' (group ...) of distribution '...'"
    target: Any = None
    schema: Any = None


_LOADED: weakref.WeakKeyDictionary[Registry, set[tuple[str, str, str]]] = (
    weakref.WeakKeyDictionary()
)
_RECORDS: list[PluginRecord] = []


def plugin_records() -> list[PluginRecord]:
    """Every entry point looked at so far, in load order (for listings and debugging)."""
    return list(_RECORDS)


def normalize_dist(name: str) -> str:
    """PEP 503 normalisation: 'Recflow_FinalMLP' -> 'recflow-finalmlp'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def load_plugins(registry: Registry) -> list[PluginRecord]:
    """Register the components of `registry.plugin_group`'s entry points; skips loaded ones.

    Call it after the registry's built-ins are registered (the registries do so
    themselves on first use). Never raises for a broken plugin: it warns.
    """
    group = registry.plugin_group
    if group is None:
        return []
    seen = _LOADED.setdefault(registry, set())
    records: list[PluginRecord] = []
    candidates: list[_Candidate] = []
    for ep in _entry_points(group):
        dist_name, version = _dist_of(ep)
        key = (ep.name, ep.value, dist_name)
        if key in seen:
            continue
        seen.add(key)
        dist_label = f"{dist_name} {version}".removesuffix(" ?")
        candidate = _Candidate(
            ep, normalize_dist(dist_name), dist_label,
            f"entry point '{ep.name} = {ep.value}' (group {group}) of distribution '{dist_label}'",
        )
        try:
            problem = _check(registry, candidate)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - third-party code: SystemExit included
            problem = _failure("checking it", candidate, exc)
        if problem:
            if registry.find(ep.name) is None:
                registry.mark_unavailable(ep.name, f"{candidate.where} failed to load: {problem}")
            records.append(_skip(group, candidate, f"{candidate.where}: {problem}"))
            continue
        candidates.append(candidate)

    by_name: dict[str, list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_name[candidate.entry_point.name].append(candidate)
    for name, group_candidates in by_name.items():
        ambiguous = len({c.dist for c in group_candidates}) > 1
        for candidate in group_candidates:
            records.append(_register(registry, name, candidate, ambiguous, group_candidates))
    _RECORDS.extend(records)
    return records


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    """The group's entry points in a stable order (distribution, then name), deduplicated."""
    unique: dict[tuple[str, str, str], metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=group):
        unique.setdefault((_dist_of(ep)[0], ep.name, ep.value), ep)
    return [unique[k] for k in sorted(unique)]


def _dist_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:  # an EntryPoint built by hand: fall back to its top-level package
        return ep.value.split(":")[0].split(".")[0], "?"
    try:
        return dist.metadata["Name"] or dist.name, dist.version or "?"
    except Exception:  # noqa: BLE001 - broken METADATA must not break discovery
        return getattr(dist, "name", None) or "unknown", "?"


def _check(registry: Registry, candidate: _Candidate) -> str:
    """Import the target and check it against the contract: '' when it fits, else why not."""
    ep = candidate.entry_point
    if not ep.name or re.search(r"[:\s]", ep.name):
        return (f"'{ep.name}' is not a valid component name (no whitespace; ':' is reserved "
                "for qualified names)")
    try:
        target = ep.load()
    except KeyboardInterrupt:  # the user's Ctrl-C, not the plugin's failure
        raise
    except BaseException as exc:  # noqa: BLE001 - any import-time failure, SystemExit included
        return _failure("import", candidate, exc)
    kind = registry.singular
    not_component = _not_a_component(registry, target)
    if not_component:
        return f"{_describe(target)} is not a {kind} component: {not_component}"
    schema = getattr(target, PARAMS_ATTRIBUTE, None)
    if schema is None:
        return (f"{kind} {_describe(target)} has no parameter schema: set the class attribute "
                f"`{PARAMS_ATTRIBUTE} = <pydantic BaseModel or dataclass>` (an empty model if "
                "it takes no parameters)")
    if not _is_schema(schema):
        return (f"{kind} {_describe(target)} has a `{PARAMS_ATTRIBUTE}` that is not a pydantic "
                f"BaseModel subclass or a dataclass: {schema!r}")
    candidate.target, candidate.schema = target, schema
    return ""


def _failure(action: str, candidate: _Candidate, exc: BaseException) -> str:
    """Why `action` on a plugin failed. A BaseException that is not an Exception (SystemExit,
    GeneratorExit, ...) would end the run or the listing silently: it is logged loudly too."""
    logger.debug("%s of %s failed", action, candidate.where, exc_info=True)
    problem = f"{action} failed: {type(exc).__name__}: {exc}"
    if not isinstance(exc, Exception):
        problem += (" (a plugin must not exit or abort the interpreter while recflow loads it; "
                    "recflow skipped it and carried on)")
        logger.warning("recflow plugin skipped: %s: %s", candidate.where, problem)
    return problem


def _not_a_component(registry: Registry, target: Any) -> str:
    """'' when `target` fits the kind's contract, else what is wrong with it (checked here
    to warn and skip; `Registry.add` checks again, as for every registration)."""
    return registry.contract_problems(target)


def _is_schema(schema: Any) -> bool:
    from pydantic import BaseModel

    return inspect.isclass(schema) and (issubclass(schema, BaseModel)
                                        or dataclasses.is_dataclass(schema))


def _describe(target: Any) -> str:
    if isinstance(target, ModuleType):
        return f"module '{target.__name__}'"
    name = getattr(target, "__qualname__", None)
    if name is not None:
        kind = "class" if inspect.isclass(target) else "function"
        return f"{kind} '{getattr(target, '__module__', '?')}.{name}'"
    return f"{type(target).__name__} instance {target!r:.60}"


def _register(registry: Registry, name: str, candidate: _Candidate, ambiguous: bool,
              rivals: list[_Candidate]) -> PluginRecord:
    group = registry.plugin_group or ""
    existing = registry.find(name)
    qualified = f"{candidate.dist}:{name}"
    if existing is not None and existing.target is candidate.target:
        final, note = name, None  # already there (e.g. imported and decorated): fix the source
    elif existing is None and not ambiguous:
        final, note = name, None
    elif existing is None:  # several plugins introduce the same new name
        final = qualified
        choices = sorted(f"'{c.dist}:{name}'" for c in rivals)
        registry.mark_unavailable(
            name, f"'{name}' is provided by several plugins; use one of {', '.join(choices)}")
        note = (f"{candidate.where}: {registry.singular} '{name}' is provided by several "
                f"plugins ({', '.join(choices)}); registered it as '{qualified}' only (use that "
                "name in YAML)")
    else:
        final = qualified
        owner = "built-in" if existing.source == "recflow" else f"'{existing.source}'"
        note = (f"{candidate.where}: {registry.singular} '{name}' clashes with the {owner} "
                f"{registry.singular} of that name (source: {existing.source}); registered it "
                f"as '{qualified}' instead (use that name in YAML, or rename the entry point)")
    taken = registry.find(final)
    if taken is not None and taken.target is not candidate.target:
        return _skip(group, candidate,
                     f"{candidate.where}: both '{name}' and '{qualified}' are taken by other "
                     f"components; skipped")
    summary = (getattr(candidate.target, "__doc__", None) or "").strip().split("\n")[0]
    registry.add(Component(final, registry.kind, candidate.target, candidate.schema,
                           source=candidate.dist, summary=summary))
    if note:
        warnings.warn(note, PluginWarning, stacklevel=3)
    return PluginRecord(group, _entry(candidate), candidate.dist_label, final, note)


def _entry(candidate: _Candidate) -> str:
    return f"{candidate.entry_point.name} = {candidate.entry_point.value}"


def _skip(group: str, candidate: _Candidate, problem: str) -> PluginRecord:
    warnings.warn(f"recflow plugin skipped: {problem}", PluginWarning, stacklevel=3)
    return PluginRecord(group, _entry(candidate), candidate.dist_label, None, problem)
