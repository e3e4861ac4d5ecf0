"""Exotic raw-data checks, for what the dataset declaration cannot say.

Columns, types, keys and bounds of every raw table are declared in YAML
(`parameters_dataset.yml`) and checked by pandera schemas built from it
(`recflow.datasets.schema`). A check that relates several columns in a way the
declaration has no words for is a pandera model named by a catalog entry's
`validator:` key, like this one on the embedded log.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa


class PurchaseImpliesClick(pa.DataFrameModel):
    """A conversion log's funnel: no purchase without a click."""

    class Config:
        strict = False

    @pa.dataframe_check(error="purchase implies click: rows with purchase=1 must have click=1")
    @classmethod
    def purchase_implies_click(cls, df: pd.DataFrame) -> pd.Series | bool:
        if not {"purchase", "click"} <= set(df.columns):
            return True  # the declaration reports missing label columns
        return ~((df["purchase"] == 1) & (df["click"] == 0))
