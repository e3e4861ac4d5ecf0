"""`recflow scaffold ENV`: a ready `conf/ENV/` from the user's files.

Reads a sample of each file, guesses the roles (label, user, item, time) and column
kinds it was not told (pandera's `infer_schema` for types, then names and cardinality),
writes the catalog entries, the dataset declaration, a feature list, ranking and (when
the roles allow) retrieval entries, with every output under `data/ENV/`, and prints what
it guessed. The parameter files are deltas of conf/base: the declaration, features and
model lists replace base's (`_replace: true`), the trainer and protocol settings are
inherited. `kedro run --pipelines=ranking --env ENV` then runs with no edits.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import yaml

from recflow.config_loader import REPLACE
from recflow.datasets.declaration import DatasetDeclaration

SAMPLE_ROWS = 200_000
#: kedro-datasets types by file suffix and their load_args. CSV keeps pandas' C parser:
#: measured faster than `engine: pyarrow` here, and its text columns are arrow strings
#: that the vocabularies map in pyarrow (docs/benchmarks.md, bring-your-own-data).
READERS = {
    ".csv": ("pandas.CSVDataset", {}),
    ".tsv": ("pandas.CSVDataset", {"sep": "\t"}),
    ".parquet": ("pandas.ParquetDataset", {}),
    ".pq": ("pandas.ParquetDataset", {}),
    ".json": ("pandas.JSONDataset", {}),
    ".jsonl": ("pandas.JSONDataset", {"lines": True}),
    ".feather": ("pandas.FeatherDataset", {}),
}
_NAMES = {
    "label": re.compile(r"^(label|labels|click|clicked|is_click|target|y|conversion|converted|"
                        r"purchase|purchased|bought|buy)$", re.I),
    "rating": re.compile(r"^(rating|ratings|overall|stars|score)$", re.I),
    "user": re.compile(r"(user|customer|reviewer|visitor|member|client|account|uid)", re.I),
    "item": re.compile(r"(item|product|sku|asin|movie|article|offer|ad_id|iid|^pid$)", re.I),
    "time": re.compile(r"(timestamp|time|date|^ts$|datetime|created|event_at)", re.I),
}


class ScaffoldError(ValueError):
    """A file or flag the scaffold cannot work with; the message says which and why."""


@dataclass
class Guess:
    """What the scaffold decided, and which of it was guessed (printed for the user)."""

    notes: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.notes.append(text)


def read_sample(path: Path, rows: int = SAMPLE_ROWS) -> pd.DataFrame:
    """The first `rows` rows of a data file; errors name the file."""
    if not path.is_file():
        raise ScaffoldError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise ScaffoldError(f"{path}: unknown file type '{suffix}'; use one of {sorted(READERS)}")
    try:
        if suffix in (".csv", ".tsv"):
            frame = pd.read_csv(path, nrows=rows, sep="\t" if suffix == ".tsv" else ",")
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path).head(rows)
        elif suffix in (".json", ".jsonl"):
            frame = pd.read_json(path, lines=suffix == ".jsonl", nrows=rows if
                                 suffix == ".jsonl" else None)
        else:
            frame = pd.read_feather(path).head(rows)
    except pd.errors.EmptyDataError:
        raise ScaffoldError(f"{path}: the file is empty") from None
    except Exception as exc:  # noqa: BLE001 - any reader failure is the same user error
        raise ScaffoldError(f"{path}: cannot be read as {suffix[1:]}: {exc}") from None
    if frame.empty:
        raise ScaffoldError(f"{path}: the file has a header but no rows")
    return frame


def row_count(path: Path, sample: pd.DataFrame) -> int:
    """Rows of the whole file, without parsing it: parquet metadata or CSV newlines."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if suffix in (".csv", ".tsv") and len(sample) >= SAMPLE_ROWS:
        with path.open("rb") as handle:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 24), b""))
        return max(lines - 1, len(sample))
    return len(sample)


def _binary(values: pd.Series) -> bool:
    present = values.dropna()
    return len(present) > 0 and set(pd.unique(present)).issubset({0, 1})


def _pick(columns: list[str], kind: str, taken: set[str]) -> str | None:
    return next((c for c in columns if c not in taken and _NAMES[kind].search(str(c))), None)


def _parse_label(spec: str, frame: pd.DataFrame) -> tuple[str, float | None]:
    """`COL` or `COL>=T` -> (column, threshold)."""
    column, _, threshold = spec.partition(">=")
    column = column.strip()
    if column not in frame.columns:
        raise ScaffoldError(f"--label {spec}: no column '{column}' in the event log; columns: "
                            f"{list(frame.columns)[:30]}")
    if threshold:
        return column, float(threshold)
    if not _binary(frame[column]):
        examples = frame[column].dropna().drop_duplicates().head(5).tolist()
        raise ScaffoldError(f"--label {column}: values outside {{0, 1}}, e.g. {examples}; give "
                            f"a threshold, e.g. --label '{column}>=4'")
    return column, None


def guess_labels(frame: pd.DataFrame, flags: list[str], guess: Guess) -> dict[str, Any]:
    """Target name -> {column, threshold}; the first is the primary target `click`."""
    if flags:
        parsed = [_parse_label(f, frame) for f in flags]
    else:
        binary = [c for c in frame.columns if _NAMES["label"].match(str(c)) and _binary(frame[c])]
        rating = [c for c in frame.columns if _NAMES["rating"].match(str(c))
                  and pd.api.types.is_numeric_dtype(frame[c])]
        if binary:
            parsed = [(c, None) for c in binary]
        elif rating:
            parsed = [(rating[0], 4.0 if frame[rating[0]].max() > 1 else 0.5)]
        else:
            raise ScaffoldError("no label column found (looked for 0/1 columns named label, "
                                "click, target, purchase, ... and ratings); name one with "
                                f"--label COL; columns: {list(frame.columns)[:30]}")
        guess.say(f"label: guessed {', '.join(c + (f' >= {t:g}' if t else '') for c, t in parsed)}"
                  " (override with --label COL or --label 'COL>=T')")
    names = ["click", *(re.sub(r"\W", "_", c).lower() for c, _ in parsed[1:])]
    return {n: {"column": c} | ({"threshold": t} if t is not None else {})
            for n, (c, t) in zip(names, parsed, strict=True)}


def guess_kind(values: pd.Series) -> str:
    """categorical / numeric / text for one attribute column (sampled)."""
    present = values.dropna()
    if pd.api.types.is_bool_dtype(values):
        return "categorical"
    if pd.api.types.is_numeric_dtype(values):
        distinct = present.nunique()
        integral = pd.api.types.is_integer_dtype(values) or bool(
            (present == np.floor(present)).all())
        return "categorical" if integral and distinct <= 20 else "numeric"
    text = present.astype(str)
    if len(text) and text.str.contains(" ").mean() > 0.5 and (
            text.str.len().mean() > 25 or text.nunique() > 0.5 * len(text)):
        return "text"  # titles, descriptions: words, mostly distinct
    return "categorical"


def _time_format(values: pd.Series) -> str:
    if pd.api.types.is_datetime64_any_dtype(values):
        return "datetime"
    if pd.api.types.is_numeric_dtype(values):
        top = float(values.abs().max())
        return "epoch_us" if top > 1e14 else "epoch_ms" if top > 1e11 else "epoch_s"
    return "iso8601"


def _columns(frame: pd.DataFrame, skip: set[str]) -> dict[str, Any]:
    inferred = pa.infer_schema(frame)  # pandera's dtypes: ints / floats / strings / datetimes
    return {str(name): guess_kind(frame[name])
            for name in inferred.columns if name not in skip}


def _kinds(columns: dict[str, str]) -> str:
    counts = pd.Series(list(columns.values()), dtype=object).value_counts()
    return ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "none"


def _key(frame: pd.DataFrame, wanted: str | None, path: Path) -> str:
    if wanted in frame.columns:
        return wanted
    unique = [c for c in frame.columns if frame[c].notna().all() and frame[c].is_unique]
    if not unique:
        raise ScaffoldError(f"{path}: no key column (a column with one distinct non-null value "
                            f"per row, e.g. '{wanted}')")
    return unique[0]


def _fields(decl: dict[str, Any], samples: dict[str, pd.DataFrame], rows: int) -> dict:
    """A first feature list: ids and categoricals as vocabularies (values seen fewer than
    10 times map to OOV on logs of a million rows or more; a column with blanks in the
    sample gets `missing: token`, so a blank is learned like a value), numbers
    standardised."""
    min_count = 10 if rows >= 1_000_000 else 2
    fields: dict[str, Any] = {}
    events = decl["events"]
    if events.get("user"):
        fields["user_id"] = {"transform": "vocab", "min_count": min_count}
    if events.get("item"):
        fields["item_id"] = {"transform": "vocab", "min_count": min_count}
    for table in ("events", "users", "items"):
        for name, kind in (decl.get(table) or {}).get("columns", {}).items():
            kind = kind if isinstance(kind, str) else kind["kind"]
            if kind == "numeric":
                values = samples[table][name].dropna()
                skewed = len(values) and values.min() >= 0 and values.max() > 20 * max(
                    values.median(), 1)
                fields[name] = {"transform": "standardize"} | ({"log": True} if skewed else {})
            elif kind in ("categorical", "sequence_source"):
                blanks = kind == "categorical" and samples[table][name].isna().any()
                fields[name] = {"transform": "vocab", "min_count": min_count} | (
                    {"missing": "token"} if blanks else {})
    if events.get("user") and events.get("item") and events.get("time"):
        fields["hist_item_id"] = {"transform": "sequence", "of": "item_id", "length": 20,
                                  "event": "click"}
    return fields


def _where(path: Path, root: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def build(events: Path | None, splits: dict[str, Path] | None, users: Path | None,
          items: Path | None, labels: list[str], user_col: str | None, item_col: str | None,
          time_col: str | None, env: str, root: Path) -> tuple[dict[str, Any], Guess]:
    """Every YAML block of conf/ENV as plain data, and what was guessed.

    `root`: the Kedro project; files inside it are written relative to it (portable).
    """
    guess = Guess()
    files = {"events": events} if events else {f"events_{s}": p for s, p in splits.items()}
    files = {k: p if p.is_absolute() else Path.cwd() / p for k, p in files.items()}
    samples_by_file = {name: read_sample(p) for name, p in files.items()}
    log = pd.concat(samples_by_file.values(), ignore_index=True)
    rows = sum(row_count(files[name], frame) for name, frame in samples_by_file.items())
    label_decl = guess_labels(log, labels, guess)
    taken = {d["column"] for d in label_decl.values()}
    columns = list(log.columns)
    for flag, value in (("--user-col", user_col), ("--item-col", item_col),
                        ("--time-col", time_col)):
        if value is not None and value not in columns:
            raise ScaffoldError(f"{flag} {value}: no such column in the event log; columns: "
                                f"{columns[:30]}")
    roles = {}
    for role, given in (("user", user_col), ("item", item_col), ("time", time_col)):
        found = given or _pick(columns, role, taken)
        if found is not None and role != "time" and not given and log[found].nunique() < 2:
            found = None
        if found is not None:
            roles[role] = found
            taken.add(found)
            if not given:
                guess.say(f"{role}: guessed column '{found}' (override with --{role}-col)")
        elif not given:
            guess.say(f"{role}: none found; models that need it are left out")
    catalog = {}
    for name, path in files.items():
        kind, load_args = READERS[path.suffix.lower()]
        catalog[f"raw_{env}_{name}"] = {"type": kind, "filepath": _where(path, root)} | (
            {"load_args": dict(load_args)} if load_args else {})
    ev: dict[str, Any] = ({"table": f"raw_{env}_events"} if events else
                          {"tables": {s: f"raw_{env}_events_{s}" for s in splits}})
    ev |= {k: v for k, v in (("user", roles.get("user")), ("item", roles.get("item"))) if v}
    if "time" in roles:
        ev["time"] = {"column": roles["time"], "format": _time_format(log[roles["time"]])}
    ev["labels"] = label_decl
    ev["columns"] = _columns(log, taken)
    guess.say(f"events columns: {_kinds(ev['columns'])} (dataset.events.columns)")
    decl: dict[str, Any] = {"name": env, "events": ev}
    samples = {"events": log}
    for table, path, role in (("users", users, "user"), ("items", items, "item")):
        if path is None:
            continue
        if role not in roles:
            raise ScaffoldError(f"--{table} {path}: joining a {table} table needs the log's "
                                f"{role} column (--{role}-col)")
        frame = read_sample(path)
        key = _key(frame, roles[role], path)
        catalog[f"raw_{env}_{table}"] = {"type": READERS[path.suffix.lower()][0],
                                         "filepath": _where(path, root)} | (
            {"load_args": dict(READERS[path.suffix.lower()][1])} if READERS[path.suffix.lower()][1]
            else {})
        decl[table] = {"table": f"raw_{env}_{table}", "key": key, "on_missing": "null",
                       "columns": _columns(frame, {key})}
        samples[table] = frame
        guess.say(f"{table} columns: {_kinds(decl[table]['columns'])} "
                  f"(dataset.{table}.columns)")
        guess.say(f"{table}: key '{key}'; a log {role} with no row here gets missing "
                  f"attributes (dataset.{table}.on_missing: error to refuse)")
    DatasetDeclaration.model_validate(decl)  # what we write must load
    fields = _fields(decl, samples, rows)
    strategy = "given" if splits else ("temporal" if "time" in roles else "random")
    guess.say(f"split: {strategy}" + ("" if splits else " (preprocessing.split)"))
    return {"dataset": decl, "catalog": catalog, "fields": fields, "strategy": strategy,
            "labels": list(label_decl), "roles": roles}, guess


def _ranking_models(has: set[str]) -> dict[str, Any]:
    """Every model the roles allow: DIN only with a behaviour sequence (user + item + time)."""
    models: dict[str, Any] = {
        "lr": {"name": "lr", "trainer": {"lr": 0.01, "embedding_lr": 0.01}},
        "fm": {"name": "fm", "params": {"embed_dim": 16}},
        "deepfm": {"name": "deepfm", "params": {"embed_dim": 16, "hidden": [128, 64]}},
        "dcnv2": {"name": "dcnv2", "params": {"embed_dim": 16, "structure": "stacked",
                                               "cross_layers": 2, "hidden": [128, 64]}},
    }
    if {"user", "item", "time"} <= has:
        models["din"] = {"name": "din", "params": {"embed_dim": 16, "hidden": [128, 64],
                                                    "sequence_field": "hist_item_id",
                                                    "candidate_field": "item_id"}}
    return models


RETRIEVAL_MODELS = {
    "popularity": {"name": "popularity"},
    "sasrec": {"name": "sasrec", "params": {"max_len": 20, "embed_dim": 64, "heads": 2,
                                             "layers": 2, "dropout": 0.2, "epochs": 10,
                                             "batch_size": 128, "lr": 0.001}},
    "two_tower": {"name": "two_tower", "params": {"max_len": 20, "embed_dim": 32, "epochs": 10,
                                                   "batch_size": 512, "lr": 0.005}},
}


def _dump(path: Path, header: str, data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    comment = "\n".join(f"# {line}" for line in textwrap.wrap(header, 88))
    path.write_text(f"{comment}\n{text}")


def _parameter_files(plan: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """conf/ENV's parameter files as deltas of conf/base: file -> (header, blocks).

    What describes the user's data (declaration, features, model lists) replaces base's
    (`_replace: true`, recflow.config_loader); the rest overrides single keys, so the
    trainer, protocol and export settings stay conf/base's."""
    has = set(plan["roles"])
    files = {
        "parameters_dataset.yml": (
            "What the files hold (docs/reference/dataset.md); replaces conf/base's "
            "declaration. Check the roles, labels and column kinds.",
            {"dataset": {REPLACE: True, **plan["dataset"]}}),
        "parameters_preprocessing.yml": (
            "Features (docs/preprocessing.md): tune min_count, add hash_cross / "
            "quantile_bucket fields. The split and the field list replace base's.",
            {"preprocessing": {"labels": plan["labels"],
                               "split": {REPLACE: True, "strategy": plan["strategy"]},
                               "fields": {REPLACE: True, **plan["fields"]}}}),
        "parameters_ranking.yml": (
            "Ranking models (docs/reference/models.md): the list replaces conf/base's; "
            "the trainer keys override base's, the others are base's.",
            {"ranking": {"trainer": {"epochs": 3, "lr": 0.001, "embedding_lr": 0.001},
                         "models": {REPLACE: True, **_ranking_models(has)}}}),
        "parameters_distillation.yml": (
            "Teacher -> student for this data; the trainer, baseline and losses are "
            "conf/base's.",
            {"distillation": {
                "teacher": {"members": [{"name": "dcnv2", "params": {"embed_dim": 16}}]},
                "student": {REPLACE: True, "name": "deepfm",
                            "params": {"embed_dim": 4, "hidden": [32]}}}}),
    }
    if {"user", "item", "time"} <= has:
        files["parameters_retrieval.yml"] = (
            "Next-item retrieval (docs/retrieval.md): the model list replaces conf/base's; "
            "the protocol and training settings are base's.",
            {"retrieval": {"models": {REPLACE: True, **RETRIEVAL_MODELS}}})
    columns = plan["dataset"].get("items", {}).get("columns", {})
    text = [c for c, k in columns.items()
            if (k if isinstance(k, str) else k["kind"]) in ("text", "categorical")]
    if text:
        files["parameters_semantic_ids.yml"] = (
            "Item text -> semantic IDs; a delta of conf/base (null: base's rq_vae dropped).",
            {"semantic_ids": {
                "encoder": {"params": {"text_columns": text, "dim": 32, "min_df": 1}},
                "purity_columns": text[:1],
                "tokenizers": {"rq_kmeans": {"params": {"codebook_size": 32}},
                               "rq_vae": None}}})
    return files


def write(conf: Path, env: str, plan: dict[str, Any], force: bool) -> Path:
    """Write conf/ENV atomically (a temporary folder renamed into place)."""
    target = conf / env
    if target.exists() and not force:
        raise ScaffoldError(f"{target} exists; pass --force to replace it")
    staging = conf / f".{env}.scaffold-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _dump(staging / "catalog.yml", "The raw files (recflow scaffold); any kedro-datasets "
              "type works here.", plan["catalog"])
        _dump(staging / "globals.yml", "Every output of this env goes under data/<env>/.",
              {"out": f"data/{env}"})
        for name, (header, blocks) in _parameter_files(plan).items():
            _dump(staging / name, header, blocks)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recflow scaffold", description=__doc__)
    parser.add_argument("env", help="name of the Kedro env to write (conf/ENV)")
    parser.add_argument("--events", type=Path, help="the whole event log")
    parser.add_argument("--train", type=Path)
    parser.add_argument("--valid", type=Path)
    parser.add_argument("--test", type=Path)
    parser.add_argument("--items", type=Path)
    parser.add_argument("--users", type=Path)
    parser.add_argument("--label", action="append", default=[],
                        help="label column, COL or 'COL>=T'; repeat for more targets")
    parser.add_argument("--user-col")
    parser.add_argument("--item-col")
    parser.add_argument("--time-col")
    parser.add_argument("--conf", type=Path, default=Path("conf"))
    parser.add_argument("--force", action="store_true", help="replace an existing conf/ENV")
    args = parser.parse_args(argv)
    splits = {s: getattr(args, s) for s in ("train", "valid", "test")}
    try:
        if bool(args.events) == any(splits.values()):
            raise ScaffoldError("give --events PATH, or --train, --valid and --test")
        if not args.events and not all(splits.values()):
            missing = [f"--{s}" for s, p in splits.items() if p is None]
            raise ScaffoldError(f"a given split needs --train, --valid and --test; missing "
                                f"{', '.join(missing)}")
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*", args.env) or args.env == "base":
            raise ScaffoldError(f"env name {args.env!r}: letters, digits, _ and - only "
                                "(and not 'base')")
        if (args.conf / args.env).exists() and not args.force:
            raise ScaffoldError(f"{args.conf / args.env} exists; pass --force to replace it")
        plan, guess = build(args.events, None if args.events else splits, args.users,
                            args.items, args.label, args.user_col, args.item_col,
                            args.time_col, args.env, args.conf.resolve().parent)
        target = write(args.conf, args.env, plan, args.force)
    except ScaffoldError as exc:
        sys.stderr.write(f"recflow scaffold: error: {exc}\n")
        return 2
    out = sys.stdout
    out.write(f"wrote {target}/ (outputs will go under data/{args.env}/)\n")
    for note in guess.notes:
        out.write(f"  - {note}\n")
    out.write(f"check {target}/parameters_dataset.yml, then:\n"
              f"  kedro run --pipelines=ranking --env {args.env}\n")
    return 0
