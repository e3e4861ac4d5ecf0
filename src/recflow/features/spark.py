"""The preprocessing FeatureSpec fitted and applied with Spark, equal to the in-memory path.

Same `feature_spec.json` and the same model-input columns as
`recflow.pipelines.preprocessing` (tests/unit/features/test_spark_parity.py), computed with
Spark DataFrame operations:

* split: exact order statistics of the timestamp from two small histograms
  (bucket counts, then distinct timestamps inside one bucket);
* vocabularies: `groupBy(column).count()`; the merged counts go through
  `Vocabulary.fit_counts`, so value order and ties are byte-identical;
* quantile edges: distinct raw values with their counts (`groupBy`), prepared
  on the driver with the transform's own numpy code and read with numpy's
  interpolation (`quantiles_from_counts`): exact; columns with more than
  `max_distinct` distinct values fall back to Spark's `percentile_approx`;
* standardize: `avg` / `var_pop` aggregates (agree to ~1e-15 relative);
* vocabulary lookups: broadcast joins; behaviour histories: a per-user window
  over strictly earlier timestamps (`rangeBetween(unboundedPreceding, -1)`);
* standardize / quantile_bucket / hash_cross outputs: `mapInPandas` running the
  same vectorised `FeatureSpec.transform_frame` per Arrow batch. Those three must
  match bit for bit and cannot natively: hash crosses use pandas' SipHash
  (`pd.util.hash_array`), and Java's `log1p` / float32 rounding may differ from
  numpy's in the last ulp, which moves rows across bucket edges.

Row order follows the in-memory path (time, then input file, then row in file),
so ties in time break the same way in histories and outputs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recflow.features.config import FeaturesConfig
from recflow.features.out_of_core import (
    STREAMABLE,
    cutoff_record,
    quantile_index_higher,
    quantiles_from_counts,
)
from recflow.features.spec import LABEL_PREFIX, FeatureSpec, FieldSpec, build_transform
from recflow.features.transforms import OOV, PAD

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
ORDER = ("timestamp", "_file", "_row")  # in-memory order: time, then file, then row


# ---- join -----------------------------------------------------------------------------
def join_events(interactions: DataFrame, users: DataFrame, items: DataFrame) -> DataFrame:
    """Impressions with user and item attributes, plus the order columns `_file`, `_row`.

    Unknown user/item ids fail like the in-memory `join_events`; attribute columns
    that clash get the same `_user` / `_item` suffixes pandas' merge gives them.
    """
    from pyspark.sql import functions as F

    try:
        log = interactions.select("*", F.col("_metadata.file_path").alias("_file"),
                                  F.col("_metadata.row_index").alias("_row"))
    except Exception:  # noqa: BLE001 - not read from files: keep the input's order
        log = interactions.withColumn("_file", F.lit("")).withColumn(
            "_row", F.monotonically_increasing_id())
    for key, table, name in (("user_id", users, "raw_users"), ("item_id", items, "raw_items")):
        unknown = log.join(table.select(key), key, "left_anti")
        n_unknown = unknown.count()
        if n_unknown:
            examples = [r[key] for r in unknown.select(key).distinct().limit(5).collect()]
            raise ValueError(
                f"raw_interactions.{key}: {n_unknown} row(s) reference ids missing "
                f"from {name}.{key}, e.g. {examples}"
            )
    events = log.join(F.broadcast(_suffixed(users, log.columns, "user_id", "_user")),
                      "user_id", "left")
    events = events.join(F.broadcast(_suffixed(items, events.columns, "item_id", "_item")),
                         "item_id", "left")
    return events.select(*log.columns, *[c for c in events.columns if c not in log.columns])


def _suffixed(table: DataFrame, existing: list[str], key: str, suffix: str) -> DataFrame:
    for column in table.columns:
        if column != key and column in existing:
            table = table.withColumnRenamed(column, column + suffix)
    return table


# ---- split ----------------------------------------------------------------------------
def _order_statistic(events: DataFrame, k: int, t_min: int, t_max: int, column: str) -> int:
    """The k-th smallest timestamp (0-based), from two small histograms."""
    from pyspark.sql import functions as F

    width = max(1, (t_max - t_min) // 4096 + 1)
    bucket = F.floor((F.col(column) - F.lit(t_min)) / F.lit(width))
    counts = (events.groupBy(bucket.alias("b")).count().orderBy("b").toPandas())
    ends = np.cumsum(counts["count"].to_numpy())
    i = int(np.searchsorted(ends, k, side="right"))
    before = int(ends[i - 1]) if i else 0
    inside = (events.filter(bucket == int(counts["b"].iloc[i]))
              .groupBy(column).count().orderBy(column).toPandas())
    j = int(np.searchsorted(np.cumsum(inside["count"].to_numpy()), k - before, side="right"))
    return int(inside[column].iloc[j])


def split_cutoffs(events: DataFrame, config: FeaturesConfig,
                  column: str = "timestamp") -> dict[str, Any]:
    """The split record `split_by_time` writes (temporal strategy), computed exactly."""
    from pyspark.sql import functions as F

    strategy = getattr(config.split, "strategy", "temporal")
    if strategy != "temporal":
        raise ValueError(f"preprocessing.split.strategy '{strategy}' is not supported on "
                         f"Spark; use 'temporal' or the in-memory `preprocessing` pipeline")
    row = events.agg(F.count(F.lit(1)).alias("n"), F.min(column).alias("lo"),
                     F.max(column).alias("hi")).first()
    n, t_min, t_max = int(row["n"]), int(row["lo"]), int(row["hi"])
    if not n:
        raise ValueError("raw_interactions_spark is empty")
    train_end, valid_end = (
        _order_statistic(events, quantile_index_higher(n, q), t_min, t_max, column)
        for q in (config.split.valid_start, config.split.test_start)
    )
    record = cutoff_record(config.split, t_min, t_max, train_end, valid_end, column)
    ts = F.col(column)
    counts = events.agg(
        F.sum((ts < train_end).cast("long")).alias("train"),
        F.sum(((ts >= train_end) & (ts < valid_end)).cast("long")).alias("valid"),
        F.sum((ts >= valid_end).cast("long")).alias("test"),
    ).first()
    record["rows"] = {name: int(counts[name] or 0) for name in SPLITS}
    logger.info("temporal split (spark) %s", record)
    return record


# ---- fit ------------------------------------------------------------------------------
def fit_spec(events: DataFrame, cutoffs: dict[str, Any], config: FeaturesConfig,
             max_distinct: int = 1_000_000) -> dict[str, Any]:
    """The feature spec JSON, fitted with Spark aggregations on the train rows."""
    from pyspark.sql import functions as F

    unsupported = [f"{n} ({c.transform})" for n, c in config.fields.items()
                   if c.transform not in STREAMABLE]
    if unsupported:
        raise ValueError(f"preprocessing.fields: {unsupported} are not supported on Spark "
                         f"(supported transforms: {sorted(STREAMABLE)})")
    missing = sorted({c for c in _raw_columns(config) if c not in events.columns})
    if missing:
        raise KeyError(f"parameters_preprocessing.yml names column(s) {missing} that the "
                       f"joined Spark events lack; available: {sorted(events.columns)}")
    train = events.filter(F.col(cutoffs.get("column", "timestamp")) < cutoffs["train_end"])
    train = train.cache()
    spec = FeatureSpec.from_config(config)
    for f in spec.fields:
        if f.kind == "sequence":
            continue
        transform = build_transform(f)
        column = f.columns[0]
        if f.transform == "vocab":
            counts = (train.filter(F.col(column).isNotNull())
                      .groupBy(column).count().toPandas())
            transform.fit_counts(pd.Series(counts["count"].to_numpy(np.int64),
                                           index=pd.Index(counts[column].tolist())))
        elif f.transform == "standardize":
            _fit_standardize(train, f, transform)
        elif f.transform == "quantile_bucket":
            _fit_quantiles(train, f, transform, max_distinct)
        spec.record_fit(f, transform)
    spec.link_sequence_vocabs()
    train.unpersist()
    spec.split = {k: v for k, v in cutoffs.items() if k != "rows"}
    spec.rows = dict(cutoffs["rows"])
    return spec.to_dict()


def _raw_columns(config: FeaturesConfig) -> list[str]:
    out = list(config.labels)
    for name, cfg in config.fields.items():
        if cfg.transform == "hash_cross":
            out += list(cfg.columns)
        elif cfg.transform == "sequence":
            out.append(cfg.event)
        else:
            out.append(cfg.column or name)
    return out


def _prepared(f: FieldSpec) -> Any:
    from pyspark.sql import functions as F

    x = F.col(f.columns[0]).cast("double")
    return F.log1p(F.greatest(x, F.lit(0.0))) if f.params.get("log") else x


def _fit_standardize(train: DataFrame, f: FieldSpec, t: Any) -> None:
    from pyspark.sql import functions as F

    x = _prepared(f)
    finite = F.when(~F.isnan(x) & (F.abs(x) < float("inf")), x)
    row = train.agg(F.count(finite).alias("n"), F.avg(finite).alias("mean"),
                    F.var_pop(finite).alias("var")).first()
    if not row["n"]:
        t.mean, t.std = 0.0, 1.0
        return
    t.mean = float(row["mean"])
    std = float(np.sqrt(max(row["var"], 0.0)))
    t.std = std if std > 1e-12 else 1.0


def _fit_quantiles(train: DataFrame, f: FieldSpec, t: Any, max_distinct: int) -> None:
    from pyspark.sql import functions as F

    column = f.columns[0]
    raw = train.select(F.col(column).cast("double").alias("v")).filter(F.col("v").isNotNull())
    qs = np.linspace(0, 1, t.num_buckets + 1)[1:-1]
    distinct = raw.select(F.approx_count_distinct("v")).first()[0]
    if distinct > max_distinct:
        logger.warning("%s: ~%d distinct values > %d: approximate quantile edges",
                       f.name, distinct, max_distinct)
        x = _prepared(f)
        edges = train.agg(F.percentile_approx(x, qs.tolist(), 100_000)).first()[0]
        t.edges = np.unique(np.asarray(edges, dtype=np.float64)).tolist()
        return
    counts = raw.groupBy("v").count().toPandas()
    x = t.prepare(counts["v"].to_numpy(np.float64))  # numpy's log1p, as in-memory
    finite = np.isfinite(x)
    merged = pd.Series(counts["count"].to_numpy(np.int64)[finite]).groupby(x[finite]).sum()
    if not len(merged):
        t.edges = []
        return
    values = merged.index.to_numpy(np.float64)
    t.edges = np.unique(quantiles_from_counts(values, merged.to_numpy(np.int64), qs)).tolist()


# ---- transform ------------------------------------------------------------------------
def transform(events: DataFrame, feature_spec: dict[str, Any]) -> dict[str, DataFrame]:
    """Model-input columns per split (same names, dtypes and row order as in memory)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import (
        FloatType,
        IntegerType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    spec = FeatureSpec.from_dict(feature_spec)
    spark = events.sparkSession
    frame = events
    for f in spec.fields:
        if f.transform == "vocab":
            frame = _lookup(spark, frame, f, f"__idx_{f.name}")
    later = Window.partitionBy("user_id").orderBy("timestamp").rangeBetween(
        Window.unboundedPreceding, -1)
    for f in spec.by_kind("sequence"):
        source = f"__idx_{f.shares_vocab_with}"
        behaved = F.when(F.col(f.params["event"]) == 1,
                         F.struct(*[F.col(c) for c in ORDER], F.col(source).alias("id")))
        earlier = F.array_sort(F.collect_list(behaved).over(later))
        tail = F.slice(earlier, F.greatest(F.size(earlier) - f.length + 1, F.lit(1)), f.length)
        frame = frame.withColumn(f"__hist_{f.name}", F.transform(tail, lambda s: s["id"]))
        size = F.size(F.col(f"__hist_{f.name}"))
        for j, name in enumerate(f.output_columns()):
            offset = F.lit(j - f.length) + size  # position in the tail, left-padded
            frame = frame.withColumn(name, F.when(offset >= 0, F.element_at(
                F.col(f"__hist_{f.name}"), (offset + 1).cast("int"))).otherwise(F.lit(PAD)))
    numeric = [f for f in spec.fields
               if f.transform in ("standardize", "quantile_bucket", "hash_cross")]
    outputs = _output_columns(spec, events.schema["user_id"].simpleString(),
                              events.schema["item_id"].simpleString())
    carry = ["timestamp", "_file", "_row"]
    keep = {
        "key_user": F.col("user_id"), "key_item": F.col("item_id"),
        "key_timestamp": F.col("timestamp").cast("long"),
        **{f.name: F.col(f"__idx_{f.name}") for f in spec.fields if f.transform == "vocab"},
        **{c: F.col(c).cast("long") for f in spec.by_kind("sequence")
           for c in f.output_columns()},
        **{LABEL_PREFIX + label: F.col(label).cast("long") for label in spec.labels},
    }
    sources = sorted({c for f in numeric for c in f.columns})
    staged = frame.select(*[v.alias(k) for k, v in keep.items()],
                          *[F.col(c).alias(f"__src_{c}") for c in sources],
                          *[F.col(c).alias(f"__ord{c}") for c in carry])
    types = {"bigint": LongType(), "float": FloatType(), "string": StringType(),
             "int": IntegerType()}
    schema = StructType(
        [StructField(c, types.get(t) or staged.schema[c].dataType) for c, t in outputs]
        + [StructField(f"__ord{c}", staged.schema[f"__ord{c}"].dataType) for c in carry])
    numeric_spec = {"version": feature_spec["version"], "labels": spec.labels,
                    "fields": [f.to_dict() for f in numeric]}
    names = [c for c, _ in outputs]

    def apply(batches: Any) -> Any:
        sub = FeatureSpec.from_dict(numeric_spec)
        for batch in batches:
            raw = pd.DataFrame({c: batch[f"__src_{c}"] for c in sources}, index=batch.index)
            features = sub.transform_frame(raw) if sub.fields else pd.DataFrame(index=batch.index)
            out = pd.concat([batch.drop(columns=[f"__src_{c}" for c in sources]), features],
                            axis=1)
            yield out[[*names, "__ordtimestamp", "__ord_file", "__ord_row"]]

    # persisted: the three splits are written from one computation, not three
    done = staged.mapInPandas(apply, schema).persist()
    result = {}
    cut = feature_spec["split"]
    ts = F.col("__ordtimestamp")
    for split, cond in (("train", ts < cut["train_end"]),
                        ("valid", (ts >= cut["train_end"]) & (ts < cut["valid_end"])),
                        ("test", ts >= cut["valid_end"])):
        result[split] = (done.filter(cond).orderBy("__ordtimestamp", "__ord_file", "__ord_row")
                         .select(*names))
    return result


def _lookup(spark: Any, frame: DataFrame, f: FieldSpec, out: str) -> DataFrame:
    """Vocabulary ids by a broadcast join: missing -> PAD (or its own id with ``missing:
    token``), unseen or rare -> OOV."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StructField, StructType

    column = f.columns[0]
    dtype = frame.schema[column].dataType
    values = list(f.state.get("values", []))
    table = spark.createDataFrame(
        [(v, i + 2) for i, v in enumerate(values)],
        StructType([StructField("__value", dtype), StructField(out, LongType())]),
    )
    joined = frame.join(F.broadcast(table), frame[column] == table["__value"], "left")
    ids = F.when(F.col(column).isNull(), F.lit(build_transform(f).missing_id)).otherwise(
        F.coalesce(F.col(out), F.lit(OOV)))
    return joined.drop("__value").withColumn(out, ids)


def _output_columns(spec: FeatureSpec, user_type: str, item_type: str) -> list[tuple[str, str]]:
    cols = [("key_user", user_type), ("key_item", item_type), ("key_timestamp", "bigint")]
    for f in spec.fields:
        kind = "float" if f.kind == "numeric" else "bigint"
        cols += [(c, kind) for c in f.output_columns()]
    cols += [(LABEL_PREFIX + label, "bigint") for label in spec.labels]
    return cols
