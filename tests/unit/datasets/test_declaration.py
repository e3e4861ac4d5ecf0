"""The dataset declaration, its pandera schemas and the canonical tables; every bad input
names the table, column or YAML key, what was expected and a few offending values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recflow.datasets.declaration import DatasetDeclaration, load_declaration
from recflow.datasets.prepare import join_side, prepare_log, prepare_side
from recflow.datasets.scaffold import main as scaffold
from recflow.datasets.schema import RawDataError, table_schema
from recflow.features.config import SplitConfig
from recflow.features.split import assign_splits

REPO = Path(__file__).resolve().parents[3]


def _decl(**events) -> DatasetDeclaration:
    base = {"table": "log", "user": "uid", "item": "iid", "time": "ts",
            "labels": {"click": "clicked"}, "columns": {"price": {"kind": "numeric", "gt": 0}}}
    return DatasetDeclaration.model_validate(
        {"name": "t", "events": base | events,
         "items": {"table": "items", "key": "iid", "columns": {"cat": "categorical"}}})


def _log(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({"uid": ["A1", "A2", "A1", "A3", "A2", "A1"][:n],
                         "iid": ["B1", "B2", "B3", "B1", "B2", "B3"][:n],
                         "ts": ["2024-03-01T10:00:00Z", "2024-03-01T11:00:00Z",
                                "2024-03-02T10:00:00+01:00", "2024-03-03T00:00:00Z",
                                "2024-03-04T00:00:00Z", "2024-03-05T00:00:00Z"][:n],
                         "clicked": [1, 0, 1, 0, 0, 1][:n],
                         "price": [1.0, 2.0, np.nan, 3.0, 4.0, 5.0][:n]})


def test_base_and_movielens_declarations_load() -> None:
    from tests.helpers import env_parameters

    for env in ("local", "movielens"):  # local: conf/base's declaration
        decl = load_declaration(env_parameters(env))
        assert {"user", "item", "time"} <= decl.roles
        assert decl.labels[0] == "click"
    ml = load_declaration(env_parameters("movielens"))
    assert ml.events.labels["click"].threshold == 4


def test_string_ids_iso_times_and_labels_become_canonical() -> None:
    out = prepare_log(_decl(), {"log": _log()})
    assert out["user_id"].tolist() == ["A1", "A2", "A1", "A3", "A2", "A1"]  # strings stay
    assert out["timestamp"].dtype == np.int64
    assert out["timestamp"].iloc[0] == int(pd.Timestamp("2024-03-01T10:00:00Z").timestamp())
    assert out["timestamp"].iloc[2] == int(pd.Timestamp("2024-03-02T09:00:00Z").timestamp())
    assert out["click"].tolist() == [1, 0, 1, 0, 0, 1] and "clicked" not in out


def test_threshold_label_and_epoch_ms() -> None:
    decl = _decl(labels={"click": {"column": "rating", "threshold": 4}},
                 time={"column": "ts", "format": "epoch_ms"})
    log = _log().assign(rating=[5, 3, 4, 1, 2, 4.5], ts=np.arange(6) * 1500 + 10**12)
    out = prepare_log(decl, {"log": log})
    assert out["click"].tolist() == [1, 0, 1, 0, 0, 1]
    assert out["timestamp"].tolist() == [(10**12 + i * 1500) // 1000 for i in range(6)]


def test_given_split_from_three_tables() -> None:
    decl = _decl(table=None, tables={"train": "tr", "valid": "va", "test": "te"})
    log = _log()
    out = prepare_log(decl, {"tr": log.iloc[:4], "va": log.iloc[4:5], "te": log.iloc[5:]})
    codes = assign_splits(out, SplitConfig(strategy="given"))
    assert codes.tolist() == [0, 0, 0, 0, 1, 2]


def test_missing_side_rows_become_null_or_error() -> None:
    decl = _decl()
    items = prepare_side(decl, "items", pd.DataFrame({"iid": ["B1", "B2"], "cat": ["x", "y"]}))
    log = prepare_log(decl, {"log": _log()})
    joined = join_side(log, items, decl, "items")
    assert joined["cat"].isna().tolist() == [False, False, True, False, False, True]
    strict = DatasetDeclaration.model_validate(
        decl.model_dump() | {"items": decl.items.model_dump() | {"on_missing": "error"}})
    with pytest.raises(RawDataError, match=r"items: 2 log row\(s\).*'B3'"):
        join_side(log, items, strict, "items")


@pytest.mark.parametrize(("change", "expected"), [
    (lambda f: f.drop(columns=["price"]), r"column 'price' \(dataset.events.columns.price\): "
                                          "missing"),
    (lambda f: f.assign(clicked=[1, 2, 0, 3, 0, 1]),
     r"column 'clicked' \(dataset.events.labels.click\): expected isin.*\[2, 3\]"),
    (lambda f: f.assign(uid=["A1", None, "A1", None, "A2", "A1"]),
     r"column 'uid' \(dataset.events.user\): 2 null"),
    (lambda f: f.assign(price=[1.0, -2.0, 3.0, np.inf, 1.0, 1.0]),
     r"column 'price'.*greater_than\(0\.0\).*\[-2\.0\].*finite.*\[inf\]"),
    (lambda f: f.assign(ts=["2024-03-01", "yesterday", "2024-03-01", "soon", "x", "y"]),
     r"'ts' must hold ISO-8601.*e\.g\. \['yesterday', 'soon', 'x', 'y'\]"),
])
def test_bad_log_values_are_named(change, expected) -> None:
    with pytest.raises(RawDataError, match=expected) as info:
        prepare_log(_decl(), {"log": change(_log())})
    assert str(info.value).startswith("log")  # the catalog entry comes first


def test_side_table_duplicate_keys_and_empty_table() -> None:
    with pytest.raises(RawDataError, match=r"items.*'iid' \(dataset.items.key\).*duplicate.*B1"):
        prepare_side(_decl(), "items", pd.DataFrame({"iid": ["B1", "B1"], "cat": ["x", "y"]}))
    with pytest.raises(RawDataError, match="items: the table is empty"):
        prepare_side(_decl(), "items", pd.DataFrame({"iid": [], "cat": []}))


def test_declaration_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"dataset.events: .*labels: needs the primary"):
        load_declaration({"dataset": {"events": {"table": "x", "labels": {"buy": "b"}}}})
    with pytest.raises(ValueError, match="tables: needs train, valid and test"):
        load_declaration({"dataset": {"events": {"tables": {"train": "a", "test": "b"},
                                                 "labels": ["click"]}}})
    with pytest.raises(ValueError, match="dataset.events.colums: Extra inputs"):
        load_declaration({"dataset": {"events": {"table": "x", "labels": ["click"],
                                                 "colums": {}}}})
    with pytest.raises(ValueError, match="items table is joined on the log's item column"):
        load_declaration({"dataset": {"events": {"table": "x", "labels": ["click"]},
                                      "items": {"table": "i", "key": "k"}}})


def test_schema_is_pandera_and_round_trips_yaml() -> None:
    schema = table_schema(_decl(), "items")
    assert set(schema.columns) == {"iid", "cat"} and schema.columns["iid"].unique
    assert "iid" in schema.to_yaml()


def test_time_split_without_time_refuses() -> None:
    frame = pd.DataFrame({"click": [0, 1]})
    with pytest.raises(ValueError, match="no event time .*dataset.events.time"):
        assign_splits(frame, SplitConfig(strategy="temporal"))


# ---- scaffold: bad input ------------------------------------------------------------------
def _scaffold(tmp_path: Path, *args: str) -> int:
    return scaffold([*args, "--conf", str(tmp_path / "conf")])


def test_scaffold_refuses_bad_files_and_flags(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header_only = tmp_path / "header.csv"
    header_only.write_text("label,x\n")
    good = tmp_path / "log.csv"
    pd.DataFrame({"label": [0, 1, 1], "x": ["a", "b", "c"]}).to_csv(good, index=False)
    cases = [
        (["e", "--events", str(empty)], "empty.csv: the file is empty"),
        (["e", "--events", str(header_only)], "header.csv: the file has a header but no rows"),
        (["e", "--events", str(tmp_path / "nope.csv")], "nope.csv: no such file"),
        (["e", "--events", str(good), "--label", "clicks"], "--label clicks: no column"),
        (["e", "--events", str(good), "--label", "x"], "--label x: values outside"),
        (["e", "--train", str(good), "--valid", str(good)], "missing --test"),
    ]
    for args, message in cases:
        assert _scaffold(tmp_path, *args) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "conf" / "e").exists()  # nothing half-written
    assert _scaffold(tmp_path, "e", "--events", str(good)) == 0
    assert (tmp_path / "conf/e/parameters_dataset.yml").is_file()
    assert _scaffold(tmp_path, "e", "--events", str(good)) == 2
    assert "exists; pass --force" in capsys.readouterr().err


def test_scaffold_writes_deltas_of_conf_base(tmp_path: Path) -> None:
    """The scaffolded env replaces what describes the data (declaration, features, model
    lists) and inherits the rest from conf/base; the merged parameters validate."""
    import shutil

    import yaml

    from recflow.config_checks import check_parameters
    from recflow.datasets import examples
    from recflow.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    shutil.copytree(REPO / "conf/base", tmp_path / "conf/base")
    log, users, items = examples.write("retail", tmp_path / "raw", rows=2_000)
    assert _scaffold(tmp_path, "shop", "--events", str(log), "--users", str(users),
                     "--items", str(items)) == 0
    written = {p.name: yaml.safe_load(p.read_text())
               for p in (tmp_path / "conf/shop").glob("parameters_*.yml")}
    params = CONFIG_LOADER_CLASS(conf_source=str(tmp_path / "conf"), env="shop",
                                 **CONFIG_LOADER_ARGS)["parameters"]
    base = yaml.safe_load((REPO / "conf/base/parameters_ranking.yml").read_text())["ranking"]
    declared = written["parameters_dataset.yml"]["dataset"]
    assert params["dataset"] == {k: v for k, v in declared.items() if k != "_replace"}
    assert list(params["preprocessing"]["fields"]) == [
        k for k in written["parameters_preprocessing.yml"]["preprocessing"]["fields"]
        if k != "_replace"]
    assert "din" in params["ranking"]["models"] and "esmm" not in params["ranking"]["models"]
    assert params["ranking"]["trainer"] == {**base["trainer"], "epochs": 3, "lr": 0.001,
                                           "embedding_lr": 0.001,
                                           "checkpoint_dir": "data/shop/06_models/checkpoints"}
    assert list(params["retrieval"]["models"]) == ["popularity", "sasrec", "two_tower"]
    assert list(params["semantic_ids"]["tokenizers"]) == ["rq_kmeans"]  # null dropped rq_vae
    assert len(written["parameters_distillation.yml"]["distillation"]) == 2  # a delta
    check_parameters(params)


def test_embedded_declaration_gives_the_plain_join() -> None:
    """The declared path reproduces what preprocessing joined before declarations existed
    (so the embedded default's features and metrics are unchanged)."""
    from recflow.datasets.synthetic import GeneratorConfig, generate
    from tests.helpers import embedded_events

    t = generate(GeneratorConfig(n_users=60, n_items=80, n_impressions=3_000, seed=1))
    plain = (t.interactions.merge(t.users, on="user_id", how="left", suffixes=("", "_user"))
             .merge(t.items, on="item_id", how="left", suffixes=("", "_item"))
             .sort_values("timestamp", kind="stable").reset_index(drop=True))
    declared = embedded_events(t.interactions, t.users, t.items)
    pd.testing.assert_frame_equal(declared[plain.columns], plain)
    assert sorted(declared.columns) == sorted(plain.columns)


def test_exact_duplicate_events_are_counted_refused_or_dropped() -> None:
    from recflow.datasets.prepare import duplicate_rows, handle_duplicates

    log = prepare_log(_decl(), {"log": _log()})
    doubled = pd.concat([log, log.iloc[[1, 4]]], ignore_index=True)
    assert duplicate_rows(doubled).tolist() == [False] * 6 + [True, True]
    near = doubled.assign(price=doubled["price"].where(doubled.index != 7, 99.0))
    assert duplicate_rows(near).sum() == 1  # one column differs: not a duplicate
    kept, report = handle_duplicates(doubled, _decl(), "log")
    assert len(kept) == 8 and report == {"rows": 8, "duplicate_events": 2,
                                         "on_duplicates": "warn", "dropped": 0}
    dropped, report = handle_duplicates(doubled, _decl(on_duplicates="drop"), "log")
    assert len(dropped) == 6 and report["dropped"] == 2
    pd.testing.assert_frame_equal(dropped, log)
    with pytest.raises(RawDataError, match=r"log: 2 exact duplicate event\(s\).*rows \[6, 7\]"):
        handle_duplicates(doubled, _decl(on_duplicates="error"), "log")
