"""Raw request records rebuilt from the log: what a client would send for a split.

Preprocessing stores a few of them in `feature_spec.json` as the model's input
example (the bundle's `input_example.json`, scored by `recflow serve --check`);
the train/serve-skew tests and the serving benchmark send whole splits of them.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from recflow.features import FeatureSpec
from recflow.features.sequences import build_histories
from recflow.features.split import SPLIT_CODES, recorded_splits

#: records in a bundle's input example
EXAMPLE_RECORDS = 5


def raw_records(events: pd.DataFrame, spec: FeatureSpec, split: str = "test") -> pd.DataFrame:
    """`events` = joined raw impressions (preprocessing's `join_events`), all splits.

    Each sequence field becomes a plain list of raw ids (oldest first).
    """
    rows = events.loc[recorded_splits(events, spec.split) == SPLIT_CODES[split]]
    return _with_histories(events, rows, spec)


def input_example(events: pd.DataFrame, spec: FeatureSpec, raw_names: dict[str, str],
                  n: int = EXAMPLE_RECORDS) -> list[dict[str, Any]]:
    """The first `n` test records as JSON objects keyed as the user's files spell them.

    Only the columns the spec reads; missing values are `null`. Empty when the split
    has no test rows.
    """
    head = events.loc[recorded_splits(events, spec.split) == SPLIT_CODES["test"]].head(n)
    if head.empty:
        return []
    records = _with_histories(events, head, spec)
    columns = [c for c in spec.raw_columns() if c in records]
    named = records[columns].rename(columns=raw_names)
    return json.loads(named.to_json(orient="records"))


def _with_histories(events: pd.DataFrame, rows: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """`rows` plus each sequence field as the list of raw ids the log gives it at that time."""
    records = rows.copy()
    for f in spec.by_kind("sequence"):
        matrix = build_histories(events, f.length, item=spec[f.shares_vocab_with].columns[0],
                                 event=f.params["event"], queries=rows)
        records[f.name] = [[v for v in row if v is not None] for row in matrix]
    return records.reset_index(drop=True)
