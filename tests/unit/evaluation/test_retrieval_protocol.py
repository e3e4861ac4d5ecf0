"""The retrieval evaluation protocol (recflow.evaluation.retrieval_protocol) on hand-built logs.

Item ids 1..N are item indices 1..N (the catalogue is sorted), so expected sequences read
as item ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from recflow.datasets.movielens import load_movielens
from recflow.evaluation import retrieval_protocol as rp
from recflow.evaluation.retrieval_params import RetrievalParams
from recflow.models.retrieval import RETRIEVAL_MODELS
from recflow.models.retrieval.base import mask_seen, top_k
from recflow.pipelines.retrieval import nodes
from recflow.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS
from recflow.training.core import Checkpoints, Step, build_optimizer, fit

REPO = Path(__file__).resolve().parents[3]
POPULARITY = {"popularity": {"name": "popularity"}}


def params(**kw) -> RetrievalParams:
    return RetrievalParams.model_validate({"models": POPULARITY, **kw})


def log(rows, **columns) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return frame.assign(click=1, **columns)


def items(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({"item_id": np.arange(1, n + 1)})


def lists(arrays) -> list[list[int]]:
    return [np.asarray(a).tolist() for a in arrays]


# ---- ties ------------------------------------------------------------------------------------
TIES = log([("u", 3, 10), ("u", 1, 10), ("u", 2, 5), ("u", 4, 10), ("v", 5, 1)])


def test_file_order_keeps_row_order_within_equal_timestamps() -> None:
    events = rp.counted_events(TIES, params(tie_break="file_order"))
    assert events["item_id"].tolist() == [2, 3, 1, 4, 5]
    assert list(events.columns) == ["user_id", "item_id", "timestamp"]


def test_item_id_tie_break_orders_equal_timestamps_by_item() -> None:
    events = rp.counted_events(TIES, params(tie_break="item_id"))
    assert events["item_id"].tolist() == [2, 1, 3, 4, 5]


def test_random_tie_break_is_seeded_and_only_reorders_ties() -> None:
    orders = {seed: tuple(rp.counted_events(TIES, params(tie_break="random", seed=seed))
                          ["item_id"]) for seed in range(12)}
    assert orders[3] == tuple(rp.counted_events(TIES, params(tie_break="random", seed=3))
                              ["item_id"])  # reproducible
    assert len(set(orders.values())) > 1  # the seed matters
    for order in orders.values():  # time still rules: item 2 (t=5) first, user v last
        assert order[0] == 2 and order[-1] == 5 and sorted(order[1:4]) == [1, 3, 4]


def test_the_tie_break_decides_leave_one_out_targets() -> None:
    rows = log([("u", 1, 1), ("u", 2, 2), ("u", 4, 3), ("u", 3, 3)])
    loo = {"strategy": "leave_one_out"}
    _, by_file = rp.build_data(rows, items(), {}, params(split=loo))
    _, by_item = rp.build_data(rows, items(), {}, params(split=loo, tie_break="item_id"))
    assert by_file.targets == [{3}] and lists(by_file.histories) == [[1, 2, 4]]
    assert by_item.targets == [{4}] and lists(by_item.histories) == [[1, 2, 3]]


# ---- which events count ----------------------------------------------------------------------
def test_event_all_click_and_event_min() -> None:
    rows = log([("u", 1, 1), ("u", 2, 2), ("u", 3, 3), ("u", 4, 4)])
    rows["click"] = [1, 0, 1, 0]
    rows["rating"] = [5.0, 1.0, 3.0, 4.0]
    pick = {"all": dict(event="all"), "click": dict(event="click"),
            "rating>=4": dict(event="rating", event_min=4), "rating>0": dict(event="rating")}
    got = {k: rp.counted_events(rows, params(**kw))["item_id"].tolist() for k, kw in pick.items()}
    assert got == {"all": [1, 2, 3, 4], "click": [1, 3], "rating>=4": [1, 4],
                   "rating>0": [1, 2, 3, 4]}
    assert rp.protocol_record(params(event="rating", event_min=4))["event"] == "rating >= 4"
    with pytest.raises(KeyError, match="retrieval.event 'stars'"):
        rp.counted_events(rows, params(event="stars"))
    with pytest.raises(ValidationError, match="event_min"):
        params(event="all", event_min=4)


# ---- leave-one-out with a held-out validation target -----------------------------------------
LOO_LOG = log([("a", 1, 1), ("a", 2, 2), ("a", 3, 3), ("a", 4, 4),
               ("b", 2, 1), ("b", 3, 2), ("b", 5, 3),
               ("c", 1, 1), ("c", 6, 2),               # 2 events < min_interactions: training
               ("d", 1, 1), ("d", 2, 2), ("d", 1, 3)])  # re-consumes item 1 as its test target
LOO = {"strategy": "leave_one_out"}


def test_leave_one_out_holds_the_validation_target_out_of_training() -> None:
    data, test = rp.build_data(LOO_LOG, items(), {}, params(split=LOO))
    assert lists(data.train_sequences) == [[1, 2], [2], [1, 6], [1]]
    valid = data.valid
    assert valid.targets == [{3}, {3}, {2}]
    assert lists(valid.histories) == [[1, 2], [2], [1]]
    assert lists(valid.seen) == [[1, 2], [2], [1]]
    # test: history = every event before the test item, the validation item included
    assert test.targets == [{4}, {5}, {1}]
    assert lists(test.histories) == [[1, 2, 3], [2, 3], [1, 2]]
    # seen = training items + the validation item, never the user's own target
    assert lists(test.seen) == [[1, 2, 3], [2, 3], [2]]
    assert test.cold_items == {3, 4, 5}  # no training event
    assert data.fit.monitor == "valid_ndcg@10" and data.fit.mode == "max"
    events = rp.training_events(LOO_LOG, {}, params(split=LOO))
    assert list(events.itertuples(index=False, name=None)) == [
        ("a", 1, 1), ("a", 2, 2), ("b", 2, 1), ("c", 1, 1), ("c", 6, 2), ("d", 1, 1)]


def test_leave_one_out_without_holdout_trains_on_the_validation_item() -> None:
    data, test = rp.build_data(LOO_LOG, items(), {}, params(split=LOO, holdout_valid=False))
    assert data.valid is None
    assert lists(data.train_sequences) == [[1, 2, 3], [2, 3], [1, 6], [1, 2]]
    assert lists(test.histories) == [[1, 2, 3], [2, 3], [1, 2]]
    assert data.fit.monitor == "train_loss" and data.fit.patience is None


def test_eval_history_truncates_histories_but_not_seen() -> None:
    _, test = rp.build_data(LOO_LOG, items(), {}, params(split=LOO, eval_history=2))
    assert lists(test.histories) == [[2, 3], [2, 3], [1, 2]]
    assert lists(test.seen)[0] == [1, 2, 3]


# ---- temporal with a held-out validation window ----------------------------------------------
TEMPORAL_LOG = pd.concat([
    log([("a", 1, 5), ("a", 2, 12), ("a", 3, 15), ("a", 2, 16), ("a", 4, 25), ("a", 5, 30),
         ("b", 2, 3), ("b", 6, 21),
         ("c", 1, 14), ("c", 3, 22)]),            # c's first event is in the validation window
    log([("b", 6, 2)]).assign(click=0),          # an impression: item 6 is logged, not cold
], ignore_index=True)
CUTS = {"train_end": 10, "valid_end": 20}


def test_temporal_validation_window_and_test_history() -> None:
    data, test = rp.build_data(TEMPORAL_LOG, items(), CUTS, params())
    assert lists(data.train_sequences) == [[1], [2]]  # before train_end
    assert data.valid.targets == [{2, 3}]             # distinct items of [10, 20); c: no history
    assert lists(data.valid.histories) == [[1]] and lists(data.valid.seen) == [[1]]
    assert test.targets == [{4, 5}, {6}, {3}]         # at or after valid_end
    assert lists(test.histories) == [[1, 2, 3, 2], [2], [1]]
    assert lists(test.seen) == [[1, 2, 3], [2], [1]]
    assert test.cold_items == {3, 4, 5}               # no row at all before train_end
    assert rp.training_events(TEMPORAL_LOG, CUTS, params())["timestamp"].max() < 10


def test_temporal_without_holdout_trains_up_to_the_test_cutoff() -> None:
    data, test = rp.build_data(TEMPORAL_LOG, items(), CUTS, params(holdout_valid=False))
    assert data.valid is None
    assert lists(data.train_sequences) == [[1, 2, 3, 2], [2], [1]]
    assert test.targets == [{4, 5}, {6}, {3}]
    assert test.cold_items == {4, 5}


def test_an_empty_validation_window_means_training_without_validation() -> None:
    data, _ = rp.build_data(TEMPORAL_LOG, items(), {"train_end": 10, "valid_end": 11}, params())
    assert data.valid is None and data.fit.monitor == "train_loss"


def test_temporal_computes_cutoffs_when_the_preprocessing_split_is_not_temporal() -> None:
    data, test = rp.build_data(TEMPORAL_LOG, items(), {"strategy": "leave_one_out"},
                               params(split={"strategy": "temporal", "valid_start": 0.5,
                                             "test_start": 0.8}))
    assert data.valid is not None and test.histories


# ---- masking seen items ------------------------------------------------------------------------
def test_mask_seen_and_top_k_skip_excluded_items() -> None:
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0], [5.0, 4.0, 3.0, 2.0]])
    masked = mask_seen(scores.clone(), [np.array([1, 3]), np.array([], dtype=np.int64)])
    assert torch.isinf(masked[0, [0, 2]]).all() and not torch.isinf(masked[1]).any()
    top = top_k(lambda h: scores[: len(h)].clone(), [np.array([1]), np.array([2])], 2,
                [np.array([1, 2]), np.array([4])])
    assert top.tolist() == [[3, 4], [1, 2]]


def test_exclude_seen_changes_the_popularity_top_k() -> None:
    """Training counts: item 1 x3, 2 x2, 6 x1 -> ranking 1, 2, 6, 3, 4, 5 for everyone."""
    data, test = rp.build_data(LOO_LOG, items(), {}, params(split=LOO))
    model = RETRIEVAL_MODELS.create("popularity").fit(data)
    assert model.recommend(test.histories, 3).tolist() == [[1, 2, 6]] * 3
    assert model.recommend(test.histories, 3, test.seen).tolist() == [
        [6, 4, 5], [1, 6, 4], [1, 6, 3]]  # seen a: 1,2,3; b: 2,3; d: 2 (its target 1 stays)
    plain = rp.evaluate(model, test, [3], exclude_seen=False)
    masked = rp.evaluate(model, test, [3], exclude_seen=True)
    assert plain["recall@3"] == pytest.approx(1 / 3) and plain["exclude_seen"] is False
    assert masked["recall@3"] == pytest.approx(2 / 3) and masked["exclude_seen"] is True


# ---- the RecBole env -------------------------------------------------------------------------
def recbole_split(rows: list[tuple]) -> dict:
    """RecBole 1.2.1's LS valid_and_test, written from its code: a stable sort of the whole
    file by timestamp, per user in that order, the last two -> valid, test."""
    per_user: dict = {}
    for user, item, _ in sorted(rows, key=lambda r: r[2]):  # sorted() is stable
        per_user.setdefault(user, []).append(item)
    out = {}
    for user, seq in per_user.items():
        legal = min(2, len(seq) - 1)
        out[user] = (seq[:len(seq) - legal], seq[-2] if legal == 2 else None, seq[-1])
    return out


def recbole_params() -> RetrievalParams:
    loader = CONFIG_LOADER_CLASS(conf_source=str(REPO / "conf"), env="movielens_recbole",
                                 **CONFIG_LOADER_ARGS)
    return RetrievalParams.model_validate(loader["parameters"]["retrieval"])


def test_movielens_recbole_env_reproduces_recboles_split() -> None:
    p = recbole_params()
    assert (p.event, p.tie_break, p.holdout_valid, p.split.strategy, p.eval_history) == (
        "all", "file_order", True, "leave_one_out", 50)
    assert {n: e.exclude_seen for n, e in p.models.items()} == {
        "popularity": True, "two_tower": True, "sasrec": False, "tiger": False}
    assert p.models["sasrec"].params["max_len"] == 50
    # file order, not time order; ratings 1-5 (all count); ties within users 1, 2 and 3
    rows = [(1, 14, 90, 4), (1, 16, 100, 3), (2, 11, 50, 1), (1, 10, 100, 5), (3, 13, 70, 3),
            (1, 12, 100, 2), (2, 15, 60, 4), (3, 16, 70, 1), (2, 17, 60, 2), (3, 18, 80, 5)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    frame = frame.assign(click=(frame["rating"] >= 4).astype(int))
    catalogue = pd.DataFrame({"item_id": np.arange(10, 19)})
    data, test = rp.build_data(frame, catalogue, {}, p)
    ids = np.arange(10, 19)

    def back(arrays):
        return [ids[np.asarray(a, dtype=int) - 1].tolist() for a in arrays]

    expected = {1: ([14, 16], 10, 12), 2: ([11], 15, 17), 3: ([13], 16, 18)}  # by hand
    assert recbole_split([r[:3] for r in rows]) == expected
    assert back(data.train_sequences) == [v[0] for v in expected.values()]
    assert [back([list(t)])[0] for t in data.valid.targets] == [[v[1]] for v in expected.values()]
    assert [back([list(t)])[0] for t in test.targets] == [[v[2]] for v in expected.values()]
    assert back(test.histories) == [[14, 16, 10], [11, 15], [13, 16]]
    assert back(test.seen) == [[10, 14, 16], [11, 15], [13, 16]]
    assert test.statistics["splits"]["train"]["interactions"] == 4


ML100K = REPO / "data/01_raw/movielens/ml-100k/ml-100k.inter"


@pytest.mark.skipif(not ML100K.is_file(), reason="ML-100K not fetched (recflow fetch-movielens)")
def test_movielens_recbole_split_on_the_real_file() -> None:
    """The raw ml-100k.inter in file order: 943 users, 98,114 / 943 / 943 as RecBole."""
    raw = pd.read_csv(ML100K, sep="\t")
    raw.columns = ["user_id", "item_id", "rating", "timestamp"]
    raw["timestamp"] = raw["timestamp"].astype("int64")
    catalogue = pd.DataFrame({"item_id": np.sort(raw["item_id"].unique())})
    data, test = rp.build_data(raw, catalogue, {}, recbole_params())
    assert sum(map(len, data.train_sequences)) == 98_114
    assert len(data.valid.targets) == len(test.targets) == 943 and test.n_items == 1682
    reference = recbole_split(list(raw[["user_id", "item_id", "timestamp"]]
                                   .itertuples(index=False, name=None)))
    ids = catalogue["item_id"].to_numpy()
    got_test = [ids[next(iter(t)) - 1] for t in test.targets]
    assert got_test == [reference[u][2] for u in sorted(reference)]
    got_valid = [ids[next(iter(t)) - 1] for t in data.valid.targets]
    assert got_valid == [reference[u][1] for u in sorted(reference)]
    # the MovieLens loader keeps the file's order within a second (431 users' last two differ
    # from an item-id tie-break)
    loaded = load_movielens(ML100K.parent)["interactions"]
    _, via_loader = rp.build_data(loaded, catalogue, {}, recbole_params())
    assert via_loader.targets == test.targets


# ---- parameters refused by name --------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "match"), [
    ({"tie_break": "by_time"}, "tie_break"),
    ({"training": {"monitor": "ndcg@50"}}, "a validation metric not computed"),
    ({"training": {"monitor": "auc"}}, "a validation metric not computed"),
    ({"training": {"patience": 0}}, r"retrieval\.training\.patience"),
    ({"training": {"patience": 2}, "holdout_valid": False}, r"retrieval\.training\.patience"),
    ({"split": {"strategy": "given"}}, "leave_one_out"),
    ({"training": {"epochs": 3}}, "epochs"),
])
def test_bad_protocol_parameters_are_refused_by_name(overrides, match) -> None:
    with pytest.raises(ValidationError, match=match):
        params(**overrides)


TIGER = {"name": "tiger", "tokenizer": "rq_kmeans", "params": {"epochs": 1}}


def test_exclude_seen_on_a_model_that_cannot_mask_is_refused_before_training() -> None:
    with pytest.raises(ValidationError, match=r"retrieval\.models\.tiger\.exclude_seen"):
        RetrievalParams.model_validate({"models": {**POPULARITY, "tiger": {
            **TIGER, "exclude_seen": True}}})
    with pytest.raises(ValidationError, match=r"retrieval\.models\.tiger\.exclude_seen"):
        RetrievalParams.model_validate({"exclude_seen": True,
                                        "models": {**POPULARITY, "tiger": TIGER}})
    ok = RetrievalParams.model_validate({"exclude_seen": True, "models": {
        **POPULARITY, "tiger": {**TIGER, "exclude_seen": False}}})
    assert rp.report(ok, {})["protocol"]["exclude_seen"] == {"popularity": True, "tiger": False}


# ---- checkpoints -------------------------------------------------------------------------------
SAS = {"name": "sasrec", "params": {"max_len": 5, "embed_dim": 8, "epochs": 2}}


def configured(tmp_path: Path, name: str = "sasrec", entry: dict | None = None,
               rows: pd.DataFrame = LOO_LOG, seed: int = 42):
    p = params(split=LOO, models={**POPULARITY, name: entry or SAS},
               training={"checkpoint_dir": str(tmp_path), "patience": 2})
    data, _ = rp.build_data(rows, items(), {}, p)
    return rp.configure(data, p, name, seed)


class _Untrainable:
    """A task that fails if the core ever trains it."""

    def __init__(self) -> None:
        self.module = torch.nn.Linear(1, 1)

    def batches(self, generator):
        raise AssertionError("trained despite a foreign checkpoint")

    def step(self, batch) -> Step:
        raise AssertionError("trained despite a foreign checkpoint")

    def validate(self) -> dict:
        return {}


def test_checkpoints_are_keyed_by_entry_protocol_seed_and_data(tmp_path: Path) -> None:
    data = configured(tmp_path)
    ck = data.checkpoints
    assert ck.directory.parent == tmp_path / "sasrec"
    assert data.fit.checkpoint_dir == str(ck.directory) and data.fit.patience == 2
    assert set(ck.fingerprint) == {"entry", "model", "tokenizer", "exclude_seen", "params",
                                   "protocol", "training", "seed", "data"}
    same = configured(tmp_path, entry={**SAS, "params": {**SAS["params"], "epochs": 9}})
    assert same.checkpoints.directory == ck.directory  # epochs may grow on resume
    others = [configured(tmp_path, entry={**SAS, "params": {**SAS["params"], "embed_dim": 16}}),
              configured(tmp_path, seed=7),
              configured(tmp_path, rows=LOO_LOG.iloc[1:])]
    assert len({o.checkpoints.directory for o in others} | {ck.directory}) == 4
    assert others[2].checkpoints.fingerprint["data"] != ck.fingerprint["data"]


def test_a_checkpoint_written_for_another_entry_is_refused_before_training(tmp_path: Path
                                                                           ) -> None:
    ours = configured(tmp_path)
    theirs = configured(tmp_path, entry={**SAS, "params": {**SAS["params"], "embed_dim": 16}})
    # another entry's checkpoint sitting in our directory (a copied or hand-set folder)
    Checkpoints(ours.checkpoints.directory, theirs.checkpoints.fingerprint).save(1, {"x": 1})
    task = _Untrainable()
    with pytest.raises(ValueError, match=r"other settings \(params: embed_dim 16 -> 8\)"):
        fit(task, ours.fit, build_optimizer(task.module, lr=0.1), ours.checkpoints)


# ---- the node: metrics record the protocol -----------------------------------------------------
def test_metrics_and_report_record_the_protocol(tmp_path: Path) -> None:
    p = params(split=LOO, models={"popularity": {"name": "popularity", "exclude_seen": True}},
               ks=[3, 10], training={"checkpoint_dir": str(tmp_path)})
    payload, metrics = nodes.train_and_evaluate(LOO_LOG, items(12), {}, p, "popularity")
    assert payload["model"] == "popularity"
    assert metrics["exclude_seen"] is True and metrics["recall@3"] == pytest.approx(2 / 3)
    assert metrics["protocol"] == {
        "strategy": "leave_one_out", "min_interactions": 3, "short_users": "train",
        "event": "click > 0", "tie_break": "file_order", "holdout_valid": True,
        "eval_history": 50, "exclude_seen": True, "ranking": "full catalogue"}
    assert metrics["dataset"]["test_users"] == 3 and metrics["dataset"]["valid_users"] == 3
    report = nodes.report_retrieval(p, metrics__popularity=metrics)
    assert report["protocol"]["exclude_seen"] == {"popularity": True}
    assert report["protocol"]["tie_break"] == "file_order"
    assert report["protocol"]["description"].startswith("leave-one-out")
    assert report["models"]["popularity"]["exclude_seen"] is True
    assert "protocol" not in report["models"]["popularity"]
