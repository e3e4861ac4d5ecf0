"""Typed `semantic_ids` parameters; Kedro validates them before any node runs."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from recflow.config_types import StrictModel
from recflow.registry import ITEM_ENCODERS, TOKENIZERS

_FILE = "parameters_semantic_ids.yml"


class EncoderEntry(StrictModel):
    """The item encoder: a registered name (ITEM_ENCODERS.list()) and its params."""

    name: str = "tfidf_svd"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid(self) -> EncoderEntry:
        ITEM_ENCODERS.get(self.name).validate_params(self.params, where=f"{_FILE}: encoder.params")
        return self


class TokenizerEntry(StrictModel):
    """One tokenizer to fit: a registered name (TOKENIZERS.list()) and its params."""

    tokenizer: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid(self) -> TokenizerEntry:
        TOKENIZERS.get(self.tokenizer).validate_params(
            self.params, where=f"{_FILE}: tokenizers.<{self.tokenizer}>.params")
        return self


class SemanticIdsParams(StrictModel):
    """The whole `semantic_ids` block."""

    encoder: EncoderEntry
    tokenizers: dict[str, TokenizerEntry] = Field(min_length=1)
    purity_columns: list[str] = Field(
        default_factory=lambda: ["category"],
        description="Item columns the first code's purity is measured against.")
