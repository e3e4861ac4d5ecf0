"""Wiring of the preprocessing pipeline; datasets are declared in conf/*/catalog.yml."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node

from recflow.datasets.declaration import load_declaration
from recflow.pipelines.preprocessing import nodes


def pipeline_kwargs(parameters: dict[str, Any]) -> dict[str, Any]:
    """`create_pipeline` arguments from the active env's parameters (for pipeline_registry.py).

    `semantic_prefix` fields name a tokenizer of another YAML file, so the cross-file
    reference is checked here, before any node runs.
    """
    declaration = load_declaration(parameters)
    fields = (parameters.get("preprocessing") or {}).get("fields") or {}
    entries = list((parameters.get("semantic_ids") or {}).get("tokenizers") or {})
    names: list[str] = []
    for name, cfg in fields.items():
        if not isinstance(cfg, dict) or cfg.get("transform") != "semantic_prefix":
            continue
        tokenizer = cfg.get("tokenizer")
        if tokenizer not in entries:
            raise ValueError(
                f"parameters_preprocessing.yml: preprocessing.fields.{name}.tokenizer: "
                f"{tokenizer!r} is not an entry of semantic_ids.tokenizers "
                f"(parameters_semantic_ids.yml); entries: {entries}")
        names.append(tokenizer)
    return {"semantic_tokenizers": list(dict.fromkeys(names)),
            "log_tables": declaration.events.catalog_entries(),
            "side_tables": {name: getattr(declaration, name).table
                            for name in ("users", "items") if getattr(declaration, name)},
            "with_items": "item" in declaration.roles}


def create_pipeline(semantic_tokenizers: list[str] | None = None,
                    log_tables: list[str] | None = None,
                    side_tables: dict[str, str] | None = None, with_items: bool = True,
                    **kwargs) -> Pipeline:
    """The declared tables -> canonical `interactions` / `users` / `items` -> `events` -> splits.

    `log_tables`: catalog entries of the event log (one, or train/valid/test);
    `side_tables`: "users" / "items" -> catalog entry, for those the declaration has;
    `with_items`: the log has an item key (without an items table, the catalogue is the
    distinct items of the log);
    `semantic_tokenizers`: tables `semantic_ids.<name>.table` that `semantic_prefix` fields read.
    """
    log_tables = log_tables or ["raw_interactions"]
    side_tables = {"users": "raw_users", "items": "raw_items"} if side_tables is None \
        else side_tables
    tables = {f"{nodes.SID_INPUT_PREFIX}{name}": f"semantic_ids.{name}.table"
              for name in semantic_tokenizers or []}
    prepare_side = {"users": nodes.prepare_users, "items": nodes.prepare_items}
    return Pipeline(
        [
            node(nodes.prepare_interactions,
                 {"dataset": "params:dataset", **{t: t for t in log_tables}},
                 ["interactions", "raw_quality"], name="prepare_interactions"),
            *(node(prepare_side[name], ["params:dataset", table], name,
                   name=f"prepare_{name}") for name, table in side_tables.items()),
            *([node(nodes.item_catalogue, "interactions", "items", name="item_catalogue")]
              if "items" not in side_tables and with_items else []),
            node(nodes.join_events,
                 {"interactions": "interactions", "dataset": "params:dataset",
                  **{name: name for name in side_tables}},
                 "events", name="join_events"),
            node(nodes.split_by_time, ["events", "params:preprocessing"], "split_cutoffs",
                 name="split_by_time"),
            node(nodes.fit_feature_spec,
                 {"events": "events", "cutoffs": "split_cutoffs", "params": "params:preprocessing",
                  "dataset": "params:dataset", **tables},
                 "feature_spec", name="fit_feature_spec"),
            node(nodes.transform_train, ["events", "feature_spec"], "model_input_train",
                 name="transform_train"),
            node(nodes.transform_valid, ["events", "feature_spec"], "model_input_valid",
                 name="transform_valid"),
            node(nodes.transform_test, ["events", "feature_spec"], "model_input_test",
                 name="transform_test"),
            node(nodes.report_data_quality,
                 ["model_input_train", "model_input_valid", "model_input_test", "raw_quality"],
                 "data_quality", name="report_data_quality"),
        ]
    )
