"""One registry for every pluggable component, in the timm style.

    @MODELS.register("deepfm", params=DeepFMParams)
    class DeepFM(RankingModel): ...

    MODELS.create("deepfm", spec=spec, params={"embed_dim": 16})
    MODELS.list("dcn*")

Each component declares a parameter schema (a pydantic model or dataclass), so
YAML is validated against it before anything trains; only registered names
can be referenced from YAML (nothing is imported from a config string).

Third-party packages add components through Python entry points, loaded after
the built-ins on a registry's first use: see `recflow.plugins` and docs/plugins.md.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterator
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
    """Name -> component for one kind (models, tokenizers, item_encoders, losses)."""

    def __init__(self, kind: str, plugin_group: str | None = None) -> None:
        self.kind = kind
        #: entry-point group third-party components of this kind are discovered from
        self.plugin_group = plugin_group
        #: names whose plugin failed to load (or is ambiguous) -> why; quoted by `get`
        self.unavailable: dict[str, str] = {}
        self._components: dict[str, Component] = {}
        self._discover: Callable[[Registry], None] | None = None
        self._plugins_pending = plugin_group is not None

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

    def set_discovery(self, discover: Callable[[Registry], None]) -> None:
        self._discover = discover

    def _ensure_discovered(self) -> None:
        """Built-ins first, then entry-point plugins (recflow.plugins); once, on first use."""
        if self._discover is not None:
            discover, self._discover = self._discover, None
            discover(self)
        if self._plugins_pending:
            self._plugins_pending = False
            from recflow.plugins import load_plugins

            load_plugins(self)

    def get(self, name: str) -> Component:
        self._ensure_discovered()
        try:
            return self._components[name]
        except KeyError:
            if name in self.unavailable:
                raise RegistryError(
                    f"{_singular(self.kind)} '{name}' is not available: {self.unavailable[name]}"
                ) from None
            raise RegistryError(
                f"unknown {_singular(self.kind)} '{name}'; registered {self.kind}: {self.list()}"
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
        self._ensure_discovered()
        return sorted(n for n in self._components if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        self._ensure_discovered()
        return name in self._components

    def __iter__(self) -> Iterator[Component]:
        self._ensure_discovered()
        return iter(sorted(self._components.values(), key=lambda c: c.name))


MODELS = Registry("models", plugin_group="recflow.models")
TOKENIZERS = Registry("tokenizers", plugin_group="recflow.tokenizers")
ITEM_ENCODERS = Registry("item_encoders", plugin_group="recflow.item_encoders")
LOSSES = Registry("losses", plugin_group="recflow.losses")


def _builtins(module: str) -> Callable[[Registry], None]:
    """Importing the built-in module runs its @register decorators, on first use only."""

    def discover(registry: Registry) -> None:
        import importlib

        importlib.import_module(module)

    return discover


MODELS.set_discovery(_builtins("recflow.models"))
TOKENIZERS.set_discovery(_builtins("recflow.tokenization"))
ITEM_ENCODERS.set_discovery(_builtins("recflow.tokenization"))
LOSSES.set_discovery(_builtins("recflow.training.distillation"))
