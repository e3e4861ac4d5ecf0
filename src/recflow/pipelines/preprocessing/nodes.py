"""Preprocessing nodes: pure functions over DataFrames; the catalog does the I/O."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from recflow.datasets.declaration import ITEM, TIME, DatasetDeclaration
from recflow.datasets.prepare import handle_duplicates, join_tables, prepare_log, prepare_side
from recflow.evaluation import key_columns, split_statistics
from recflow.features import FeaturesConfig, FeatureSpec
from recflow.features.columns import check_columns
from recflow.features.records import input_example
from recflow.features.sequences import build_histories
from recflow.features.split import SPLIT_CODES, recorded_splits, split_record
from recflow.features.transforms import PAD
from recflow.schemas.expectations import ATTRS_KEY, quality_summary
from recflow.tokenization.semantic_ids import SemanticIdTable

logger = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
SID_INPUT_PREFIX = "sid__"
#: model-input key columns, written for the roles the data has


def prepare_interactions(
    dataset: DatasetDeclaration, **tables: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The declared event log, validated and in canonical shape (`recflow.datasets.prepare`),
    with exact duplicates handled as declared; and what the raw log held, for data_quality."""
    where = dataset.events.table or "+".join(dataset.events.catalog_entries())
    return handle_duplicates(prepare_log(dataset, tables), dataset, where)


def prepare_users(dataset: DatasetDeclaration, raw: pd.DataFrame) -> pd.DataFrame:
    return prepare_side(dataset, "users", raw)


def prepare_items(dataset: DatasetDeclaration, raw: pd.DataFrame) -> pd.DataFrame:
    return prepare_side(dataset, "items", raw)


def item_catalogue(interactions: pd.DataFrame) -> pd.DataFrame:
    """The distinct items of the log: the catalogue when no items table is declared."""
    return pd.DataFrame({ITEM: interactions[ITEM].drop_duplicates().sort_values().to_numpy()})


def join_events(
    interactions: pd.DataFrame, dataset: DatasetDeclaration, **side: pd.DataFrame
) -> pd.DataFrame:
    """The log enriched with the declared side tables (`users`, `items`), in time order."""
    return join_tables(interactions, dataset, side)


def split_by_time(events: pd.DataFrame, params: FeaturesConfig) -> dict[str, Any]:
    """The split record: strategy, its parameters, rows per split (+ temporal cut-offs).

    Transforms select rows again from this record (`recorded_splits`): temporal from
    the saved cut-offs, leave-one-out / random by recomputing on the same `events`.
    """
    record, _ = split_record(events, params.split)
    logger.info("%s split %s", params.split.strategy, record)
    return record


def fit_feature_spec(
    events: pd.DataFrame, cutoffs: dict[str, Any], params: FeaturesConfig,
    dataset: DatasetDeclaration, **semantic_ids: pd.DataFrame,
) -> dict[str, Any]:
    """Fit every transform on the train split only and return the spec as JSON data.

    Beside the fields, the result carries the serving contract (`raw_names`, the
    declared numeric bounds) and a few raw test records as the bundle's input example.
    `semantic_ids`: `sid__<tokenizer>` -> that tokenizer's semantic-ID table, for
    `semantic_prefix` fields (the pipeline passes exactly the tables they name).
    """
    check_columns(events, params)
    train = recorded_splits(events, cutoffs) == SPLIT_CODES["train"]
    tables = {key.removeprefix(SID_INPUT_PREFIX): SemanticIdTable.from_frame(frame)
              for key, frame in semantic_ids.items()}
    # the mask filters each column inside `fit`: no copy of the whole train split
    spec = FeatureSpec.from_config(params, semantic_ids=tables).fit(events, rows=train)
    spec.split = {k: v for k, v in cutoffs.items() if k != "rows"}
    spec.rows = dict(cutoffs["rows"])
    example = input_example(events, spec, dataset.raw_names())
    return {**spec.to_dict(), **dataset.serving_contract(), "input_example": example}


def _history_ids(events: pd.DataFrame, rows: pd.DataFrame, spec: FeatureSpec) -> dict:
    """Sequence fields as vocabulary ids, built from the log over integer ids (compact)."""
    out = {}
    for f in spec.by_kind("sequence"):
        log = pd.DataFrame({
            "user_id": events["user_id"].to_numpy(),
            "timestamp": events["timestamp"].to_numpy(),
            "click": events[f.params["event"]].to_numpy(),
            "item_id": spec.index_history_source(f.name, events),
        })
        out[f.name] = build_histories(log, f.length, queries=rows, pad=PAD)
    return out


def transform_split(
    events: pd.DataFrame, feature_spec: dict[str, Any], split: str
) -> pd.DataFrame:
    """Model-ready columns for one split: keys, features, labels; bounds stamped in attrs."""
    spec = FeatureSpec.from_dict(feature_spec)
    rows = events.loc[recorded_splits(events, spec.split) == SPLIT_CODES[split]]
    out = spec.model_input(rows, history_ids=_history_ids(events, rows, spec))
    out = out.reset_index(drop=True)
    out.attrs[ATTRS_KEY] = _bounds(events, spec, split)
    return out


def _bounds(events: pd.DataFrame, spec: FeatureSpec, split: str) -> dict[str, Any]:
    """What the split's expectations check: its time window (temporal splits only; leave-
    one-out / random have none) and the largest valid index of every categorical column."""
    window = {
        "train": (int(events[TIME].min()), spec.split["train_end"]),
        "valid": (spec.split["train_end"], spec.split["valid_end"]),
        "test": (spec.split["valid_end"], int(events[TIME].max()) + 1),
    }[split] if "train_end" in spec.split else None
    return {
        "split": split,
        "time_window": list(window) if window else None,
        "max_index": {column: f.vocab_size - 1 for f in spec.fields if f.vocab_size is not None
                      for column in f.output_columns()},
    }


def transform_train(events: pd.DataFrame, feature_spec: dict[str, Any]) -> pd.DataFrame:
    return transform_split(events, feature_spec, "train")


def transform_valid(events: pd.DataFrame, feature_spec: dict[str, Any]) -> pd.DataFrame:
    return transform_split(events, feature_spec, "valid")


def transform_test(events: pd.DataFrame, feature_spec: dict[str, Any]) -> pd.DataFrame:
    return transform_split(events, feature_spec, "test")


def report_data_quality(
    train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame, raw: dict[str, Any]
) -> dict[str, Any]:
    """Collect the great-expectations results of every split; fail the run if any failed.

    `raw`: what `prepare_interactions` found in the raw log (rows, exact duplicates)."""
    results = {name: quality_summary(frame, f"model_input_{name}")
               for name, frame in zip(SPLITS, (train, valid, test), strict=True)}
    report = {"success": all(r["success"] for r in results.values()), "raw": raw,
              "splits": results, "statistics": split_statistics(
                  {"train": train, "valid": valid, "test": test}, **key_columns(train))}
    if not report["success"]:
        failed = {n: [f["expectation"] for f in r["failed"]] for n, r in results.items()}
        raise ValueError(f"data quality checks failed: {failed}")
    return report
