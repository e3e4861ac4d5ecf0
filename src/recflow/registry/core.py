"""The registry: name -> component for one kind, in the timm style. A leaf module.

    @MODELS.register("deepfm", params=DeepFMParams)
    class DeepFM(RankingModel): ...

    MODELS.create("deepfm", spec=spec, params={"embed_dim": 16})
    MODELS.list("dcn*")

Each component declares a parameter schema (a pydantic model or dataclass), so
YAML is validated against it before anything trains; only registered names
can be referenced from YAML (nothing is imported from a config string).

A registry discovers on first use: it imports its `builtins` module (whose
decorators register the built-ins), then calls its `loader` (for the registries of
`recflow.registry`, the entry-point loader of `recflow.registry.entry_points`). Every
registry of recflow is listed in `recflow.registry.ALL`; see docs/plugins.md.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown name, a clash, or parameters that do not fit a component's schema."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Component:
    name: str
    kind: str
    target: Any
    params: type
    source: str = "recflow"  # distribution that provided it
    summary: str = ""

    def validate_params(self, raw: dict[str, Any] | None, where: str = "params") -> Any:
        """Raw YAML mapping -> typed params; errors name the key and the allowed keys."""
        raw = dict(raw or {})
        allowed = _field_names(self.params)
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise RegistryError(
                f"{where}: unknown key(s) {unknown} for {_singular(self.kind)} '{self.name}'; "
                f"allowed keys: {sorted(allowed)}"
            )
        try:
            return TypeAdapter(self.params).validate_python(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{where}.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
                for e in exc.errors()
            )
            raise RegistryError(
                f"invalid params for {_singular(self.kind)} '{self.name}': {problems}"
            ) from None


def _singular(kind: str) -> str:
    """'models' -> 'model', 'losses' -> 'loss', 'item_encoders' -> 'item encoder'."""
    word = kind[:-2] if kind.endswith("sses") else kind[:-1]
    return word.replace("_", " ")


def schema_fields(schema: type) -> list[tuple[str, str, Any]]:
    """(name, type, default) of every parameter a schema accepts, for listings and docs."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return [(n, _type_name(f.annotation), f.get_default(call_default_factory=True))
                for n, f in schema.model_fields.items()]
    return [(f.name, _type_name(f.type),
             f.default if f.default is not dataclasses.MISSING else (
                 f.default_factory() if f.default_factory is not dataclasses.MISSING else None))
            for f in dataclasses.fields(schema)]


def _type_name(annotation: Any) -> str:
    if get_args(annotation):  # list[int], Literal['a', 'b'], int | None: keep the arguments
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", None) or str(annotation)


def _field_names(schema: type) -> list[str]:
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return list(schema.model_fields)
    if dataclasses.is_dataclass(schema):
        return [f.name for f in dataclasses.fields(schema)]
    raise TypeError(f"parameter schema must be a pydantic model or dataclass, got {schema!r}")


class Registry:
    """Name -> component for one kind (models, retrieval models, tokenizers, ...).

    Args:
        kind: plural name ("models"); messages use `singular` ("model").
        builtins: the module whose import registers the built-ins, or a callable doing
            the registering (tests); imported on first use, before `loader` runs.
        plugin_group: the entry-point group third-party components come from.
        loader: called once after the built-ins, with the registry (the entry points).
        singular: how messages name one component ("retrieval model").

    `contract` (target -> "" when a third-party target fits this kind, else why not) is
    set by the package that defines the kind's base class, with `set_contract`.
    """

    def __init__(self, kind: str, *, builtins: str | Callable[[Registry], object] | None = None,
                 plugin_group: str | None = None,
                 loader: Callable[[Registry], object] | None = None,
                 singular: str | None = None) -> None:
        self.kind = kind
        self.singular = singular or _singular(kind)
        #: entry-point group third-party components of this kind are discovered from
        self.plugin_group = plugin_group
        self.contract: Callable[[Any], str] | None = None
        self._builtins = builtins
        self._loader = loader
        self._unavailable: dict[str, str] = {}
        self._components: dict[str, Component] = {}

    # ---- registration ---------------------------------------------------------------------
    def register(
        self, name: str, *, params: type, source: str = "recflow"
    ) -> Callable[[T], T]:
        """Decorator registering a class or builder under `name` with its parameter schema."""
        _field_names(params)  # fail at import time on a schema that is not a schema

        def decorator(target: T) -> T:
            self.add(Component(name, self.kind, target, params, source,
                               (getattr(target, "__doc__", "") or "").strip().split("\n")[0]))
            return target

        return decorator

    def add(self, component: Component) -> None:
        existing = self._components.get(component.name)
        if existing is not None and existing.target is not component.target:
            raise RegistryError(
                f"{self.kind}: '{component.name}' from {component.source} clashes with the one "
                f"from {existing.source}; register it under a qualified name such as "
                f"'{component.source}:{component.name}'"
            )
        self._components[component.name] = component

    def set_contract(self, contract: Callable[[Any], str]) -> None:
        """How third-party targets of this kind are checked (see the class docstring)."""
        self.contract = contract

    def mark_unavailable(self, name: str, reason: str) -> None:
        """`name` cannot be had (a plugin failed, or is ambiguous): `get` quotes `reason`."""
        self._unavailable[name] = reason

    @property
    def unavailable(self) -> Mapping[str, str]:
        return dict(self._unavailable)

    def find(self, name: str) -> Component | None:
        """The component registered as `name`, without discovering anything."""
        return self._components.get(name)

    # ---- discovery ----------------------------------------------------------------------------
    def discover(self) -> None:
        """Built-ins first, then the loader (plugins); each once, on first use."""
        builtins, self._builtins = self._builtins, None
        if isinstance(builtins, str):
            importlib.import_module(builtins)
        elif builtins is not None:
            builtins(self)
        loader, self._loader = self._loader, None
        if loader is not None:
            loader(self)

    # ---- lookup ---------------------------------------------------------------------------------
    def get(self, name: str) -> Component:
        self.discover()
        try:
            return self._components[name]
        except KeyError:
            if name in self._unavailable:
                raise RegistryError(
                    f"{self.singular} '{name}' is not available: {self._unavailable[name]}"
                ) from None
            raise RegistryError(
                f"unknown {self.singular} '{name}'; registered {self.kind}: {self.list()}"
            ) from None

    def create(self, name: str, *args: Any, params: dict[str, Any] | Any = None,
               where: str = "params", **kwargs: Any) -> Any:
        """Build `name` with validated params (a raw mapping or an already typed object)."""
        component = self.get(name)
        typed = params if isinstance(params, component.params) else (
            component.validate_params(params, where)
        )
        return component.target(*args, params=typed, **kwargs)

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching a glob pattern, sorted (discovers first)."""
        self.discover()
        return sorted(n for n in self._components if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        self.discover()
        return name in self._components

    def __iter__(self) -> Iterator[Component]:
        self.discover()
        return iter(sorted(self._components.values(), key=lambda c: c.name))
