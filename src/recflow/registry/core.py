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

Each kind's contract is a `typing.Protocol` declared beside its base class and set with
`Registry.set_contract`; every registration (decorator or entry point) is checked against it,
so a component that lacks part of it fails when it is registered, not deep in a pipeline.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import inspect
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TypeVar, get_args, runtime_checkable

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


@runtime_checkable
class _NoMembers(Protocol):
    """An empty protocol: its attributes are the Protocol machinery, never contract members."""


#: class attributes every protocol has (typing's bookkeeping, object's), whatever it declares
_PROTOCOL_INTERNALS = frozenset(vars(_NoMembers)) | {"__annotations__", "__orig_bases__"}


def protocol_members(protocol: type) -> tuple[str, ...]:
    """The members a `typing.Protocol` declares (methods, properties, annotated attributes),
    sorted; read from the class dicts because `typing` has no public API for it in 3.11."""
    names: set[str] = set()
    for klass in protocol.__mro__:
        if Protocol not in klass.__mro__[1:]:
            continue  # Protocol itself, Generic, object
        names |= set(vars(klass)) - _PROTOCOL_INTERNALS
        names |= set(vars(klass).get("__annotations__", {}))
    return tuple(sorted(names))


_ABSENT = object()  # neither defined nor annotated
_ANNOTATED = object()  # annotated only: an instance attribute the class's __init__ sets


def _lookup(target: type, name: str) -> Any:
    """`name` as the class defines or inherits it (`_ABSENT` when it does not), read from the
    class dicts: `getattr` would also find the metaclass's (every class has `type.__call__`).
    `_ANNOTATED` when only annotated, which counts as present: an instance attribute."""
    for klass in target.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    for klass in target.__mro__:
        if name in vars(klass).get("__annotations__", {}):
            return _ANNOTATED
    return _ABSENT


def _has_value(looked_up: Any) -> bool:
    """Whether `_lookup` found a value (identity tests: values may be arrays)."""
    return looked_up is not _ANNOTATED and looked_up is not _ABSENT


def public_name(obj: Any) -> str:
    """Shortest importable dotted path of a class: 'torch.nn.Module', not
    'torch.nn.modules.module.Module' (looks only at modules already imported)."""
    module, name = getattr(obj, "__module__", "?"), getattr(obj, "__qualname__", repr(obj))
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if getattr(sys.modules.get(prefix), name, None) is obj:
            return f"{prefix}.{name}"
    return f"{module}.{name}"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _signature(protocol: type, name: str) -> str:
    """'recommend(histories, k, exclude=None)' for a method, the bare name otherwise."""
    member = _lookup(protocol, name)
    if not inspect.isfunction(member):
        return name
    params = list(inspect.signature(member).parameters.values())[1:]  # without self
    return f"{name}({', '.join(str(p.replace(annotation=p.empty)) for p in params)})"


@dataclass(frozen=True)
class Contract:
    """What every target of one kind must be; the registry checks it at registration.

    `protocol` (a `runtime_checkable` `typing.Protocol`) names the members the pipelines
    call. A target must be a class, a subclass of `base` when the kind has one, and define or
    inherit every protocol member (an annotation counts, for attributes set in `__init__`).
    `stubs` are members that `base` / `defaults` only stub (they raise NotImplementedError): a
    target still inheriting one of those does not implement it. `defaults` is the class to
    subclass for the optional members (messages name it; `base` when not given).
    Called with a target: '' when it fits, else what is wrong with it.
    """

    kind: str
    protocol: type
    base: type | None = None
    defaults: type | None = None
    stubs: tuple[str, ...] = ()

    @property
    def members(self) -> tuple[str, ...]:
        return protocol_members(self.protocol)

    @property
    def template(self) -> type | None:
        """The class a component subclasses to get the optional members for free."""
        return self.defaults or self.base

    def required(self) -> tuple[str, ...]:
        """Members every component writes itself: stubs, and those the template lacks or
        only annotates (an instance attribute the component's `__init__` must set)."""
        template = self.template
        return tuple(m for m in self.members if template is None or m in self.stubs
                     or not _has_value(_lookup(template, m)))

    def __call__(self, target: Any) -> str:
        base = self.base
        if not inspect.isclass(target):
            needs = f" subclassing {public_name(base)}" if base is not None else ""
            return f"{_a(self.kind)} must be a class{needs}{self._hint(target)}"
        if base is not None and not issubclass(target, base):
            return f"{_a(self.kind)} class must subclass {public_name(base)}{self._hint(target)}"
        missing = [m for m in self.members if self._unimplemented(target, m)]
        if missing:
            members = ", ".join(_signature(self.protocol, m) for m in missing)
            return (f"it does not implement {members} of the {self.kind} contract "
                    f"{public_name(self.protocol)}{self._hint(target)}")
        return ""

    def _hint(self, target: Any) -> str:
        """Which class gives the defaults, when it is not `base` (the message names that one
        already) and the target does not subclass it yet."""
        template = self.template
        if template is None or template is self.base or (
                inspect.isclass(target) and issubclass(target, template)):
            return ""
        return f" (subclass {public_name(template)} for the defaults)"

    def _unimplemented(self, target: type, member: str) -> bool:
        """Absent, or still the stub `base` / `defaults` define for it."""
        value = _lookup(target, member)
        if value is _ABSENT:
            return True
        stubs = [_lookup(owner, member) for owner in (self.base, self.defaults)
                 if owner is not None and member in self.stubs]
        return any(value is stub for stub in stubs if _has_value(stub))


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

    `contract` (a `Contract`: the kind's `typing.Protocol`, base class and stubs) is set by
    the package that defines the kind's base class, with `set_contract`; every registration,
    built-in or plugin, is checked against it (`contract_problems`). Without one, a target
    must be a class or a factory function.
    """

    def __init__(self, kind: str, *, builtins: str | Callable[[Registry], object] | None = None,
                 plugin_group: str | None = None,
                 loader: Callable[[Registry], object] | None = None,
                 singular: str | None = None) -> None:
        self.kind = kind
        self.singular = singular or _singular(kind)
        #: entry-point group third-party components of this kind are discovered from
        self.plugin_group = plugin_group
        self.contract: Contract | None = None
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
        """Register `component`; raises when its target breaks the contract or its name clashes."""
        problem = self.contract_problems(component.target)
        if problem:
            raise RegistryError(
                f"{self.singular} '{component.name}' from {component.source} cannot be "
                f"registered: {problem}")
        existing = self._components.get(component.name)
        if existing is not None and existing.target is not component.target:
            raise RegistryError(
                f"{self.kind}: '{component.name}' from {component.source} clashes with the one "
                f"from {existing.source}; register it under a qualified name such as "
                f"'{component.source}:{component.name}'"
            )
        self._components[component.name] = component

    def set_contract(self, protocol: type, *, base: type | None = None,
                     defaults: type | None = None, stubs: Iterable[str] = ()) -> None:
        """Check every target of this kind against `protocol` from now on (see `Contract`).

        Components registered before the contract was set are checked too, so the order in
        which a kind's modules are imported cannot let a non-conforming one through.
        """
        self.contract = Contract(self.singular, protocol, base, defaults, tuple(stubs))
        for component in list(self._components.values()):
            problem = self.contract(component.target)
            if problem:
                del self._components[component.name]
                raise RegistryError(f"{self.singular} '{component.name}' from "
                                    f"{component.source} breaks the contract: {problem}")

    def contract_problems(self, target: Any) -> str:
        """'' when `target` may be registered in this registry, else why not."""
        if self.contract is not None:
            return self.contract(target)
        if isinstance(target, ModuleType) or not (inspect.isclass(target)
                                                  or inspect.isroutine(target)):
            return "expected a class or a factory function called as f(*args, params=typed)"
        return ""

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
