"""Small builders shared by tests (no data files needed)."""

from __future__ import annotations

from recflow.features import FeatureSpec, FieldSpec


def field(name: str, kind: str, vocab: int | None = None, **params) -> FieldSpec:
    """A fitted-looking FieldSpec without fitting anything."""
    transform = {"categorical": "vocab", "numeric": "standardize", "sequence": "sequence"}[kind]
    return FieldSpec(name=name, kind=kind, transform=transform, params=params,
                     columns=[] if kind == "sequence" else [name], vocab_size=vocab)


def tiny_spec(n_users: int, n_items: int, n_categories: int, length: int) -> FeatureSpec:
    """user, item, category, price and an item-history sequence; labels click + purchase."""
    return FeatureSpec(
        fields=[
            field("user_id", "categorical", n_users),
            field("item_id", "categorical", n_items),
            field("category", "categorical", n_categories),
            field("price", "numeric"),
            field("hist_item_id", "sequence", n_items, of="item_id", length=length),
        ],
        labels=["click", "purchase"],
    )
