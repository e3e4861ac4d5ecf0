"""Small builders shared by tests (no data files needed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from recflow.datasets.declaration import DatasetDeclaration, load_declaration
from recflow.datasets.prepare import join_tables, prepare_log, prepare_side
from recflow.features import FeatureSpec, FieldSpec

REPO = Path(__file__).resolve().parents[1]


def env_parameters(env: str) -> dict:
    """The resolved parameters of `conf/ENV` layered on conf/base, as `kedro run --env ENV`
    sees them (the project's config loader: an env is a delta of base)."""
    from recflow.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    return CONFIG_LOADER_CLASS(conf_source=str(REPO / "conf"), env=env,
                               **CONFIG_LOADER_ARGS)["parameters"]


def embedded_declaration() -> DatasetDeclaration:
    """conf/base's `dataset` block: the embedded data's declaration."""
    return load_declaration(yaml.safe_load(
        (REPO / "conf/base/parameters_dataset.yml").read_text()))


def embedded_events(interactions: pd.DataFrame, users: pd.DataFrame,
                    items: pd.DataFrame) -> pd.DataFrame:
    """What the preprocessing pipeline's prepare + join nodes make of the embedded tables."""
    decl = embedded_declaration()
    return join_tables(prepare_log(decl, {"raw_interactions": interactions}), decl,
                       {"users": prepare_side(decl, "users", users),
                        "items": prepare_side(decl, "items", items)})


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
