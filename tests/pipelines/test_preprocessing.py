"""The preprocessing pipeline, run for real (in-process `kedro run`) on small data.

A good run must write the documented contracts; every bad input must fail the
run with a message naming the dataset / column / YAML key and the failed check,
and leave no output behind (the AtomicRunHooks roll back what was written).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError
from kedro.validation import DataValidationError, ParameterValidationError

from recflow.datasets.movielens import GENRES
from recflow.datasets.schema import RawDataError
from recflow.features import FeatureSpec
from recflow.features.sequences import build_histories
from recflow.features.spec import LABEL_PREFIX
from recflow.features.split import split_masks
from recflow.schemas.expectations import GreatExpectationsValidator
from tests.conftest import make_project, output_files, run_kedro
from tests.helpers import embedded_events

pytestmark = pytest.mark.slow

SPLITS = ("train", "valid", "test")
MODEL_INPUT = "data/05_model_input"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _leftovers(project: Path) -> list[str]:
    """Outputs in any layer (also the movielens tree) and rollback backups."""
    data = project / "data"
    files = [p for p in data.rglob("*") if p.is_file() and p.name != ".gitkeep"]
    return sorted(
        str(p.relative_to(project))
        for p in files
        if "01_raw" not in p.relative_to(data).parts or p.name.endswith(".recflow-backup")
    )


# --------------------------------------------------------------------------- #
# A good run (the shared, session-scoped preprocessed project)
# --------------------------------------------------------------------------- #
def test_feature_spec_contract(preprocessed_project: Path) -> None:
    spec = _read_json(preprocessed_project / MODEL_INPUT / "feature_spec.json")
    assert spec["fields"], "no fields"
    for field in spec["fields"]:
        assert {"name", "kind"} <= set(field), field
        assert field["kind"] in {"categorical", "numeric", "sequence"}
        if field["kind"] == "numeric":
            assert set(field["stats"]) >= {"mean", "std"} and field["stats"]["std"] > 0
        else:
            assert isinstance(field["vocab_size"], int) and field["vocab_size"] > 2
    names = [f["name"] for f in spec["fields"]]
    assert {"user_id", "item_id", "price", "hist_item_id"} <= set(names)
    split = spec["split"]
    assert isinstance(split["train_end"], int) and isinstance(split["valid_end"], int)
    assert split["train_end"] < split["valid_end"]
    raw = pd.read_parquet(preprocessed_project / "data/01_raw/interactions.parquet")
    assert sum(spec["rows"].values()) == len(raw)
    assert FeatureSpec.from_dict(spec).hash == spec["hash"]


def test_data_quality_report(preprocessed_project: Path) -> None:
    report = _read_json(preprocessed_project / "data/08_reporting/data_quality.json")
    assert report["success"] is True
    assert set(report["splits"]) == set(SPLITS)
    for name, summary in report["splits"].items():
        assert summary["success"] is True, name
        assert summary["suite"] == f"model_input_{name}"
        assert summary["evaluated"] == summary["successful"] > 10
        assert summary["failed"] == []


def test_model_inputs_respect_vocab_and_split(preprocessed_project: Path) -> None:
    spec = FeatureSpec.from_dict(
        _read_json(preprocessed_project / MODEL_INPUT / "feature_spec.json")
    )
    split = spec.split
    windows = {
        "train": (-np.inf, split["train_end"]),
        "valid": (split["train_end"], split["valid_end"]),
        "test": (split["valid_end"], np.inf),
    }
    for name in SPLITS:
        frame = pd.read_parquet(preprocessed_project / MODEL_INPUT / f"{name}.parquet")
        assert len(frame) == spec.rows[name] > 0
        assert not frame.isna().any().any()
        low, high = windows[name]
        assert (frame["key_timestamp"] >= low).all() and (frame["key_timestamp"] < high).all()
        for field in spec.fields:
            for column in field.output_columns():
                values = frame[column]
                if field.vocab_size is not None:
                    assert values.dtype == np.int64, column
                    assert values.min() >= 0 and values.max() < field.vocab_size, column
        assert set(frame[f"{LABEL_PREFIX}click"].unique()) <= {0, 1}
        assert (frame["label_purchase"] <= frame["label_click"]).all()
        for field in spec.by_kind("sequence"):
            # histories carry real ids, not just padding / OOV
            history = frame[field.output_columns()].to_numpy()
            assert (history >= 2).mean() > 0.2, (name, field.name)
            # padding is on the left: once a row has an item, it has items to the end
            padded = history == 0
            assert (np.diff(padded.astype(int), axis=1) <= 0).all(), (name, field.name)


def test_model_inputs_reproduce_from_raw_records(preprocessed_project: Path) -> None:
    """Serving parity: the saved spec applied to raw records gives the saved inputs."""
    raw = {n: pd.read_parquet(preprocessed_project / f"data/01_raw/{n}.parquet")
           for n in ("interactions", "users", "items")}  # fmt: skip
    events = embedded_events(raw["interactions"], raw["users"], raw["items"])
    spec = FeatureSpec.from_dict(
        _read_json(preprocessed_project / MODEL_INPUT / "feature_spec.json")
    )
    rows = events.loc[split_masks(events["timestamp"], spec.split)["test"]]
    as_lists = rows.copy()
    for field in spec.by_kind("sequence"):  # serving sends each history as a plain list
        history = build_histories(
            events,
            field.length,
            item=spec[field.shares_vocab_with].columns[0],
            event=field.params["event"],
            queries=rows,
        )
        as_lists[field.name] = [[v for v in h if v is not None] for h in history]
    features = spec.transform_frame(as_lists).reset_index(drop=True)
    saved = pd.read_parquet(preprocessed_project / MODEL_INPUT / "test.parquet")
    pd.testing.assert_frame_equal(features, saved[features.columns], check_dtype=False)
    assert (saved["key_user"].to_numpy() == rows["user_id"].to_numpy()).all()


def test_ge_validator_failure_is_readable(preprocessed_project: Path) -> None:
    frame = pd.read_parquet(preprocessed_project / MODEL_INPUT / "valid.parquet")
    spec = _read_json(preprocessed_project / MODEL_INPUT / "feature_spec.json")
    item_max = next(f["vocab_size"] for f in spec["fields"] if f["name"] == "item_id") - 1
    assert frame.attrs["recflow"]["max_index"]["item_id"] == item_max  # bounds persisted
    frame.loc[[3, 11, 12], "item_id"] = item_max + 1_000
    frame.loc[5, "key_timestamp"] = spec["split"]["valid_end"]  # leaks into test's window
    validator = GreatExpectationsValidator(suite="model_input_valid", label_rate_max=0.01)
    with pytest.raises(DataValidationError) as info:
        validator.validate(frame)
    message = str(info.value)
    assert "model_input_valid" in message
    assert "item_id: expect_column_values_to_be_between(min_value=0" in message
    assert f"max_value={item_max}" in message and "3 cases" in message
    assert str(item_max + 1_000) in message  # offending values shown
    assert "key_timestamp: expect_column_values_to_be_between" in message
    assert f"e.g. {spec['split']['valid_end']}" in message
    assert "label_click: expect_column_mean_to_be_between" in message
    assert "max_value=0.01" in message
    assert {f.column for f in info.value.failures} == {"item_id", "key_timestamp", "label_click"}
    # the untouched frame passes, and the summary is stamped for the report
    clean = pd.read_parquet(preprocessed_project / MODEL_INPUT / "valid.parquet")
    stamped = GreatExpectationsValidator(suite="model_input_valid").validate(clean)
    assert stamped.attrs["recflow"]["data_quality"]["success"] is True


# --------------------------------------------------------------------------- #
# Bad inputs: each fails the run, names what is wrong, leaves nothing behind
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(
        tmp_path_factory.mktemp("template") / "project",
        n_users=150,
        n_items=120,
        n_impressions=3_000,
    )


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "project"))


def _edit(table: str, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def mutate(project: Path) -> None:
        path = project / "data/01_raw" / f"{table}.parquet"
        fn(pd.read_parquet(path)).to_parquet(path, index=False)

    return mutate


def _write(relative: str, content: bytes | str) -> Callable[[Path], None]:
    def mutate(project: Path) -> None:
        path = project / relative
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    return mutate


def _purchase_without_click(df: pd.DataFrame) -> pd.DataFrame:
    rows = df.index[df["click"] == 0][:3]
    df.loc[rows, "purchase"] = 1
    return df


# id -> (mutation, exception type, fragments the message must contain)
BAD_INPUTS = {
    "missing_column": (
        _edit("interactions", lambda d: d.drop(columns=["dwell"])),
        RawDataError,
        ["raw_interactions", "column 'dwell' (dataset.events.columns.dwell)", "missing"],
    ),
    "wrong_dtype": (
        _edit("items", lambda d: d.assign(price=d["price"].astype(str).where(
            d.index % 40 != 3, "cheap"))),
        RawDataError,
        ["raw_items", "column 'price' (dataset.items.columns.price)", "float64", "'cheap'"],
    ),
    "null_ids": (
        _edit(
            "interactions",
            lambda d: d.assign(user_id=d["user_id"].astype("float64").where(d.index % 97 != 3)),
        ),
        RawDataError,
        ["raw_interactions", "column 'user_id' (dataset.events.user)", "null value(s)"],
    ),
    "click_outside_0_1": (
        _edit("interactions", lambda d: d.assign(click=d["click"].where(d.index % 50 != 1, 2))),
        RawDataError,
        ["raw_interactions", "column 'click' (dataset.events.labels.click)", "isin([0, 1])",
         "e.g. [2]"],
    ),
    "purchase_without_click": (
        _edit("interactions", _purchase_without_click),
        DataValidationError,
        ["raw_interactions", "purchase implies click", "purchase=1 must have click=1", "3 cases"],
    ),
    "duplicated_item_ids": (
        _edit("items", lambda d: pd.concat([d, d[d["item_id"].isin([6, 8])]], ignore_index=True)),
        RawDataError,
        ["raw_items", "column 'item_id' (dataset.items.key)", "duplicate keys", "[6, 8]"],
    ),
    "empty_table": (
        _edit("interactions", lambda d: d.iloc[:0]),
        RawDataError,
        ["raw_interactions", "the table is empty"],
    ),
    "empty_file": (
        _write("data/01_raw/users.parquet", b""),
        DatasetError,
        ["raw_users", "users.parquet", "0 bytes"],
    ),
    "unparsable_file": (
        _write("data/01_raw/interactions.parquet", b"\x00garbage\xff" * 100),
        DatasetError,
        ["raw_interactions", "interactions.parquet", "Parquet magic bytes not found"],
    ),
    "unknown_transform": (
        _write(
            "conf/local/parameters_preprocessing.yml",
            "preprocessing:\n  _replace: true\n  fields:\n    user_id: {transform: vocab}\n"
            "    brand: {transform: vocabb}\n",
        ),
        ParameterValidationError,
        ["'preprocessing'", "fields.brand", "'vocabb'", "'quantile_bucket'"],
    ),
    "unknown_item_id": (
        _edit(
            "interactions",
            lambda d: d.assign(item_id=d["item_id"].where(d.index % 500 != 7, 999_999)),
        ),
        RawDataError,
        ["raw_items", "6 log row(s)", "dataset.items.on_missing: error", "[999999]"],
    ),
    # fails after split_cutoffs.json was written: the rollback must remove it
    "yaml_column_missing_from_data": (
        _write(
            "conf/local/parameters_preprocessing.yml",
            "preprocessing:\n  _replace: true\n  fields:\n    user_id: {transform: vocab}\n"
            "    shoe_size: {transform: standardize}\n",
        ),
        KeyError,
        [
            "parameters_preprocessing.yml",
            "preprocessing.fields.shoe_size",
            "column 'shoe_size'",
            "raw_interactions",
        ],
    ),
    # a great-expectations failure on save, after earlier outputs were written
    "ge_label_rate": (
        _write(
            "conf/local/catalog.yml",
            """\
"model_input_{split}":
  type: pandas.ParquetDataset
  filepath: data/05_model_input/{split}.parquet
  validator:
    class: recflow.schemas.expectations.GreatExpectationsValidator
    on: save
    options:
      suite: "model_input_{split}"
      label_rate_min: 0.9
""",
        ),
        DataValidationError,
        [
            "Validation failed for dataset 'model_input_",
            "on save",
            "label_click: expect_column_mean_to_be_between(min_value=0.9",
        ],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_readably_and_leaves_no_outputs(project: Path, case: str) -> None:
    mutate, error, fragments = BAD_INPUTS[case]
    mutate(project)
    with pytest.raises(error) as info:
        run_kedro(project, "preprocessing")
    message = str(info.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{missing} not in message:\n{message}"
    assert output_files(project) == []
    assert _leftovers(project) == []


def test_failed_run_restores_previous_outputs(preprocessed_project: Path, tmp_path: Path) -> None:
    project = Path(shutil.copytree(preprocessed_project, tmp_path / "project"))
    before = {f: hashlib.sha256((project / f).read_bytes()).hexdigest()
              for f in output_files(project)}  # fmt: skip
    assert len(before) == 10  # 3 canonical tables, raw quality, split, spec, 3 inputs, quality
    BAD_INPUTS["ge_label_rate"][0](project)
    with pytest.raises(DataValidationError):
        run_kedro(project, "preprocessing")
    after = {f: hashlib.sha256((project / f).read_bytes()).hexdigest()
             for f in output_files(project)}  # fmt: skip
    assert after == before
    assert not list(project.rglob("*.recflow-backup"))


# --------------------------------------------------------------------------- #
# MovieLens env on tiny GroupLens-layout files
# --------------------------------------------------------------------------- #
def write_grouplens(
    root: Path, n_users: int = 300, n_items: int = 200, n_ratings: int = 6_000, seed: int = 0
) -> Path:
    """u.user / u.item / u.data in GroupLens' format, ratings spread over 200 days."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    jobs = ["student", "engineer", "writer", "other", "artist", "educator"]
    (root / "u.user").write_text("".join(
        f"{u}|{rng.integers(12, 75)}|{'MF'[rng.integers(2)]}|{jobs[rng.integers(len(jobs))]}|"
        f"{rng.integers(0, 99_999):05d}\n"
        for u in range(1, n_users + 1)
    ), encoding="latin-1")  # fmt: skip
    items = []
    for i in range(1, n_items + 1):
        year = 1940 + int(rng.integers(0, 58))
        flags = ["0"] * len(GENRES)
        for g in rng.choice(np.arange(1, len(GENRES)), size=rng.integers(1, 3), replace=False):
            flags[g] = "1"
        items.append(
            "|".join(
                [
                    str(i),
                    f"Film {i} ({year})",
                    f"01-Jan-{year}",
                    "",
                    f"http://us.imdb.com/M/title-exact?Film%20{i}",
                    *flags,
                ]
            )
            + "\n"
        )
    (root / "u.item").write_bytes("".join(items).encode("latin-1"))
    users = rng.integers(1, n_users + 1, n_ratings)
    movies = rng.integers(1, n_items + 1, n_ratings)
    ratings = rng.integers(1, 6, n_ratings)
    times = 874_724_710 + rng.integers(0, 200 * 86_400, n_ratings)
    (root / "u.data").write_text("".join(
        f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in zip(users, movies, ratings, times, strict=True)
    ))  # fmt: skip
    return root


def test_movielens_env_runs_and_writes_under_its_own_root(template: Path, tmp_path: Path) -> None:
    project = Path(shutil.copytree(template, tmp_path / "project"))
    write_grouplens(project / "data/01_raw/movielens/ml-100k")
    run_kedro(project, "preprocessing", env="movielens")
    assert output_files(project) == []  # nothing under the default data/0N_* layers
    root = project / "data/movielens"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "02_intermediate/raw_quality.json",
        "02_intermediate/split_cutoffs.json",
        "03_primary/interactions.parquet",
        "03_primary/items.parquet",
        "03_primary/users.parquet",
        "05_model_input/feature_spec.json",
        "05_model_input/test.parquet",
        "05_model_input/train.parquet",
        "05_model_input/valid.parquet",
        "08_reporting/data_quality.json",
    ]
    spec = _read_json(root / "05_model_input/feature_spec.json")
    fields = {f["name"]: f for f in spec["fields"]}
    assert {"occupation", "year", "year_bucket", "hist_item_id"} <= set(fields)
    assert fields["user_id"]["vocab_size"] <= 300 + 2
    assert fields["occupation"]["vocab_size"] == 6 + 2
    assert 1940 < fields["year"]["stats"]["mean"] < 1998
    assert sum(spec["rows"].values()) == 6_000
    assert _read_json(root / "08_reporting/data_quality.json")["success"] is True
    test = pd.read_parquet(root / "05_model_input/test.parquet")
    assert (test["key_timestamp"] >= spec["split"]["valid_end"]).all()
    assert (test[[f"hist_item_id__{i:03d}" for i in range(20)]].to_numpy() >= 2).any()
