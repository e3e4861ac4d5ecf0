"""Missing input files stop a run before any node, with the command that creates them."""

from __future__ import annotations

from pathlib import Path

import pytest

from recflow.hooks.hints import MissingInputError, MissingInputsHook


class _Dataset:
    _protocol = "file"

    def __init__(self, path: Path) -> None:
        self._filepath = path


class _Catalog(dict):
    def get(self, name):
        return self[name]


class _Pipeline:
    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def inputs(self) -> set[str]:
        return self.names


def test_missing_inputs_are_named_with_what_to_do(tmp_path: Path) -> None:
    present = tmp_path / "data/01_raw/items.parquet"
    present.parent.mkdir(parents=True)
    present.write_text("x")
    catalog = _Catalog(
        raw_items=_Dataset(present),
        raw_users=_Dataset(tmp_path / "data/01_raw/users.parquet"),
        raw_ratings=_Dataset(tmp_path / "data/01_raw/movielens/ml-100k/u.data"),
        model_input_train=_Dataset(tmp_path / "data/05_model_input/train.parquet"),
        **{"semantic_ids.rq_kmeans.table": _Dataset(
            tmp_path / "data/04_feature/semantic_ids/rq_kmeans.parquet")},
    )
    with pytest.raises(MissingInputError) as info:
        MissingInputsHook().before_pipeline_run(_Pipeline(*catalog, "params:ranking"), catalog)
    message = str(info.value)
    assert "raw_items" not in message
    assert "'raw_users'" in message and "recflow generate" in message
    assert "'raw_ratings'" in message and "recflow fetch-movielens" in message
    assert "'model_input_train'" in message and "--pipelines=preprocessing" in message
    assert ("--pipelines=semantic_ids --namespaces=semantic_ids.rq_kmeans"
            in message.split("'semantic_ids.rq_kmeans.table'")[1])


def test_present_inputs_pass_and_the_check_follows_the_files(tmp_path: Path) -> None:
    users = tmp_path / "data/01_raw/users.parquet"
    users.parent.mkdir(parents=True)
    users.write_text("x")
    catalog = _Catalog(raw_users=_Dataset(users))
    pipeline = _Pipeline("raw_users", "params:x")
    MissingInputsHook().before_pipeline_run(pipeline, catalog)  # present: no error
    users.unlink()
    with pytest.raises(MissingInputError, match="'raw_users'"):
        MissingInputsHook().before_pipeline_run(pipeline, catalog)


def test_env_that_swaps_only_some_raw_tables_is_named(tmp_path: Path) -> None:
    from recflow.hooks.hints import partially_overridden

    declared = ["raw_interactions", "raw_users", "raw_items"]
    (tmp_path / "mine").mkdir()
    assert partially_overridden(tmp_path, "mine", declared) == []  # nothing swapped: fine
    (tmp_path / "mine" / "catalog.yml").write_text(
        "raw_interactions:\n  type: pandas.CSVDataset\n  filepath: x.csv\n")
    assert partially_overridden(tmp_path, "mine", declared) == ["raw_users", "raw_items"]
    (tmp_path / "mine" / "catalog_side.yml").write_text("raw_users: {}\nraw_items: {}\n")
    assert partially_overridden(tmp_path, "mine", declared) == []
