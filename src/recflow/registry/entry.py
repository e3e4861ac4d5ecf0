"""One YAML entry naming a registered component: ``{name: <registered>, params: {...}}``.

The item encoder, each semantic-ID tokenizer and each distillation loss are declared
this way; a kind subclasses `ComponentEntry` and sets `registry`. Model entries (ranking,
retrieval, distillation teacher / student) name theirs with ``model:`` and carry more
keys (trainer overrides, the semantic-ID entry a TIGER decodes, ...). A key that refers
to *another YAML entry* is never ``name``: ``tokenizer: rq_kmeans`` in a retrieval entry
or a ``semantic_prefix`` field means "the entry rq_kmeans of semantic_ids.tokenizers".
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from recflow.config_types import StrictModel
from recflow.registry.core import Registry


class ComponentEntry(StrictModel):
    """A registered component by name, and its params (validated against its schema)."""

    registry: ClassVar[Registry]
    #: the YAML file named in errors
    source: ClassVar[str] = "parameters.yml"

    name: str = Field(description="Registered name (see `recflow list`).")
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_and_valid(self) -> ComponentEntry:
        self.registry.get(self.name).validate_params(
            self.params, where=f"{self.source}: {self.registry.singular} '{self.name}' params")
        return self

    def create(self, *args: Any, where: str = "params", **kwargs: Any) -> Any:
        """The component built with these params."""
        return self.registry.create(self.name, *args, params=self.params, where=where, **kwargs)
