"""Typed `semantic_ids` parameters; Kedro validates them before any node runs."""

from __future__ import annotations

from pydantic import Field

from recflow.config_types import StrictModel
from recflow.registry import ITEM_ENCODERS, TOKENIZERS
from recflow.registry.entry import ComponentEntry

_FILE = "parameters_semantic_ids.yml"


class EncoderEntry(ComponentEntry):
    """The item encoder: a registered name (ITEM_ENCODERS.list()) and its params."""

    registry = ITEM_ENCODERS
    source = _FILE
    name: str = "tfidf_svd"


class TokenizerEntry(ComponentEntry):
    """One tokenizer to fit: a registered name (TOKENIZERS.list()) and its params."""

    registry = TOKENIZERS
    source = _FILE
    renamed_from = "tokenizer"  # `tokenizer:` elsewhere names an entry of this mapping


class SemanticIdsParams(StrictModel):
    """The whole `semantic_ids` block."""

    encoder: EncoderEntry
    tokenizers: dict[str, TokenizerEntry] = Field(min_length=1)
    purity_columns: list[str] = Field(
        default_factory=lambda: ["category"],
        description="Item columns the first code's purity is measured against.")
