"""The retrieval evaluation protocol: which events count, their order, the held-out splits.

Everything the retrieval pipeline and its export decide about data lives here, so training,
validation, test and ONNX parity read the same rows (docs/evaluation.md, "Retrieval
protocol"):

* **Events** (`retrieval.event`, `retrieval.event_min`): the rows of the canonical event log
  that count as interactions: a label / numeric column > 0 (default `click`), that column
  >= `event_min` (e.g. a rating threshold), or `all` (every row, RecBole's rule for
  ML-100K).
* **Order** (`retrieval.tie_break`): per user by timestamp; equal timestamps keep the
  log's row order (`file_order`, a stable sort), go by item id (`item_id`) or by a seeded
  shuffle (`random`, `retrieval.seed`).
* **Splits** (`retrieval.split.strategy`):

  - ``leave_one_out``: per user, the last event is the test target and the second-to-last
    the validation target (`holdout_valid`; else it is training history). Training holds
    the rest. Validation history = the events before the validation target; test history
    = every event before the test target (the validation one included).
  - ``temporal``: training = events before ``train_end``; validation targets = the
    distinct items of ``[train_end, valid_end)`` with the training events as history;
    test targets = the distinct items at or after ``valid_end`` with every event before
    ``valid_end`` as history. Without `holdout_valid`, training runs up to ``valid_end``
    and there is no validation set. Cut-offs come from the preprocessing split record
    when it is temporal, else from `retrieval.split`.

  ``seen`` of an evaluation user: the distinct items of their history (all of it, not
  only the last `eval_history`) minus their targets (as RecBole: a target is never
  masked), masked when a model's `exclude_seen` is on. Users without history are not
  evaluated. Cold items: catalogue items with no row at all in the training window.

Vectorised numpy / pandas; the only per-user Python work builds the list of arrays /
sets an `EvalSet` holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recflow.evaluation.aggregate import mean_std
from recflow.evaluation.stats import dataset_statistics
from recflow.features.split import DROPPED, SPLIT_CODES, assign_splits, temporal_cutoffs
from recflow.metrics.retrieval import retrieval_report
from recflow.models.retrieval import RETRIEVAL_MODELS, RetrievalData
from recflow.models.retrieval.base import EvalSet
from recflow.tokenization.semantic_ids import SemanticIdTable
from recflow.training.core import Checkpoints, FitConfig

if TYPE_CHECKING:
    from recflow.evaluation.retrieval_params import RetrievalParams

__all__ = [
    "build_data",
    "configure",
    "counted_events",
    "data_hash",
    "evaluate",
    "fingerprint",
    "fit_and_score",
    "fit_config",
    "item_feature_codes",
    "order_events",
    "protocol_record",
    "report",
    "semantic_id_matrix",
    "split_events",
    "summarise",
    "training_events",
]

logger = logging.getLogger(__name__)

_FILE = "parameters_retrieval.yml"
EVENT_COLUMNS = ["user_id", "item_id", "timestamp"]
TRAIN, VALID, TEST = SPLIT_CODES["train"], SPLIT_CODES["valid"], SPLIT_CODES["test"]
#: per-entry model params that may change between a run and its resume (not fingerprinted)
RESUME_FREE_PARAMS = ("epochs",)


# ---- which events, in which order --------------------------------------------------------
def _check_roles(interactions: pd.DataFrame) -> None:
    lacking = [role for role, column in (("user", "user_id"), ("item", "item_id"),
                                         ("time", "timestamp"))
               if column not in interactions.columns]
    if lacking:
        raise ValueError(f"retrieval needs the user, item and time roles of the event log; "
                         f"the dataset declares no {', '.join(lacking)} "
                         f"(parameters_dataset.yml: dataset.events."
                         f"{', dataset.events.'.join(lacking)})")


def _event_mask(interactions: pd.DataFrame, event: str, event_min: float | None) -> np.ndarray:
    if event == "all":
        return np.ones(len(interactions), dtype=bool)
    if event not in interactions.columns:
        raise KeyError(f"{_FILE}: retrieval.event '{event}' is not a label or column of the "
                       f"event log ({list(interactions.columns)}); or `all` for every row")
    column = interactions[event]
    if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
        raise TypeError(f"{_FILE}: retrieval.event '{event}' is a {column.dtype} column; "
                        "it must be a label or numeric column (rows > 0, or >= event_min, "
                        "count)")
    values = column.to_numpy(np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        return values >= event_min if event_min is not None else values > 0


def order_events(events: pd.DataFrame, tie_break: str, seed: int = 0) -> pd.DataFrame:
    """Rows sorted by user, then time; equal times in row order (`file_order`), by item id
    (`item_id`) or in a seeded shuffle (`random`). Index reset."""
    if tie_break not in ("file_order", "item_id", "random"):
        raise ValueError(f"{_FILE}: retrieval.tie_break '{tie_break}': expected file_order, "
                         "item_id or random")
    order = (np.random.default_rng(seed).permutation(len(events)) if tie_break == "random"
             else np.arange(len(events)))
    keys = ["item_id"] if tie_break == "item_id" else []
    for key in [*keys, "timestamp", "user_id"]:  # least significant first, each stable
        codes, _ = pd.factorize(events[key].to_numpy()[order], sort=True)
        order = order[np.argsort(codes, kind="stable")]
    return events.iloc[order].reset_index(drop=True)


def counted_events(interactions: pd.DataFrame, params: RetrievalParams) -> pd.DataFrame:
    """The rows that count (`event`, `event_min`) as user_id / item_id / timestamp, ordered
    by user, time and the tie-break."""
    _check_roles(interactions)
    keep = _event_mask(interactions, params.event, params.event_min)
    events = interactions.loc[keep, EVENT_COLUMNS].reset_index(drop=True)
    return order_events(events, params.tie_break, params.seed)


# ---- the split -----------------------------------------------------------------------------
def _cutoffs(interactions: pd.DataFrame, cutoffs: dict[str, Any],
             params: RetrievalParams) -> tuple[int, int]:
    if "train_end" in cutoffs and "valid_end" in cutoffs:
        return int(cutoffs["train_end"]), int(cutoffs["valid_end"])
    own = temporal_cutoffs(interactions["timestamp"], params.split)
    return int(own["train_end"]), int(own["valid_end"])


def split_events(interactions: pd.DataFrame, cutoffs: dict[str, Any],
                 params: RetrievalParams) -> tuple[pd.DataFrame, np.ndarray, int | None]:
    """(counted events in order, int8 split code per event, the training window's end time
    for temporal splits (None for leave-one-out))."""
    events = counted_events(interactions, params)
    if params.split.strategy == "temporal":
        train_end, valid_end = _cutoffs(interactions, cutoffs, params)
        end = train_end if params.holdout_valid else valid_end
        ts = events["timestamp"].to_numpy()
        codes = np.where(ts < end, TRAIN, np.where(ts < valid_end, VALID, TEST)).astype(np.int8)
        return events, codes, end
    if params.split.strategy != "leave_one_out":
        raise ValueError(f"{_FILE}: retrieval.split.strategy '{params.split.strategy}': "
                         "next-item retrieval takes 'temporal' or 'leave_one_out'")
    codes = assign_splits(events, params.split)  # stable: keeps the tie-break order
    if not params.holdout_valid:
        codes[codes == VALID] = TRAIN
    return events, codes, None


def training_events(interactions: pd.DataFrame, cutoffs: dict[str, Any],
                    params: RetrievalParams) -> pd.DataFrame:
    """Exactly the events the retrieval models train on (never a validation or test
    target): user_id, item_id, timestamp, ordered by user, time and the tie-break."""
    events, codes, _ = split_events(interactions, cutoffs, params)
    return events.loc[codes == TRAIN, EVENT_COLUMNS].reset_index(drop=True)


# ---- item side inputs ----------------------------------------------------------------------
def semantic_id_matrix(semantic_ids: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """(n_items + 1, T) codes aligned with item indices (row 0 unused)."""
    table = SemanticIdTable.from_frame(semantic_ids)
    pos = pd.Series(np.arange(len(table.item_ids)), index=table.item_ids)
    missing = np.setdiff1d(item_ids, table.item_ids)
    if len(missing):
        raise ValueError(f"semantic-ID table lacks {len(missing)} catalogue items, e.g. "
                         f"{missing[:5].tolist()}; re-run the semantic_ids pipeline")
    sids = np.zeros((len(item_ids) + 1, table.n_tokens), dtype=np.int64)
    sids[1:] = table.ids[pos.loc[item_ids].to_numpy()]
    return sids


def item_feature_codes(items: pd.DataFrame, item_ids: np.ndarray,
                       columns: list[str] | None) -> dict[str, np.ndarray]:
    """(n_items + 1,) int codes per item column, 0 = padding / missing (two-tower features).

    Default columns: the text/categorical columns of raw_items with at most n_items / 4
    distinct values (category, brand, genres; not titles or ids).
    """
    frame = items.drop_duplicates("item_id").set_index("item_id").loc[item_ids]
    if columns is None:
        columns = [c for c in frame.columns
                   if not pd.api.types.is_numeric_dtype(frame[c])
                   and frame[c].nunique() <= max(len(frame) // 4, 1)]
    missing = sorted(set(columns) - set(frame.columns))
    if missing:
        raise KeyError(f"{_FILE}: retrieval.item_features {missing} are not "
                       f"columns of raw_items ({sorted(frame.columns)})")
    out = {}
    for column in columns:
        codes, _ = pd.factorize(frame[column])
        out[column] = np.concatenate([[0], codes + 1]).astype(np.int64)  # NaN: -1 + 1 = 0
    return out


# ---- evaluation sets -----------------------------------------------------------------------
def _groups(gid: np.ndarray, values: np.ndarray, groups: np.ndarray) -> list[np.ndarray]:
    """`values` (rows sorted by `gid`, every gid in `groups`) as one array per group."""
    return np.split(values, np.searchsorted(gid, groups[1:])) if len(groups) else []


def _evalset(gid: np.ndarray, idx: np.ndarray, codes: np.ndarray, target: int,
             eval_history: int, cold: np.ndarray, n_items: int) -> EvalSet:
    """Users with `target`-coded events and earlier history (codes in [train, target))."""
    is_hist = (codes >= TRAIN) & (codes < target)
    is_target = codes == target
    users = np.intersect1d(gid[is_target], gid[is_hist])
    is_hist &= np.isin(gid, users)
    is_target &= np.isin(gid, users)
    h_gid, h_idx = gid[is_hist], idx[is_hist]
    # the last `eval_history` history events of each user, in order
    ends = np.searchsorted(h_gid, users, side="right")[np.searchsorted(users, h_gid)]
    recent = ends - np.arange(len(h_gid)) <= eval_history
    histories = _groups(h_gid[recent], h_idx[recent], users)
    pair = n_items + 1  # (user, item) as one int64 key
    t_keys = np.unique(gid[is_target].astype(np.int64) * pair + idx[is_target])
    targets = [set(t.tolist()) for t in _groups(t_keys // pair, t_keys % pair, users)]
    s_keys = np.setdiff1d(h_gid.astype(np.int64) * pair + h_idx, t_keys)  # sorted, unique
    seen = _groups(s_keys // pair, s_keys % pair, users)
    return EvalSet(histories, targets, set(cold.tolist()), n_items, seen=seen)


def build_data(interactions: pd.DataFrame, items: pd.DataFrame, cutoffs: dict[str, Any],
               params: RetrievalParams, semantic_ids: pd.DataFrame | None = None,
               seed: int | None = None) -> tuple[RetrievalData, EvalSet]:
    """(the models' training data with the validation set in `data.valid`, the test set).

    `data.fit` holds the run's training settings; `configure` adds an entry's
    `exclude_seen` and checkpoints.
    """
    item_ids = np.sort(items["item_id"].unique())
    _check_roles(interactions)
    unknown = ~np.isin(interactions["item_id"].to_numpy(), item_ids)
    if unknown.any():
        raise ValueError(f"event log item_id: {int(unknown.sum())} rows name items missing "
                         "from the items table, e.g. "
                         f"{interactions.loc[unknown, 'item_id'].unique()[:5].tolist()}")
    events, codes, window_end = split_events(interactions, cutoffs, params)
    idx = np.searchsorted(item_ids, events["item_id"].to_numpy()) + 1
    gid, _ = pd.factorize(events["user_id"].to_numpy(), sort=True)  # events sorted by user
    trained = np.zeros(len(item_ids) + 1, dtype=bool)
    trained[idx[codes == TRAIN]] = True
    if window_end is not None:  # temporal: any row (impression too) before the window's end
        logged = interactions["timestamp"].to_numpy() < window_end
        trained[np.searchsorted(item_ids, interactions.loc[logged, "item_id"].to_numpy()) + 1] = True
    cold = np.flatnonzero(~trained[1:]) + 1
    is_train = codes == TRAIN
    train_users = np.unique(gid[is_train])
    data = RetrievalData(
        n_items=len(item_ids), train_sequences=_groups(gid[is_train], idx[is_train], train_users),
        semantic_ids=None if semantic_ids is None else semantic_id_matrix(semantic_ids, item_ids),
        item_features=item_feature_codes(items, item_ids, params.item_features),
        cold_items=cold, seed=params.seed if seed is None else seed)
    if params.holdout_valid:
        valid = _evalset(gid, idx, codes, VALID, params.eval_history, cold, len(item_ids))
        if valid.histories:
            data.valid = valid
        else:
            logger.warning("retrieval: no user has a validation target after training "
                           "history; training without validation (last epoch's weights)")
    data.fit = fit_config(params, with_valid=data.valid is not None)
    test = _evalset(gid, idx, codes, TEST, params.eval_history, cold, len(item_ids))
    names = np.array(["dropped", "train", "valid", "test"], dtype=object)[codes - DROPPED]
    stats = dataset_statistics(events, split=names, time_col="timestamp")
    test.statistics = stats | {"catalogue_items": len(item_ids), "cold_items": len(cold),
                               "valid_users": len(data.valid.histories) if data.valid else 0,
                               "test_users": len(test.histories)}
    return data, test


# ---- training settings, checkpoints --------------------------------------------------------
def fit_config(params: RetrievalParams, with_valid: bool = True,
               directory: str | None = None, seed: int | None = None) -> FitConfig:
    """The training core's settings of every retrieval model (`retrieval.training`); each
    model sets its own `epochs`. Without validation: the last epoch's weights."""
    t = params.training
    monitor = {"monitor": "valid_" + t.monitor, "mode": "max", "patience": t.patience}
    if not with_valid:
        monitor = {"monitor": "train_loss", "mode": "min", "patience": None}
    return FitConfig(seed=params.seed if seed is None else seed, smoothing=t.smoothing,
                     min_delta=t.min_delta, progress=t.progress, checkpoint_dir=directory,
                     resume=t.resume, **monitor)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _flat(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    flat = np.concatenate(seqs).astype(np.int64) if len(seqs) else np.zeros(0, np.int64)
    return lengths, flat


def data_hash(data: RetrievalData) -> str:
    """Hash of what a model trains and validates on: training sequences, validation
    histories / targets, item features, semantic IDs."""
    parts = [np.array([data.n_items]), *_flat(data.train_sequences)]
    if data.valid is not None:
        parts += [*_flat(data.valid.histories),
                  *_flat([np.sort(np.fromiter(t, np.int64)) for t in data.valid.targets])]
    parts += [data.item_features[k] for k in sorted(data.item_features)]
    if data.semantic_ids is not None:
        parts.append(data.semantic_ids)
    return _digest(*parts)


def _exclude_seen(params: RetrievalParams, name: str) -> bool:
    own = params.models[name].exclude_seen
    return params.exclude_seen if own is None else own


def protocol_record(params: RetrievalParams) -> dict[str, Any]:
    """The protocol knobs as plain data (metrics files, the report, checkpoint fingerprints)."""
    if params.event == "all":
        rule = "all"
    elif params.event_min is not None:
        rule = f"{params.event} >= {params.event_min:g}"
    else:
        rule = f"{params.event} > 0"
    return {**params.split.parameters(), "event": rule, "tie_break": params.tie_break,
            "holdout_valid": params.holdout_valid, "eval_history": params.eval_history,
            "exclude_seen": params.exclude_seen, "ranking": "full catalogue"}


def fingerprint(params: RetrievalParams, name: str, seed: int, digest: str) -> dict[str, Any]:
    """What must not change between a run and its resume: the entry, the protocol, the
    training settings that decide the next step, the seed and the data (`data_hash`)."""
    entry = params.models[name]
    t = params.training
    return {
        "entry": name, "model": entry.name, "tokenizer": entry.tokenizer,
        "exclude_seen": _exclude_seen(params, name),
        "params": {k: v for k, v in sorted(entry.params.items()) if k not in RESUME_FREE_PARAMS},
        "protocol": protocol_record(params),
        "training": {"monitor": t.monitor, "patience": t.patience, "smoothing": t.smoothing,
                     "min_delta": t.min_delta},
        "seed": int(seed),
        "data": digest,
    }


def configure(data: RetrievalData, params: RetrievalParams, name: str, seed: int,
              digest: str | None = None) -> RetrievalData:
    """Point `data` at one entry and seed: `seed`, `exclude_seen`, `fit` and `checkpoints`
    in `<training.checkpoint_dir>/<name>/<hash of the fingerprint>` (None without a
    checkpoint_dir). `digest`: `data_hash(data)` when already computed."""
    data.seed = seed
    data.exclude_seen = _exclude_seen(params, name)
    data.checkpoints, directory = None, None
    if params.training.checkpoint_dir:
        print_ = fingerprint(params, name, seed, digest or data_hash(data))
        key = hashlib.sha256(json.dumps(print_, sort_keys=True, default=str).encode())
        directory = str(Path(params.training.checkpoint_dir) / name / key.hexdigest()[:12])
        data.checkpoints = Checkpoints(directory, print_)
    data.fit = fit_config(params, data.valid is not None, directory, seed)
    return data


# ---- fit, score, summarise -----------------------------------------------------------------
def evaluate(model: Any, evalset: EvalSet, ks: list[int], exclude_seen: bool
             ) -> dict[str, Any]:
    """Full-catalogue metrics of a fitted model on `evalset` (seen items masked when
    `exclude_seen`), with inference throughput."""
    start = time.perf_counter()
    if exclude_seen:
        topk = model.recommend(evalset.histories, max(ks), evalset.seen)
    else:
        topk = model.recommend(evalset.histories, max(ks))
    seconds = time.perf_counter() - start
    metrics = retrieval_report(topk, evalset.targets, evalset.cold_items, evalset.n_items, ks)
    metrics["exclude_seen"] = exclude_seen
    metrics["users_per_second"] = round(len(evalset.histories) / max(seconds, 1e-9), 1)
    return metrics


def fit_and_score(params: RetrievalParams, name: str, data: RetrievalData, test: EvalSet
                  ) -> tuple[Any, dict[str, Any]]:
    """Fit the entry on `data` (configured by `configure`) and score it on `test`."""
    entry = params.models[name]
    model = RETRIEVAL_MODELS.create(entry.name, params=entry.params)
    start = time.perf_counter()
    model.fit(data)
    train_seconds = time.perf_counter() - start
    metrics = evaluate(model, test, params.ks, data.exclude_seen)
    metrics.update({"seed": data.seed, "params": model.n_params(),
                    "train_seconds": round(train_seconds, 3)})
    result = getattr(model, "fit_result", None)
    if result is not None:
        metrics.update({"monitor": result.monitor, "best_epoch": result.best_epoch,
                        "best_valid": _finite(result.best_value),
                        "epochs_trained": len(result.history),
                        "seconds_to_best": round(sum(row.get("seconds", 0.0) for row in
                                                     result.history[:result.best_epoch]), 3),
                        "stopped_early": result.stopped_early,
                        "epochs": [_plain(row) for row in result.history]})
    elif getattr(model, "history", None):
        metrics["train_loss"] = [round(float(x), 5) for x in model.history]
    return model, metrics


def summarise(params: RetrievalParams, name: str, runs: list[dict[str, Any]],
              statistics: dict[str, Any] | None) -> dict[str, Any]:
    """One entry's metrics file: the mean over seeds at the top level, `seeds` = {mean,
    std, n, runs}, the protocol (with this entry's exclude_seen) and dataset statistics."""
    entry = params.models[name]
    scalars = [{k: v for k, v in r.items() if not isinstance(v, list | dict | bool)}
               for r in runs]
    summary = mean_std(scalars)
    protocol = protocol_record(params) | {"exclude_seen": _exclude_seen(params, name)}
    metrics: dict[str, Any] = {**summary["mean"], "model": entry.name,
                               "exclude_seen": protocol["exclude_seen"],
                               "seeds": summary | {"runs": runs}, "protocol": protocol,
                               "split": params.split.parameters(), "dataset": statistics}
    if entry.tokenizer:
        metrics["tokenizer"] = entry.tokenizer
    return metrics


DESCRIPTIONS = {
    "temporal": "global temporal split: train on events before train_end, validate on the "
                "distinct items of [train_end, valid_end), test = the distinct items each "
                "user interacts with at or after valid_end (history: every event before it)",
    "leave_one_out": "leave-one-out per user: test = the last event, validation = the "
                     "second-to-last, history = the events before the target; train on the "
                     "rest",
}


def report(params: RetrievalParams, metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The report contract (pinned by the tests): {"models": {NAME: {"recall@10", "ndcg@10", "recall@10_cold",
    ...}}, "protocol": {...}} (full-catalogue ranking, test split)."""
    models = {k: _cleaned(v) for k, v in metrics.items()}
    dataset = next((m["dataset"] for m in models.values() if m.get("dataset")), None)
    for vals in models.values():
        for key in ("dataset", "split", "protocol"):
            vals.pop(key, None)
    base = models.get(params.baseline, {})
    for vals in models.values():
        if base.get("recall@10"):
            vals["recall@10_lift_over_baseline"] = round(vals["recall@10"] / base["recall@10"], 3)
    description = DESCRIPTIONS[params.split.strategy]
    if not params.holdout_valid:
        description += " (holdout_valid false: the validation events are training history)"
    protocol = {"description": description + "; full-catalogue ranking, no sampled negatives",
                **protocol_record(params),
                "exclude_seen": {n: _exclude_seen(params, n) for n in params.models}}
    return {"baseline": params.baseline, "protocol": protocol,
            "split": params.split.parameters(), "seeds": params.seeds or [params.seed],
            "event": protocol["event"], "dataset": dataset, "models": models}


def _finite(value: Any) -> Any:
    return value if not isinstance(value, float) or np.isfinite(value) else None


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(float(v), 6) if isinstance(v, float) else v for k, v in row.items()}


def _cleaned(value: Any) -> Any:
    """NaN/inf -> None all the way down (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _cleaned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    return _finite(value)
