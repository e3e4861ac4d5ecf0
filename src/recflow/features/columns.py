"""The raw columns the preprocessing YAML names, checked against the joined data before fitting.

One message lists every missing column with the YAML key that names it, and says
when a column is a role the dataset declaration does not declare.
"""

from __future__ import annotations

import pandas as pd

from recflow.datasets.declaration import ITEM, TIME, USER
from recflow.features.config import FeaturesConfig

ROLE_OF = {USER: "user", ITEM: "item", TIME: "time"}


def _missing_columns(events: pd.DataFrame, params: FeaturesConfig) -> dict[str, str]:
    """YAML key -> raw column it names, for every column the joined data lacks."""
    needed: dict[str, str] = {f"preprocessing.labels[{i}]": c for i, c in enumerate(params.labels)}
    for name, cfg in params.fields.items():
        key = f"preprocessing.fields.{name}"
        if cfg.transform == "hash_cross":
            needed.update({f"{key}.columns[{i}]": c for i, c in enumerate(cfg.columns)})
        elif cfg.transform == "sequence":
            needed[f"{key}.event"] = cfg.event
        else:
            needed[key + (".column" if cfg.column else "")] = cfg.column or name
    return {k: c for k, c in needed.items() if c not in events.columns}


def check_columns(events: pd.DataFrame, params: FeaturesConfig,
                  log: str = "raw_interactions") -> None:
    """Every column the YAML names exists in the joined raw data (`log` + users + items)."""
    missing = _missing_columns(events, params)
    for name, cfg in params.fields.items():
        if cfg.transform == "sequence":  # histories are per user, in time
            missing.update({f"preprocessing.fields.{name} (a behaviour sequence)": c
                            for c in (USER, TIME) if c not in events.columns})
    if missing:
        listed = "; ".join(f"{key} -> column '{column}'" + (
            f" (the {ROLE_OF[column]} role: dataset.events.{ROLE_OF[column]} is not declared)"
            if column in ROLE_OF else "") for key, column in missing.items())
        raise KeyError(
            f"parameters_preprocessing.yml names column(s) that the joined raw data "
            f"({log} + its declared side tables) does not have: {listed}; "
            f"available: {sorted(map(str, events.columns))}"
        )
