"""pandera models for the raw datasets, named by the catalog's `validator:` keys.

The base models hold the columns every pipeline relies on; dataset-specific
models (synthetic default data, MovieLens) extend them with their attributes.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series


class _Raw(pa.DataFrameModel):
    class Config:
        strict = False  # extra columns are allowed: the feature YAML decides what is used
        coerce = False


class Users(_Raw):
    """Every user table: a unique, non-null integer id."""

    user_id: Series[int] = pa.Field(nullable=False, unique=True, ge=0)


class Items(_Raw):
    """Every item table: a unique, non-null integer id and a text title."""

    item_id: Series[int] = pa.Field(nullable=False, unique=True, ge=0)
    title: Series[str] = pa.Field(nullable=True)


class Interactions(_Raw):
    """An impression log: who saw what when, and whether they clicked / purchased."""

    user_id: Series[int] = pa.Field(nullable=False, ge=0)
    item_id: Series[int] = pa.Field(nullable=False, ge=0)
    timestamp: Series[int] = pa.Field(nullable=False, ge=0)
    click: Series[int] = pa.Field(isin=[0, 1], nullable=False)
    purchase: Series[int] = pa.Field(isin=[0, 1], nullable=False)

    @pa.dataframe_check(error="purchase implies click: rows with purchase=1 must have click=1")
    @classmethod
    def purchase_implies_click(cls, df: pd.DataFrame) -> pd.Series | bool:
        if not {"purchase", "click"} <= set(df.columns):
            return True  # the missing column is reported by its own column check
        return ~((df["purchase"] == 1) & (df["click"] == 0))

    @pa.dataframe_check(error="the table is empty: at least one row is expected")
    @classmethod
    def not_empty(cls, df: pd.DataFrame) -> bool:
        return len(df) > 0


class SyntheticUsers(Users):
    """recflow's generated users."""

    age_group: Series[str] = pa.Field(nullable=False)
    gender: Series[str] = pa.Field(nullable=False)
    region: Series[str] = pa.Field(nullable=False)
    device: Series[str] = pa.Field(isin=["ios", "android", "web"], nullable=False)


class SyntheticItems(Items):
    """recflow's generated items: a category -> subcategory -> brand hierarchy."""

    category: Series[str] = pa.Field(nullable=False)
    subcategory: Series[str] = pa.Field(nullable=False)
    brand: Series[str] = pa.Field(nullable=False)
    price: Series[float] = pa.Field(gt=0, nullable=False)


class SyntheticInteractions(Interactions):
    """recflow's generated impressions, with dwell time in seconds."""

    dwell: Series[float] = pa.Field(ge=0, nullable=False)


class MovieLensUsers(Users):
    age_group: Series[str] = pa.Field(nullable=False)
    gender: Series[str] = pa.Field(isin=["m", "f"], nullable=False)
    occupation: Series[str] = pa.Field(nullable=False)


class MovieLensItems(Items):
    genres: Series[str] = pa.Field(nullable=False)
    year: Series[float] = pa.Field(nullable=True)


class MovieLensInteractions(Interactions):
    rating: Series[float] = pa.Field(ge=0, le=5, nullable=False)
