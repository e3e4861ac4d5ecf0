"""Raw request records rebuilt from the log: what a client would send for a split.

Used by the train/serve-skew tests and the serving benchmark: joined raw columns
plus each sequence field as a plain list of raw ids (most recent last).
"""

from __future__ import annotations

import pandas as pd

from recflow.features import FeatureSpec
from recflow.features.sequences import build_histories
from recflow.features.split import SPLIT_CODES, recorded_splits


def raw_records(events: pd.DataFrame, spec: FeatureSpec, split: str = "test") -> pd.DataFrame:
    """`events` = joined raw impressions (preprocessing's `join_events`), all splits."""
    rows = events.loc[recorded_splits(events, spec.split) == SPLIT_CODES[split]]
    records = rows.copy()
    for f in spec.by_kind("sequence"):
        matrix = build_histories(events, f.length, item=spec[f.shares_vocab_with].columns[0],
                                 event=f.params["event"], queries=rows)
        records[f.name] = [[v for v in row if v is not None] for row in matrix]
    return records.reset_index(drop=True)
