"""The FeatureSpec: fitted transforms + field metadata, shared by training and serving.

`feature_spec.json` is this object's `to_dict()`; serving rebuilds it with
`FeatureSpec.from_dict` and calls the same `transform_frame`, so there is one
code path from raw columns to model inputs (no train/serve skew).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from recflow.features.config import (
    FeaturesConfig,
    HashCrossConfig,
    QuantileBucketConfig,
    SemanticPrefixConfig,
    SequenceConfig,
    StandardizeConfig,
    VocabConfig,
)
from recflow.features.semantic import CodeTable, SemanticPrefix, prefix_field_name
from recflow.features.transforms import (
    PAD,
    HashCross,
    QuantileBucket,
    Standardize,
    Vocabulary,
    pad_sequences,
)

SPEC_VERSION = 1
LABEL_PREFIX = "label_"
KEY_COLUMNS = ("key_user", "key_item", "key_timestamp")
#: the canonical role columns the keys copy (`recflow.datasets.declaration` USER / ITEM / TIME)
ROLE_COLUMNS = ("user_id", "item_id", "timestamp")
#: frames with at least this many rows fit / transform their fields on several threads
#: (the column kernels of numpy and pyarrow release the GIL); serving requests stay serial
PARALLEL_MIN_ROWS = 100_000
#: at most this many fields at once: each holds a few row-sized temporaries while it runs
PARALLEL_MAX_THREADS = 4

_T = TypeVar("_T")
_R = TypeVar("_R")


def _map_fields(fn: Callable[[_T], _R], items: Sequence[_T], rows: int) -> list[_R]:
    """`[fn(x) for x in items]`, on a thread pool for large frames; results keep their order."""
    workers = min(len(items), os.cpu_count() or 1, PARALLEL_MAX_THREADS)
    if rows < PARALLEL_MIN_ROWS or workers < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recflow-features") as pool:
        return list(pool.map(fn, items))


def sequence_columns(name: str, length: int) -> list[str]:
    """Columns holding a sequence field, oldest first, most recent last."""
    return [f"{name}__{i:03d}" for i in range(length)]


@dataclass
class FieldSpec:
    """One model input: its kind, source column(s), transform and fitted state."""

    name: str
    kind: str  # "categorical" | "numeric" | "sequence"
    transform: str
    params: dict[str, Any]
    columns: list[str]
    state: dict[str, Any] = field(default_factory=dict)
    vocab_size: int | None = None
    stats: dict[str, float] | None = None

    @property
    def length(self) -> int:
        return int(self.params.get("length", 0))

    @property
    def shares_vocab_with(self) -> str | None:
        return self.params.get("of")

    def output_columns(self) -> list[str]:
        if self.kind == "sequence":
            return sequence_columns(self.name, self.length)
        return [self.name]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "transform": self.transform,
            "columns": self.columns,
            "params": self.params,
        }
        if self.vocab_size is not None:
            out["vocab_size"] = self.vocab_size
        if self.stats is not None:
            out["stats"] = self.stats
        out["state"] = self.state
        return out


def build_transform(spec: FieldSpec) -> Any:
    params = {k: v for k, v in spec.params.items() if k not in ("transform", "column")}
    if spec.transform == "vocab":
        return Vocabulary(**params).load_state(spec.state) if spec.state else Vocabulary(**params)
    if spec.transform == "standardize":
        t = Standardize(**params)
        return t.load_state(spec.state) if spec.state else t
    if spec.transform == "quantile_bucket":
        t = QuantileBucket(**params)
        return t.load_state(spec.state) if spec.state else t
    if spec.transform == "hash_cross":
        return HashCross(**params)
    if spec.transform == "semantic_prefix":
        t = SemanticPrefix(level=params["level"], min_count=params["min_count"])
        return t.load_state(spec.state) if spec.state else t
    raise ValueError(f"field '{spec.name}': transform '{spec.transform}' has no column transform")


_KIND = {
    VocabConfig: "categorical",
    QuantileBucketConfig: "categorical",
    HashCrossConfig: "categorical",
    StandardizeConfig: "numeric",
    SequenceConfig: "sequence",
    SemanticPrefixConfig: "categorical",
}


def _semantic_prefix_fields(
    name: str, cfg: SemanticPrefixConfig, tables: dict[str, CodeTable]
) -> list[FieldSpec]:
    """One categorical field per prefix level, all reading the raw item-id column."""
    key = f"preprocessing.fields.{name}"
    if cfg.tokenizer not in tables:
        raise KeyError(f"{key}.tokenizer: no semantic-ID table for '{cfg.tokenizer}' was given "
                       f"(tables: {sorted(tables)}); it must name an entry of "
                       f"semantic_ids.tokenizers (dataset semantic_ids.{cfg.tokenizer}.table)")
    table_levels = tables[cfg.tokenizer].levels
    levels = cfg.levels or list(range(1, table_levels + 1))
    too_long = [lv for lv in levels if lv > table_levels]
    if too_long:
        raise ValueError(f"{key}.levels: {too_long} exceed the {table_levels} code levels of "
                         f"semantic_ids.{cfg.tokenizer}.table (allowed: 1..{table_levels}; the "
                         f"disambiguation digit is not a prefix)")
    return [
        FieldSpec(name=prefix_field_name(name, lv), kind="categorical",
                  transform="semantic_prefix", columns=[cfg.column],
                  params={"transform": "semantic_prefix", "tokenizer": cfg.tokenizer,
                          "level": lv, "min_count": cfg.min_count, "source": name})
        for lv in sorted(levels)
    ]


@dataclass
class FeatureSpec:
    """Everything needed to turn raw joined records into model-ready columns."""

    fields: list[FieldSpec]
    labels: list[str]
    split: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    _fitted: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _tables: dict[str, CodeTable] = field(default_factory=dict, repr=False, compare=False)

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def from_config(
        cls, config: FeaturesConfig, semantic_ids: dict[str, CodeTable] | None = None
    ) -> FeatureSpec:
        """`semantic_ids`: tokenizer name -> its table, for `semantic_prefix` fields."""
        fields = []
        tables = dict(semantic_ids or {})
        for name, cfg in config.fields.items():
            params = cfg.model_dump(exclude={"column"})
            if params.get("missing") == "pad":  # written only when set: specs fitted before
                del params["missing"]           # the option keep their hash
            if isinstance(cfg, SemanticPrefixConfig):
                fields.extend(_semantic_prefix_fields(name, cfg, tables))
                continue
            if isinstance(cfg, HashCrossConfig):
                columns = list(cfg.columns)
                params.pop("columns")
                params["columns"] = columns
            elif isinstance(cfg, SequenceConfig):
                columns = []
            else:
                columns = [cfg.column or name]
            fields.append(
                FieldSpec(name=name, kind=_KIND[type(cfg)], transform=cfg.transform,
                          params=params, columns=columns)
            )
        clashes = sorted({n for n in (f.name for f in fields)
                          if sum(f.name == n for f in fields) > 1})
        if clashes:
            raise ValueError(f"preprocessing.fields: field name(s) {clashes} are defined twice "
                             f"(a semantic_prefix field NAME emits NAME_p<level>)")
        return cls(fields=fields, labels=list(config.labels), _tables=tables)

    def fit(self, train: pd.DataFrame, rows: np.ndarray | None = None) -> FeatureSpec:
        """Fit every column transform on the train split only.

        `rows`: optional boolean mask over the rows of `train` (e.g. the train split of
        the whole log): each column is then filtered on its own, which is faster and
        lighter than the caller copying every column with `frame.loc[mask]` first.
        """
        fields = [f for f in self.fields if f.kind != "sequence"]
        for f in fields:
            self._fitted.pop(f.name, None)
        mask = None if rows is None else np.asarray(rows, dtype=bool)
        if mask is not None and len(mask) != len(train):
            raise ValueError(f"rows: a mask of {len(mask)} values for {len(train)} rows")

        def column(name: str) -> pd.Series:
            return train[name] if mask is None else train[name][mask]

        def fit_one(f: FieldSpec) -> Any:
            transform = build_transform(f)
            if f.transform == "semantic_prefix":
                transform.fit(column(f.columns[0]), self._tables[f.params["tokenizer"]])
            elif f.transform == "hash_cross":
                transform.fit(train[f.columns] if mask is None else train.loc[mask, f.columns])
            else:
                transform.fit(column(f.columns[0]))
            return transform

        n_rows = len(train) if mask is None else int(mask.sum())
        for f, transform in zip(fields, _map_fields(fit_one, fields, n_rows), strict=True):
            self.record_fit(f, transform)
        self.link_sequence_vocabs()
        return self

    def record_fit(self, f: FieldSpec, transform: Any) -> None:
        """Store a fitted transform on its field (the engines that fit elsewhere call it too)."""
        f.state = transform.state()
        if f.kind == "categorical":
            f.vocab_size = int(transform.size)
        else:
            f.stats = {"mean": transform.mean, "std": transform.std}

    def link_sequence_vocabs(self) -> None:
        """Sequence fields index their item field's vocabulary."""
        for f in self.fields:
            if f.kind == "sequence":
                f.vocab_size = self[f.shares_vocab_with].vocab_size

    # ---- application -----------------------------------------------------------------
    def __getitem__(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"feature spec has no field '{name}'; fields are {self.names}")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def by_kind(self, kind: str) -> list[FieldSpec]:
        return [f for f in self.fields if f.kind == kind]

    def raw_columns(self) -> list[str]:
        """Raw input columns a scorer needs (sequence sources are passed as lists)."""
        cols: list[str] = []
        for f in self.fields:
            for c in f.columns if f.kind != "sequence" else [f.name]:
                if c not in cols:
                    cols.append(c)
        return cols

    def transform_frame(
        self, raw: pd.DataFrame, history_ids: dict[str, np.ndarray] | None = None
    ) -> pd.DataFrame:
        """Raw columns -> model-ready columns.

        Sequence fields come either as a raw column of id lists (serving: each
        request carries its history) or, in `history_ids[name]`, as an (n, length)
        matrix already mapped through the vocabulary (preprocessing builds it
        from the log, see `index_history_source`).
        """
        for f in self.fields:  # every input present before any work, errors in field order
            if f.kind == "sequence":
                if (history_ids or {}).get(f.name) is None and f.name not in raw:
                    raise KeyError(f"missing sequence field '{f.name}' (a list of ids)")
                continue
            missing = [c for c in f.columns if c not in raw.columns]
            if missing:
                raise KeyError(
                    f"field '{f.name}' needs column(s) {missing}; got {list(raw.columns)}"
                )
            self.fitted(f)  # build (and cache) before the threads share it

        def transform_one(f: FieldSpec) -> np.ndarray:
            if f.kind == "sequence":
                ids = (history_ids or {}).get(f.name)
                if ids is None:
                    ids = self._map_histories(f, pad_sequences(raw[f.name].tolist(), f.length))
                return ids
            source = raw[f.columns] if f.transform == "hash_cross" else raw[f.columns[0]]
            return self.fitted(f).transform(source)

        out: dict[str, np.ndarray] = {}
        for f, values in zip(self.fields, _map_fields(transform_one, self.fields, len(raw)),
                             strict=True):
            if f.kind == "sequence":
                for i, col in enumerate(f.output_columns()):
                    out[col] = values[:, i].copy()  # contiguous, and not the caller's matrix
            else:
                out[f.name] = values
        # the arrays are fresh: one block each, not copied into consolidated 2-D blocks
        return pd.DataFrame(out, index=raw.index, copy=False)

    def model_input(
        self, rows: pd.DataFrame, history_ids: dict[str, np.ndarray] | None = None
    ) -> pd.DataFrame:
        """Keys, model-ready features and labels of raw rows: the layout every engine writes.

        `key_user` / `key_item` / `key_timestamp` for the role columns the rows have,
        then `transform_frame`'s columns, then `label_<name>` (int64) per label.
        """
        features = self.transform_frame(rows, history_ids=history_ids)
        keys = pd.DataFrame({key: rows[column].to_numpy() for key, column in
                             zip(KEY_COLUMNS, ROLE_COLUMNS, strict=True) if column in rows},
                            index=rows.index)
        labels = pd.DataFrame({LABEL_PREFIX + label: rows[label].to_numpy(np.int64)
                               for label in self.labels}, index=rows.index)
        return pd.concat([keys, features, labels], axis=1)

    def index_history_source(self, field: str, log: pd.DataFrame) -> np.ndarray:
        """Vocabulary ids of the column a sequence field draws from, one per log row."""
        source = self[self[field].shares_vocab_with]
        return self.fitted(source).transform(log[source.columns[0]])

    def fitted(self, f: FieldSpec) -> Any:
        """The fitted transform of a field, built once (serving calls this per request)."""
        if f.name not in self._fitted:
            self._fitted[f.name] = build_transform(f)
        return self._fitted[f.name]

    def _map_histories(self, f: FieldSpec, matrix: np.ndarray) -> np.ndarray:
        """(n, length) raw ids (None-padded) -> vocabulary ids, mapping distinct values once."""
        vocab = self.fitted(self[f.shares_vocab_with])
        codes, distinct = pd.factorize(matrix.ravel())
        mapped = vocab.transform(pd.Series(distinct, dtype=object))
        ids = np.full(codes.shape, PAD, dtype=np.int64)
        ids[codes >= 0] = mapped[codes[codes >= 0]]
        return ids.reshape(matrix.shape)

    # ---- persistence -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        body = {
            "version": SPEC_VERSION,
            "fields": [f.to_dict() for f in self.fields],
            "labels": self.labels,
            "split": self.split,
            "rows": self.rows,
        }
        body["hash"] = spec_hash(body)
        return body

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        if data.get("version") != SPEC_VERSION:
            raise ValueError(
                f"feature spec version {data.get('version')!r} is not supported "
                f"(expected {SPEC_VERSION}); re-run the preprocessing pipeline"
            )
        fields = [
            FieldSpec(
                name=f["name"], kind=f["kind"], transform=f["transform"], params=f["params"],
                columns=f["columns"], state=f.get("state", {}),
                vocab_size=f.get("vocab_size"), stats=f.get("stats"),
            )
            for f in data["fields"]
        ]
        return cls(fields=fields, labels=data["labels"], split=data.get("split", {}),
                   rows=data.get("rows", {}))

    @property
    def hash(self) -> str:
        return self.to_dict()["hash"]


def spec_hash(body: dict[str, Any]) -> str:
    """Content hash of a spec (fields, labels, split), used to pair models with specs."""
    content = {k: body[k] for k in ("fields", "labels", "split")}
    blob = json.dumps(content, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
