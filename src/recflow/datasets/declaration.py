"""The dataset declaration: what `dataset:` in `conf/<env>/parameters_dataset.yml` may say.

A declaration names the user's tables (Kedro catalog entries) and the role of their
columns. recflow turns the tables into one canonical shape before anything else runs
(`recflow.datasets.prepare`): role columns get fixed names (`user_id`, `item_id`,
`timestamp` in epoch seconds, one `0/1` column per label, `split` for a given split),
every other declared column keeps its name. The pandera schemas that validate the raw
tables are built from the declaration (`recflow.datasets.schema`), so no dataset needs
Python. Unknown keys are errors with their YAML path (pydantic, `extra="forbid"`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from recflow.features.split import GIVEN_COLUMN

#: canonical names of the role columns after `prepare` (and `SPLIT` for a given split)
USER, ITEM, TIME, SPLIT = "user_id", "item_id", "timestamp", GIVEN_COLUMN
#: the primary target every ranking model predicts (column 0 of `predict`)
PRIMARY_LABEL = "click"
SPLIT_NAMES = ("train", "valid", "test")

ColumnKind = Literal["categorical", "numeric", "text", "sequence_source"]
TimeFormat = Literal["auto", "epoch_s", "epoch_ms", "epoch_us", "iso8601", "datetime"]
IdType = Literal["auto", "string", "int"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # no bool -> int


class ColumnDecl(_Strict):
    """One attribute column: its kind and the checks its values must pass.

    `categorical`: ids or tokens (strings or integers) -> vocabularies;
    `numeric`: numbers (missing allowed unless `nullable: false`) -> standardise / buckets;
    `text`: free text (titles) -> item encoders for semantic IDs;
    `sequence_source`: categorical whose per-user click history becomes a feature.
    """

    kind: ColumnKind = "categorical"
    nullable: bool = True
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    isin: list[str | int | float] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _bounds_numeric(self) -> ColumnDecl:
        bounded = [k for k in ("ge", "gt", "le", "lt") if getattr(self, k) is not None]
        if bounded and self.kind != "numeric":
            raise ValueError(f"{', '.join(bounded)}: bounds apply to kind 'numeric' only, "
                             f"not '{self.kind}'")
        return self


def _columns(value: object) -> object:
    """`price: numeric` is short for `price: {kind: numeric}`."""
    if not isinstance(value, dict):
        return value
    return {k: {"kind": c} if isinstance(c, str) else c for k, c in value.items()}


class LabelDecl(_Strict):
    """A 0/1 target: the column itself, or `column >= threshold` on a numeric column."""

    column: str
    threshold: float | None = Field(
        None, description="Derive the label as column >= threshold (e.g. rating >= 4).")


class TimeDecl(_Strict):
    """The event-time column and how its values are written (converted to epoch seconds)."""

    column: str
    format: TimeFormat = Field(
        "auto", description="auto: numbers are epoch seconds (ms / us when too large for "
        "seconds), strings ISO-8601, datetimes as they are.")


class EventsDecl(_Strict):
    """The event / impression log: one table, or the user's own train/valid/test files."""

    table: str | None = Field(None, description="Catalog entry of the whole log.")
    tables: dict[Literal["train", "valid", "test"], str] | None = Field(
        None, description="Catalog entries of a log already split (the `given` split).")
    split_column: str | None = Field(
        None, description="Column whose values train / valid / test give the split.")
    user: str | None = Field(None, description="User key column (optional).")
    item: str | None = Field(None, description="Item key column (optional).")
    id_type: IdType = Field(
        "auto", description="auto keeps the file's ids (strings stay strings); "
        "string / int cast them.")
    time: TimeDecl | None = Field(None, description="Event time (optional).")
    on_duplicates: Literal["warn", "error", "drop"] = Field(
        "warn", description="Exact duplicate events (every column equal): counted in "
        "data_quality.json and logged (warn), refused (error) or dropped, keeping the first.")
    labels: dict[str, LabelDecl] = Field(
        min_length=1, description=f"Target name -> column; '{PRIMARY_LABEL}' is the primary "
        "target every ranking model predicts, others are extra tasks (ESMM: purchase).")
    columns: dict[str, ColumnDecl] = Field(default_factory=dict)

    @field_validator("columns", mode="before")
    @classmethod
    def _columns_short(cls, value: object) -> object:
        return _columns(value)

    @field_validator("time", mode="before")
    @classmethod
    def _time_short(cls, value: object) -> object:
        return {"column": value} if isinstance(value, str) else value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_short(cls, value: object) -> object:
        if isinstance(value, list):  # [click, purchase]: columns of those names
            return {name: {"column": name} for name in value}
        if isinstance(value, dict):
            return {k: {"column": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EventsDecl:
        if (self.table is None) == (self.tables is None):
            raise ValueError("give exactly one of `table` (one log) or `tables` "
                             "({train: ..., valid: ..., test: ...})")
        if self.tables is not None and set(self.tables) != set(SPLIT_NAMES):
            raise ValueError(f"tables: needs train, valid and test; got {sorted(self.tables)}")
        if self.tables is not None and self.split_column is not None:
            raise ValueError("split_column: the split is already given by `tables`")
        if PRIMARY_LABEL not in self.labels:
            raise ValueError(f"labels: needs the primary target '{PRIMARY_LABEL}' "
                             f"(e.g. labels: {{{PRIMARY_LABEL}: {{column: label}}}}); "
                             f"got {sorted(self.labels)}")
        roles = {"user": self.user, "item": self.item,
                 "time": self.time.column if self.time else None}
        clash = sorted(set(self.columns) & {c for c in roles.values() if c})
        if clash:
            raise ValueError(f"columns: {clash} already have a role (user/item/time)")
        return self

    @property
    def split_given(self) -> bool:
        return self.tables is not None or self.split_column is not None

    def catalog_entries(self) -> list[str]:
        return [self.table] if self.table else [self.tables[s] for s in SPLIT_NAMES]


class SideTableDecl(_Strict):
    """A users or items table joined to the log by key."""

    table: str = Field(description="Catalog entry.")
    key: str = Field(description="Key column; joined to the log's user / item role.")
    on_missing: Literal["null", "error"] = Field(
        "null", description="A log key without a row here: null attributes, or an error.")
    columns: dict[str, ColumnDecl] = Field(default_factory=dict)

    @field_validator("columns", mode="before")
    @classmethod
    def _columns_short(cls, value: object) -> object:
        return _columns(value)


class DatasetDeclaration(_Strict):
    """The `dataset` parameters block: the user's tables and the roles of their columns."""

    name: str = Field("dataset", description="Shown in reports and errors.")
    events: EventsDecl
    users: SideTableDecl | None = None
    items: SideTableDecl | None = None

    @model_validator(mode="after")
    def _side_tables_need_roles(self) -> DatasetDeclaration:
        for table, role in (("users", "user"), ("items", "item")):
            if getattr(self, table) is not None and getattr(self.events, role) is None:
                raise ValueError(f"{table}: a {table} table is joined on the log's {role} "
                                 f"column, but events.{role} is not declared")
        return self

    @property
    def roles(self) -> set[str]:
        """Which of user / item / time the log has."""
        return {r for r, v in (("user", self.events.user), ("item", self.events.item),
                               ("time", self.events.time)) if v is not None}

    @property
    def labels(self) -> list[str]:
        """Target names, primary first (the order of `label_*` columns)."""
        return [PRIMARY_LABEL, *(n for n in self.events.labels if n != PRIMARY_LABEL)]

    def raw_names(self) -> dict[str, str]:
        """Canonical name -> the user's raw column, for role columns only (serving aliases)."""
        out = {}
        if self.events.user:
            out[USER] = self.events.user
        if self.events.item:
            out[ITEM] = self.events.item
        if self.events.time:
            out[TIME] = self.events.time.column
        return out

    def numeric_bounds(self) -> dict[str, dict[str, float]]:
        """Column -> its declared bounds (`ge`/`gt`/`le`/`lt`), for numeric columns that have any."""
        tables = [self.events.columns, *(t.columns for t in (self.users, self.items) if t)]
        return {name: bounds for columns in tables for name, c in columns.items()
                if (bounds := {k: getattr(c, k) for k in ("ge", "gt", "le", "lt")
                               if getattr(c, k) is not None})}

    def serving_contract(self) -> dict[str, dict]:
        """What `feature_spec.json` carries for serving beside the fitted fields.

        `raw_names`: canonical role column -> the user's name (the bundle takes records
        as the user's files spell them); `raw_checks`: the declared numeric bounds, which
        the scorer enforces on requests as preprocessing enforced them on the data.
        """
        return {"raw_names": self.raw_names(), "raw_checks": self.numeric_bounds()}


def load_declaration(parameters: dict) -> DatasetDeclaration:
    """The active env's `dataset` block, typed; errors name `parameters_dataset.yml`."""
    block = parameters.get("dataset")
    if block is None:
        raise ValueError("parameters_dataset.yml: no `dataset:` block; every env needs one "
                         "(conf/base declares the embedded data; `recflow scaffold ENV` "
                         "writes one for your files)")
    try:
        return DatasetDeclaration.model_validate(block)
    except ValidationError as exc:
        problems = "; ".join(
            f"dataset.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"parameters_dataset.yml: {problems}") from None
