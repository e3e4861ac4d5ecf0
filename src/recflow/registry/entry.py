"""One YAML entry naming a registered component: ``{name: <registered>, params: {...}}``.

Every YAML entry that names a registered component is one: ranking, retrieval and
distillation models, the item encoder, each semantic-ID tokenizer, each distillation
loss. A kind subclasses `ComponentEntry`, sets `registry`, and adds its own keys (a
model's trainer overrides, the semantic-ID entry a TIGER decodes, ...). A key that refers
to *another YAML entry* is never ``name``: ``tokenizer: rq_kmeans`` in a retrieval entry
or a ``semantic_prefix`` field means "the entry rq_kmeans of semantic_ids.tokenizers".

Keys that named components before ``name:`` did (``model:``, a tokenizer entry's
``tokenizer:``) are refused with the rename spelled out (`renamed_from`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field, model_validator

from recflow.config_types import StrictModel
from recflow.registry.core import Registry


class ComponentEntry(StrictModel):
    """A registered component by name, and its params (validated against its schema)."""

    registry: ClassVar[Registry]
    #: the YAML file named in errors (None: several files use the kind; Kedro's validation
    #: prefixes the YAML path)
    source: ClassVar[str | None] = "parameters.yml"
    #: the key that named the component before ``name:`` did
    renamed_from: ClassVar[str | None] = None

    name: str = Field(description="Registered name (see `recflow list`).")
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _renamed_key(cls, raw: Any) -> Any:
        if cls.renamed_from:
            refuse_renamed_key(raw, cls.renamed_from, cls.registry.singular, cls.source)
        return raw

    @model_validator(mode="after")
    def _known_and_valid(self) -> ComponentEntry:
        where = f"{self.registry.singular} '{self.name}' params"
        self.registry.get(self.name).validate_params(
            self.params, where=f"{self.source}: {where}" if self.source else where)
        return self

    def create(self, *args: Any, where: str = "params", **kwargs: Any) -> Any:
        """The component built with these params."""
        return self.registry.create(self.name, *args, params=self.params, where=where, **kwargs)

    def typed_params(self) -> BaseModel:
        """`params` validated into the component's own schema."""
        return self.registry.get(self.name).validate_params(self.params)


def refuse_renamed_key(raw: Any, old: str, singular: str, where: str | None) -> None:
    """Raise if the raw YAML entry still names its component with `old` instead of `name`.

    Also beside `name:`: envs are deltas, so an old env's `old:` merges into base's entry.
    `where`: the file, or "file: yaml.path", that holds it.
    """
    if not isinstance(raw, dict) or old not in raw:
        return
    prefix = f"{where}: " if where else ""
    value = raw[old]
    raise ValueError(f"{prefix}`{old}: {value}` is now `name: {value}`: every YAML entry names "
                     f"its registered {singular} with `name:` (renamed 2026-11-30; the rest of "
                     "the entry is unchanged)")
