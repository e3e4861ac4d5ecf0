"""Generate the YAML reference and the model zoo from the code, so they cannot drift.

* `docs/reference/parameters.md`: every typed parameter block (`FeaturesConfig`, and the
  `<Name>Params` model of every `recflow.pipelines.<name>.params` module), with each field's
  name, type, default, constraints and description, nested models included.
* `docs/reference/models.md`: every component of every registry (ranking models, retrieval
  models, tokenizers, item encoders, losses; plugins included) and its parameter schema.

Runs as a mkdocs hook (`hooks:` in mkdocs.yml, on every `mkdocs build` / `serve`) and as a
script: `python docs/gen_reference.py [OUT_DIR]`. The pages are build outputs (git-ignored).
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import pkgutil
import re
import sys
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

DOCS = Path(__file__).resolve().parent
PAGES = ("parameters.md", "models.md")

# Blocks whose model does not live in recflow.pipelines.<block>.params as <Block>Params.
EXPLICIT_BLOCKS = {"dataset": "recflow.datasets.declaration:DatasetDeclaration",
                   "preprocessing": "recflow.features.config:FeaturesConfig"}


@dataclass(frozen=True)
class Block:
    key: str  # top-level YAML key, also the pipeline name
    file: str  # conf/base/parameters_<key>.yml
    schema: type[BaseModel]


@dataclass(frozen=True)
class FieldDoc:
    name: str
    type: str
    default: str
    constraints: str
    description: str


# --------------------------------------------------------------------------- discovery
def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def parameter_blocks() -> list[Block]:
    """The typed block of every pipeline: explicit ones, then `pipelines/<name>/params.py`."""
    import recflow.pipelines

    blocks = {key: _load(path) for key, path in EXPLICIT_BLOCKS.items()}
    for info in pkgutil.iter_modules(recflow.pipelines.__path__):
        if not info.ispkg or info.name in blocks:
            continue
        try:
            module = importlib.import_module(f"recflow.pipelines.{info.name}.params")
        except ModuleNotFoundError as exc:
            if exc.name == f"recflow.pipelines.{info.name}.params":
                continue  # a pipeline without typed parameters
            raise
        schema = getattr(module, f"{_camel(info.name)}Params", None)
        if schema is None:
            raise LookupError(
                f"{module.__name__} defines no {_camel(info.name)}Params; name the typed "
                f"`{info.name}` block so, or add it to EXPLICIT_BLOCKS in {__file__}"
            )
        blocks[info.name] = schema
    return [Block(key, f"parameters_{key}.yml", schema) for key, schema in blocks.items()]


def registries() -> list[tuple[str, Any]]:
    """(title, registry) for every component registry, built-ins and plugins loaded."""
    from recflow.registry import ALL

    return list(ALL)


# --------------------------------------------------------------------------- formatting
def _is_schema(obj: Any) -> bool:
    return inspect.isclass(obj) and (issubclass(obj, BaseModel) or dataclasses.is_dataclass(obj))


def type_name(ann: Any) -> str:
    """A short, readable rendering of a type annotation."""
    if ann is None or ann is type(None):
        return "null"
    if ann is Any:
        return "any"
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a!r}`".replace("'", '"') for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]"
    if _is_schema(ann):
        return f"[{ann.__name__}](#{ann.__name__.lower()})"
    if inspect.isclass(ann) and issubclass(ann, enum.Enum):
        return " \\| ".join(f'`"{m.value}"`' for m in ann)
    return getattr(ann, "__name__", str(ann))


def _value(value: Any) -> str:
    if isinstance(value, BaseModel):
        return f"see [{type(value).__name__}](#{type(value).__name__.lower()})"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        value = value.value
    return f"`{value!r}`".replace("'", '"')


_SYMBOLS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "min length",
            "max_length": "max length", "multiple_of": "multiple of"}


def _constraints(metadata: Iterable[Any], ann: Any) -> str:
    """`≥ 1, ≤ 10` from a field's metadata; `items > 0` for constrained elements."""
    out = _bounds(metadata)
    if typing.get_origin(ann) is typing.Annotated:
        out += _bounds(typing.get_args(ann)[1:])
    for arg in typing.get_args(ann):  # list[PositiveInt], PositiveInt | None, ...
        if typing.get_origin(arg) is typing.Annotated:
            inner = _bounds(typing.get_args(arg)[1:])
            is_union = typing.get_origin(ann) in (typing.Union, types.UnionType)
            out += inner if is_union else [f"items {b}" for b in inner]
    return ", ".join(dict.fromkeys(out))


def _bounds(metadata: Iterable[Any]) -> list[str]:
    out = []
    for item in metadata:
        for attr, symbol in _SYMBOLS.items():
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{symbol} {value}")
    return out


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def fields_of(schema: type) -> list[FieldDoc]:
    """Name, type, default, constraints, description of each field of a pydantic model or dataclass."""
    docs = []
    if issubclass(schema, BaseModel):
        for name, info in schema.model_fields.items():
            if info.default_factory is not None:
                default = _value(info.default_factory())
            elif info.default is PydanticUndefined:
                default = "**required**"
            else:
                default = _value(info.default)
            docs.append(FieldDoc(name, type_name(info.annotation), default,
                                 _constraints(info.metadata, info.annotation),
                                 _one_line(info.description)))
        return docs
    hints = typing.get_type_hints(schema, include_extras=True)
    for f in dataclasses.fields(schema):
        if f.default_factory is not dataclasses.MISSING:
            default = _value(f.default_factory())
        elif f.default is dataclasses.MISSING:
            default = "**required**"
        else:
            default = _value(f.default)
        docs.append(FieldDoc(f.name, type_name(hints.get(f.name, f.type)), default,
                             _constraints((), hints.get(f.name)),
                             _one_line(f.metadata.get("description"))))
    return docs


def nested_schemas(schema: type) -> list[type]:
    """Schemas reachable from `schema`'s field types, depth first, without repeats."""
    seen: dict[type, None] = {}

    def walk(ann: Any) -> None:
        if _is_schema(ann):
            if ann not in seen:
                seen[ann] = None
                hints = (ann.model_fields.values() if issubclass(ann, BaseModel)
                         else dataclasses.fields(ann))
                resolved = (typing.get_type_hints(ann, include_extras=True)
                            if not issubclass(ann, BaseModel) else {})
                for f in hints:
                    walk(f.annotation if issubclass(ann, BaseModel)
                         else resolved.get(f.name, f.type))
            return
        for arg in typing.get_args(ann):
            walk(arg)

    walk(schema)
    return list(seen)


def _doc(schema: type) -> str:
    doc = inspect.getdoc(schema) or ""
    inherited = {inspect.getdoc(base) for base in (BaseModel, object)}
    return "" if doc in inherited or doc.startswith(f"{schema.__name__}(") else doc


def schema_table(schema: type) -> list[str]:
    rows = fields_of(schema)
    if not rows:
        return ["*No parameters.*", ""]
    lines = ["| key | type | default | constraints | description |",
             "|---|---|---|---|---|"]
    lines += [f"| `{r.name}` | {r.type} | {r.default} | {r.constraints} | {r.description} |"
              for r in rows]
    return [*lines, ""]


def _schema_section(schema: type, level: str) -> list[str]:
    strict = issubclass(schema, BaseModel) and schema.model_config.get("extra") == "forbid"
    lines = [f'{level} {schema.__name__} {{ #{schema.__name__.lower()} }}', "",
             f"`{schema.__module__}.{schema.__qualname__}`"
             + (" · unknown keys are rejected" if strict else ""), ""]
    if doc := _doc(schema):
        lines += [doc, ""]
    return lines + schema_table(schema)


# --------------------------------------------------------------------------- pages
_HEADER = ("<!-- Generated by docs/gen_reference.py from the code on every docs build; "
           "do not edit. -->\n\n")


def parameters_page() -> str:
    blocks = parameter_blocks()
    lines = ["# YAML parameter reference", "",
             "Every `parameters_<pipeline>.yml` under `conf/<env>/` holds one top-level block, "
             "validated by the typed model below before any node runs: unknown keys, wrong "
             "types and out-of-range values fail with the YAML path. Generated from the "
             "pydantic models, so it matches the code of this build. An env's files hold "
             "only what differs from `conf/base`, merged key by key (`_replace: true`, `null`: "
             "[envs as deltas](../concepts.md#2-the-declarative-yaml)); the merged block is "
             "what is validated.", "",
             "| YAML block | file | model |", "|---|---|---|"]
    lines += [f"| `{b.key}:` | `conf/base/{b.file}` | [{b.schema.__name__}]"
              f"(#{b.schema.__name__.lower()}) |" for b in blocks]
    lines.append("")
    documented: set[type] = set()
    for block in blocks:
        lines += [f"## `{block.key}` — `{block.file}`", ""]
        for schema in nested_schemas(block.schema):
            if schema in documented:
                continue
            documented.add(schema)
            lines += _schema_section(schema, "###")
    lines += ["## Component parameters", "",
              "The `params:` mapping of an entry is validated against the schema of the "
              "registered component it names; see the [model zoo](models.md).", ""]
    return _HEADER + "\n".join(lines)


def models_page() -> str:
    lines = ["# Model zoo", "",
             "Every registered component, built-ins and installed plugins alike, generated "
             "from the registries (`recflow.registry`, `recflow.models.retrieval`). A YAML "
             "entry names one of these and sets its `params:`; unknown names and keys are "
             "rejected with the list of allowed ones.", ""]
    for title, registry in registries():
        components = list(registry)
        lines += [f"## {title}", "",
                  f"Registry `{registry.kind}`"
                  + (f", plugins via entry-point group `{registry.plugin_group}`"
                     if registry.plugin_group else "") + ".", ""]
        if not components:
            lines += ["*None registered yet.*", ""]
            continue
        lines += ["| name | what | from | params |", "|---|---|---|---|"]
        for c in components:
            names = ", ".join(f"`{f.name}`" for f in fields_of(c.params)) or "—"
            lines.append(f"| [`{c.name}`](#{registry.kind}-{c.name}) | {_one_line(c.summary)} "
                         f"| `{c.source}` | {names} |")
        lines.append("")
        for c in components:
            lines += [f"### `{c.name}` {{ #{registry.kind}-{c.name} }}", "",
                      f"{_one_line(c.summary)}", "",
                      f"Provided by `{c.source}`; parameters: `{c.params.__module__}."
                      f"{c.params.__qualname__}`.", ""]
            lines += schema_table(c.params)
            for nested in nested_schemas(c.params)[1:]:
                lines += [f"`{nested.__name__}`:", "", *schema_table(nested)]
    return _HEADER + "\n".join(lines)


def generate(out_dir: Path | str = DOCS / "reference") -> list[Path]:
    """Write the reference pages (only when their text changed); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in zip(PAGES, (parameters_page(), models_page()), strict=True):
        path = out / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


# --------------------------------------------------------------------------- mkdocs hooks
def _nav_files(nav: Any) -> set[str]:
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, dict):
        return set().union(*(_nav_files(v) for v in nav.values()))
    if isinstance(nav, list):
        return set().union(*(_nav_files(v) for v in nav)) if nav else set()
    return set()


def on_config(config: Any) -> Any:
    """Append top-level pages missing from `nav` under "Guides" (a new guide is never lost)."""
    nav = config["nav"] or []
    listed = _nav_files(nav)
    missing = sorted(p.name for p in Path(config["docs_dir"]).glob("*.md") if p.name not in listed)
    if missing:
        guides = next((item["Guides"] for item in nav
                       if isinstance(item, dict) and "Guides" in item), None)
        if guides is None:
            guides = []
            nav.append({"Guides": guides})
        guides.extend(missing)
    return config


def on_pre_build(config: Any) -> None:
    generate(Path(config["docs_dir"]) / "reference")


_LINK = re.compile(r"\[([^\]]+)\]\((\.\./[^)#\s]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Links from a page to repository files outside docs/ become `path` mentions.

    The site is read away from the repository, so such a link could only break; a target
    that does not exist is left alone, and mkdocs --strict reports it.
    """
    docs_dir = Path(config["docs_dir"]).resolve()
    repo = docs_dir.parent
    page_dir = (docs_dir / page.file.src_path).parent

    def replace(match: re.Match[str]) -> str:
        target = (page_dir / match.group(2)).resolve()
        if target.is_relative_to(docs_dir) or not target.exists():
            return match.group(0)
        text = match.group(1)
        return f"{text} (repository file `{target.relative_to(repo).as_posix()}`)"

    return _LINK.sub(replace, markdown)


if __name__ == "__main__":
    for page in generate(sys.argv[1] if len(sys.argv) > 1 else DOCS / "reference"):
        sys.stdout.write(f"wrote {page}\n")
