"""Fitted feature transforms and the FeatureSpec: fit on train only, apply anywhere.

Index conventions under test: 0 = missing/padding, 1 = OOV, 2.. = known values.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recflow.features import FeaturesConfig, FeatureSpec
from recflow.features.spec import sequence_columns, spec_hash
from recflow.features.transforms import (
    OOV,
    PAD,
    HashCross,
    QuantileBucket,
    Standardize,
    Vocabulary,
    pad_sequences,
)


# --------------------------------------------------------------------------- #
# Vocabulary
# --------------------------------------------------------------------------- #
def test_vocab_is_fitted_on_train_only() -> None:
    train = pd.Series(["a", "b", "b", "c"])
    valid = pd.Series(["b", "only-in-valid", "a"])
    vocab = Vocabulary().fit(train)
    assert "only-in-valid" not in vocab.values
    assert vocab.transform(valid).tolist() == [2, OOV, 3]  # b (2 rows) first, then a
    assert vocab.size == 3 + 2


def test_vocab_min_count_sends_rare_values_to_oov() -> None:
    train = pd.Series([7] * 3 + [8] * 2 + [9])
    vocab = Vocabulary(min_count=2).fit(train)
    assert vocab.values == [7, 8]  # count == min_count is kept, count 1 is not
    assert vocab.transform(pd.Series([7, 8, 9])).tolist() == [2, 3, OOV]


def test_vocab_max_size_keeps_the_most_frequent_ties_by_value() -> None:
    train = pd.Series(["z"] * 5 + ["b"] * 3 + ["a"] * 3 + ["c"])
    vocab = Vocabulary(max_size=2).fit(train)
    assert vocab.values == ["z", "a"]  # "a" beats "b" on the tie by value
    assert vocab.size == 4
    assert vocab.transform(pd.Series(["z", "a", "b", "c"])).tolist() == [2, 3, OOV, OOV]


def test_vocab_missing_maps_to_zero_and_is_not_a_value() -> None:
    vocab = Vocabulary().fit(pd.Series(["a", None, "a", np.nan, "b"]))
    assert vocab.values == ["a", "b"]
    out = vocab.transform(pd.Series(["a", None, np.nan, "b", "new"], dtype=object))
    assert out.tolist() == [2, PAD, PAD, 3, OOV]
    assert out.dtype == np.int64
    ints = Vocabulary().fit(pd.Series([5, 6, 6]))
    assert ints.transform(pd.Series([6, pd.NA, 5], dtype="Int64")).tolist() == [2, PAD, 3]
    assert ints.transform(pd.Series([None, None])).tolist() == [PAD, PAD]


def test_vocab_missing_token_is_an_id_of_its_own_on_every_path() -> None:
    """`missing: token`: missing values take the id after the last value (learned like any
    value) on the object, categorical and arrow paths; the spec keeps `pad` out of its
    params so specs fitted before the option keep their hash."""
    pytest.importorskip("pyarrow")
    vocab = Vocabulary(missing="token").fit(pd.Series(["a", None, "a", "b"]))
    assert vocab.values == ["a", "b"] and vocab.size == 5 and vocab.missing_id == 4
    column = pd.Series(["a", None, np.nan, "b", "new"], dtype=object)
    want = [2, 4, 4, 3, OOV]
    assert vocab.transform(column).tolist() == want
    assert vocab.transform(column.astype("category")).tolist() == want
    assert vocab.transform(column.astype(pd.StringDtype("pyarrow"))).tolist() == want
    assert Vocabulary().fit(column[:4]).transform(column).tolist() == [2, PAD, PAD, 3, OOV]
    frame = pd.DataFrame({"c": ["a", None, "a", "b"]})
    fields = {"c": {"transform": "vocab", "missing": "token"}, "d": {"transform": "vocab",
                                                                     "column": "c"}}
    spec = FeatureSpec.from_config(FeaturesConfig.model_validate({"fields": fields})).fit(frame)
    assert spec["c"].params["missing"] == "token" and "missing" not in spec["d"].params
    assert spec["c"].vocab_size == 5 and spec["d"].vocab_size == 4
    assert spec.transform_frame(frame)["c"].tolist() == [2, 4, 2, 3]
    with pytest.raises(ValidationError, match="missing"):
        FeaturesConfig.model_validate({"fields": {"c": {"transform": "vocab",
                                                        "missing": "zero"}}})


def test_vocab_order_is_deterministic_whatever_the_row_order() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 50, 2_000)
    orders = [Vocabulary().fit(pd.Series(rng.permutation(values))).values for _ in range(3)]
    assert orders[0] == orders[1] == orders[2]
    counts = pd.Series(values).value_counts()
    assert [counts[v] for v in orders[0]] == sorted(counts.to_numpy(), reverse=True)
    # equal counts are ordered by value
    for a, b in zip(orders[0], orders[0][1:], strict=False):
        assert counts[a] > counts[b] or a < b


def test_vocab_is_robust_to_id_dtypes() -> None:
    """Int ids fitted in training must map identically when they arrive as strings,
    floats (e.g. after a NaN-introducing merge) or an object matrix with padding."""
    vocab = Vocabulary().fit(pd.Series([3, 3, 3, 2, 2, 1]))
    expected = [2, 3, 4]
    assert vocab.transform(pd.Series([3, 2, 1])).tolist() == expected
    assert vocab.transform(pd.Series(["3", "2", "1"])).tolist() == expected
    assert vocab.transform(pd.Series([3.0, 2.0, 1.0])).tolist() == expected
    assert vocab.transform(np.array([3, 2, 1], dtype=np.int32)).tolist() == expected
    assert vocab.transform(pd.Series([3.0, np.nan, 1.0])).tolist() == [2, PAD, 4]
    history = np.array([[None, 3, 2], [1, 2, 3]], dtype=object)  # what build_histories returns
    assert vocab.transform(pd.Series(history.ravel())).tolist() == [PAD, 2, 3, 4, 3, 2]
    # a value that is not exactly an id never silently maps to one
    assert vocab.transform(pd.Series([3.5, "x", "3"], dtype=object)).tolist() == [OOV, OOV, 2]

    text = Vocabulary().fit(pd.Series(["7", "7", "a"]))  # e.g. zip codes kept as text
    assert text.transform(pd.Series([7, 7.0, "7", "a", 8], dtype=object)).tolist() == [
        2, 2, 2, 3, OOV,
    ]  # fmt: skip
    assert text.transform(pd.Series([7, 9])).tolist() == [2, OOV]


def _token_column(n: int, seed: int) -> list:
    """Zipf-like tokens with ties, rare values and missing (None / NaN) entries."""
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(1.3, n), 400)
    values: list = [f"t{r:03d}" for r in ranks]
    for i in rng.choice(n, n // 20, replace=False):
        values[i] = None if i % 2 else np.nan
    return values


@pytest.mark.parametrize("min_count", [1, 3, 10])
@pytest.mark.parametrize("max_size", [None, 7])
def test_vocab_fast_paths_equal_the_object_path(min_count: int, max_size: int | None) -> None:
    """Categorical (codes) and arrow-string (pyarrow) input give the object path's vocabulary,
    order (count desc, ties by value) and ids, including missing -> PAD and OOV."""
    pytest.importorskip("pyarrow")
    train, other = _token_column(5_000, 0), _token_column(3_000, 1) + ["unseen", None]
    as_object = {"train": pd.Series(train, dtype=object), "other": pd.Series(other, dtype=object)}
    reference = Vocabulary(min_count=min_count, max_size=max_size).fit(as_object["train"])
    expected = reference.transform(as_object["other"])
    assert {PAD, OOV} <= set(expected.tolist()) and len(reference.values) > 3
    counts = as_object["train"].value_counts()
    assert counts.duplicated().any()  # ties by value are exercised
    flavours = {
        "categorical": lambda s: s.astype("category"),
        # categories in non-lexical order: ties must still be ordered by value
        "categorical_reordered": lambda s: s.astype(pd.CategoricalDtype(
            sorted(set(s.dropna()), reverse=True))),
        "str (pyarrow)": lambda s: s.astype(pd.StringDtype("pyarrow")),
        "ArrowDtype": lambda s: s.astype(pd.ArrowDtype(__import__("pyarrow").large_string())),
    }
    for name, cast in flavours.items():
        vocab = Vocabulary(min_count=min_count, max_size=max_size).fit(cast(as_object["train"]))
        assert vocab.values == reference.values, name
        assert all(type(v) is str for v in vocab.values), name
        for fitted in (reference, vocab):  # each path applies either vocabulary identically
            out = fitted.transform(cast(as_object["other"]))
            assert out.dtype == np.int64 and out.tolist() == expected.tolist(), name
    # chunked arrow input (as read_csv builds it) and categories never seen in train
    other_cat = pd.Series(pd.Categorical(other, categories=sorted({o for o in other if isinstance(o, str)}) +
                                         ["never"]))
    assert reference.transform(other_cat).tolist() == expected.tolist()
    chunked = pd.concat([pd.Series(other[:1000], dtype="str"), pd.Series(other[1000:],
                                                                          dtype="str")])
    assert reference.transform(chunked).tolist() == expected.tolist()


def test_vocab_fast_paths_edge_cases() -> None:
    pytest.importorskip("pyarrow")
    empty = Vocabulary(min_count=5).fit(pd.Series(["a", "b"], dtype="str"))
    assert empty.values == []
    assert empty.transform(pd.Series(["a", None], dtype="str")).tolist() == [OOV, PAD]
    assert empty.transform(pd.Series(["a", None]).astype("category")).tolist() == [OOV, PAD]
    all_missing = pd.Series([None, None], dtype="str")
    assert Vocabulary().fit(pd.Series(["a"])).transform(all_missing).tolist() == [PAD, PAD]
    assert Vocabulary().fit(all_missing.astype("category")).values == []
    ints = Vocabulary().fit(pd.Series([3, 3, 2, None]).astype("category"))
    assert ints.values == Vocabulary().fit(pd.Series([3, 3, 2, None])).values == [3.0, 2.0]
    assert ints.transform(pd.Series(["3", "2", "9"], dtype="str")).tolist() == [2, 3, OOV]
    text = Vocabulary().fit(pd.Series(["7", "7", "a"], dtype="str"))
    assert text.transform(pd.Series([7, 9, None], dtype="Int64").astype("category")).tolist() \
        == [2, OOV, PAD]


def test_standardize_float64_path_is_bit_identical() -> None:
    rng = np.random.default_rng(0)
    x = np.floor(rng.pareto(1.2, 10_000) * 30)
    x[rng.random(10_000) < 0.1] = np.nan
    t = Standardize().fit(pd.Series(x))
    mean, std = float(np.nanmean(x)), float(np.nanstd(x))
    assert (t.mean, t.std) == (mean, std)
    expected = np.clip((np.where(np.isfinite(x), x, mean) - mean) / std, -5, 5).astype(np.float32)
    for column in (pd.Series(x), x, pd.Series(x).astype(object), pd.Series(x, dtype="Float64")):
        assert np.array_equal(t.transform(column), expected)
    before = x.copy()
    t.transform(x)
    assert np.array_equal(x, before, equal_nan=True)  # the input is never written to


def test_vocab_state_round_trip() -> None:
    vocab = Vocabulary(min_count=1).fit(pd.Series(["x", "y", "y"]))
    state = json.loads(json.dumps(vocab.state()))
    loaded = Vocabulary().load_state(state)
    probe = pd.Series(["y", "x", "q", None])
    assert loaded.transform(probe).tolist() == vocab.transform(probe).tolist() == [2, 3, 1, 0]


# --------------------------------------------------------------------------- #
# Numeric transforms
# --------------------------------------------------------------------------- #
def test_standardize_uses_train_stats_and_missing_becomes_the_mean() -> None:
    train = pd.Series([1.0, 2.0, 3.0, None])
    t = Standardize(clip=None).fit(train)
    assert t.mean == pytest.approx(2.0)
    assert t.std == pytest.approx(np.std([1.0, 2.0, 3.0]))
    out = t.transform(pd.Series([2.0, None, np.nan, "3", 100.0]))
    assert out.dtype == np.float32
    assert out[:3].tolist() == [0.0, 0.0, 0.0]  # missing -> train mean -> z = 0
    assert out[3] == pytest.approx(1 / t.std, rel=1e-6)
    assert out[4] == pytest.approx(98 / t.std, rel=1e-6)  # no clip: valid data is not refitted
    assert Standardize(clip=5.0).fit(train).transform(pd.Series([100.0]))[0] == 5.0


def test_standardize_log_and_constant_column() -> None:
    x = pd.Series([0.0, np.e - 1, np.e**2 - 1])  # log1p -> 0, 1, 2
    t = Standardize(log=True, clip=None).fit(x)
    assert t.mean == pytest.approx(1.0)
    assert t.transform(pd.Series([None]))[0] == 0.0
    assert t.transform(pd.Series([np.e**2 - 1]))[0] == pytest.approx(1 / t.std, rel=1e-6)
    constant = Standardize().fit(pd.Series([4.0, 4.0]))
    assert constant.std == 1.0 and constant.transform(pd.Series([4.0]))[0] == 0.0


def test_quantile_buckets_monotone_with_edges_from_train_only() -> None:
    rng = np.random.default_rng(1)
    train = pd.Series(rng.lognormal(size=5_000))
    t = QuantileBucket(num_buckets=8).fit(train)
    expected = np.unique(np.quantile(train, np.linspace(0, 1, 9)[1:-1]))
    np.testing.assert_allclose(t.edges, expected)
    assert t.size == len(t.edges) + 2

    valid = pd.Series(np.concatenate([rng.lognormal(size=500) * 50, [-1e9, 1e9]]))
    edges_before = list(t.edges)
    ids = t.transform(valid)
    assert t.edges == edges_before  # transforming never refits
    order = np.argsort(valid.to_numpy())
    assert (np.diff(ids[order]) >= 0).all()  # monotone in the value
    assert ids.min() >= 1 and ids.max() <= t.size - 1
    assert ids[-2] == 1 and ids[-1] == t.size - 1  # beyond train range: end buckets
    assert t.transform(pd.Series([None, np.nan, np.inf])).tolist() == [PAD] * 3
    # roughly equal-frequency on train
    counts = np.bincount(t.transform(train), minlength=t.size)[1:]
    assert counts.min() > 0.8 * len(train) / 8


def test_quantile_bucket_log_and_ties() -> None:
    t = QuantileBucket(num_buckets=4, log=True).fit(pd.Series([0.0] * 90 + [10.0] * 10))
    assert t.edges == [0.0]  # duplicated quantiles collapse
    assert t.transform(pd.Series([0.0, 5.0])).tolist() == [2, 2 + 0]  # searchsorted right
    assert t.transform(pd.Series([-0.5]))[0] == 2  # log clips negatives at 0
    empty = QuantileBucket().fit(pd.Series([None, None], dtype=float))
    assert empty.edges == [] and empty.transform(pd.Series([3.0, None])).tolist() == [1, 0]


# --------------------------------------------------------------------------- #
# Hash cross
# --------------------------------------------------------------------------- #
def _cross_frame() -> pd.DataFrame:
    return pd.DataFrame({"user_id": [1, 2, 3, 1], "category": ["a", "b", "a", "b"]})


def test_hash_cross_deterministic_in_range_and_dtype_stable() -> None:
    t = HashCross(columns=["user_id", "category"], num_buckets=1_000)
    frame = _cross_frame()
    first = t.transform(frame)
    assert first.tolist() == t.transform(frame.copy()).tolist()
    assert first.dtype == np.int64
    assert (first >= 1).all() and (first <= 1_000).all() and t.size == 1_001
    assert len(set(first.tolist())) == 4  # distinct pairs, 1000 buckets: no collision
    as_text = frame.assign(user_id=frame["user_id"].astype(str))
    as_float = frame.assign(user_id=frame["user_id"].astype(float))
    assert t.transform(as_text).tolist() == first.tolist()
    assert t.transform(as_float).tolist() == first.tolist()


def test_hash_cross_is_process_independent() -> None:
    """Built on pd.util.hash_array (fixed key), not Python's salted hash()."""
    code = (
        "import pandas as pd; from recflow.features.transforms import HashCross;"
        "f = pd.DataFrame({'user_id': [1, 2, 3, 1], 'category': ['a', 'b', 'a', 'b']});"
        "print(HashCross(columns=['user_id', 'category'], num_buckets=1000).transform(f).tolist())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "12345")
    }
    here = HashCross(columns=["user_id", "category"], num_buckets=1_000).transform(_cross_frame())
    assert outputs == {str(here.tolist())}


# --------------------------------------------------------------------------- #
# pad_sequences
# --------------------------------------------------------------------------- #
def test_pad_sequences_left_pads_and_keeps_most_recent() -> None:
    out = pad_sequences([[1, 2, 3, 4], [], [5], None, np.array([6, 7])], 3)
    assert out.shape == (5, 3) and out.dtype == object
    assert out.tolist() == [
        [2, 3, 4],  # truncated: the 3 most recent (last) items
        [None, None, None],
        [None, None, 5],
        [None, None, None],  # a missing history is an empty one
        [None, 6, 7],
    ]
    assert pad_sequences(pd.Series([[1], [2, 3]]), 1).tolist() == [[1], [3]]
    assert pad_sequences([], 4).shape == (0, 4)


# --------------------------------------------------------------------------- #
# FeatureSpec
# --------------------------------------------------------------------------- #
CONFIG = {
    "labels": ["click"],
    "fields": {
        "user_id": {"transform": "vocab", "min_count": 2},
        "item_id": {"transform": "vocab"},
        "price": {"transform": "standardize", "log": True},
        "price_bucket": {"transform": "quantile_bucket", "column": "price", "num_buckets": 4},
        "user_x_item": {"transform": "hash_cross", "columns": ["user_id", "item_id"],
                        "num_buckets": 97},
        "hist": {"transform": "sequence", "of": "item_id", "length": 3},
    },
}  # fmt: skip


def _raw(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": rng.integers(0, 40, n),
        "item_id": rng.integers(100, 160, n),
        "price": rng.lognormal(2, 1, n),
        "click": rng.integers(0, 2, n),
    })  # fmt: skip


def _histories(raw: pd.DataFrame, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    seqs = [list(rng.integers(90, 170, rng.integers(0, 5))) for _ in range(len(raw))]
    return {"hist": pad_sequences(seqs, 3)}


def _fitted(raw: pd.DataFrame | None = None) -> FeatureSpec:
    spec = FeatureSpec.from_config(FeaturesConfig.model_validate(CONFIG))
    spec.fit(_raw() if raw is None else raw)
    spec.split = {"train_end": 10, "valid_end": 20}
    return spec


def test_spec_fit_sets_kinds_sizes_and_stats() -> None:
    spec = _fitted()
    raw = _raw()
    assert [f.kind for f in spec.fields] == [
        "categorical", "categorical", "numeric", "categorical", "categorical", "sequence",
    ]  # fmt: skip
    assert spec["user_id"].vocab_size == (raw["user_id"].value_counts() >= 2).sum() + 2
    assert spec["hist"].vocab_size == spec["item_id"].vocab_size  # shares the item vocab
    assert spec["price"].stats["mean"] == pytest.approx(np.log1p(raw["price"]).mean())
    assert spec["user_x_item"].vocab_size == 98
    assert spec.raw_columns() == ["user_id", "item_id", "price", "hist"]


def test_spec_round_trip_gives_identical_output_and_hash() -> None:
    spec = _fitted()
    payload = json.loads(json.dumps(spec.to_dict()))  # exactly what feature_spec.json holds
    loaded = FeatureSpec.from_dict(payload)
    assert loaded.hash == spec.hash == payload["hash"]
    assert loaded.to_dict() == spec.to_dict()

    serving = _raw(50, seed=9)  # unseen rows, some unseen ids
    histories = _histories(serving)
    # serving passes histories as ragged lists in a column
    as_lists = serving.assign(hist=[[v for v in row if v is not None] for row in histories["hist"]])
    expected = spec.transform_frame(as_lists)
    got = loaded.transform_frame(as_lists)
    pd.testing.assert_frame_equal(got, expected)
    assert list(got.columns) == [
        "user_id", "item_id", "price", "price_bucket", "user_x_item",
        *sequence_columns("hist", 3),
    ]  # fmt: skip
    # preprocessing passes histories already mapped to ids; same model inputs
    indexed = {"hist": spec._map_histories(spec["hist"], histories["hist"])}
    pd.testing.assert_frame_equal(loaded.transform_frame(serving, history_ids=indexed), expected)
    item_vocab = spec["item_id"].state["values"]
    first = [v for v in histories["hist"][0] if v is not None]
    ids = [int(got[c].iloc[0]) for c in sequence_columns("hist", 3)][3 - len(first) :]
    assert ids == [item_vocab.index(v) + 2 if v in item_vocab else OOV for v in first]


def test_spec_hash_changes_with_vocab_but_not_with_row_counts() -> None:
    spec = _fitted()
    other = _fitted(_raw(seed=5))
    assert other["user_id"].state != spec["user_id"].state
    assert other.hash != spec.hash

    edited = copy.deepcopy(spec.to_dict())  # to_dict shares the live state lists
    edited["fields"][1]["state"]["values"] = edited["fields"][1]["state"]["values"][:-1]
    assert spec_hash(edited) != spec.hash
    recounted = FeatureSpec.from_dict(spec.to_dict())
    recounted.rows = {"train": 123}
    assert recounted.hash == spec.hash  # hash covers fields, labels, split only


def test_spec_rejects_unknown_version_and_missing_columns() -> None:
    payload = _fitted().to_dict()
    payload["version"] = 99
    with pytest.raises(ValueError, match="version 99"):
        FeatureSpec.from_dict(payload)
    with pytest.raises(KeyError, match="field 'price' needs column"):
        _fitted().transform_frame(_raw().drop(columns=["price"]).assign(hist=[[]] * 400))


def test_config_errors_name_the_yaml_key() -> None:
    bad = {"fields": {"brand": {"transform": "vocabb"}}}
    with pytest.raises(ValidationError) as info:
        FeaturesConfig.model_validate(bad)
    assert "fields.brand" in str(info.value) and "vocabb" in str(info.value)
    bad = {"fields": {"p": {"transform": "standardize"},
                      "h": {"transform": "sequence", "of": "p"}}}  # fmt: skip
    with pytest.raises(ValidationError, match="fields.h.of"):
        FeaturesConfig.model_validate(bad)
    with pytest.raises(ValidationError, match="min_sizz"):
        FeaturesConfig.model_validate({"fields": {"u": {"transform": "vocab", "min_sizz": 2}}})


def test_spec_fit_on_a_row_mask_equals_fit_on_the_selected_frame(monkeypatch) -> None:
    """`fit(frame, rows=mask)` (columns filtered one by one) == `fit(frame.loc[mask])`, and the
    threaded path for large frames gives the serial path's spec and outputs."""
    raw = _raw(3_000)
    mask = np.random.default_rng(3).random(len(raw)) < 0.7
    config = FeaturesConfig.model_validate(CONFIG)
    selected = FeatureSpec.from_config(config).fit(raw.loc[mask])
    masked = FeatureSpec.from_config(config).fit(raw, rows=mask)
    assert masked.to_dict() == selected.to_dict()
    with pytest.raises(ValueError, match="rows"):
        FeatureSpec.from_config(config).fit(raw, rows=mask[:-1])
    import recflow.features.spec as spec_module

    monkeypatch.setattr(spec_module, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr(spec_module.os, "cpu_count", lambda: 4)
    threaded = FeatureSpec.from_config(config).fit(raw.loc[mask])
    assert threaded.to_dict() == selected.to_dict()
    histories = _histories(raw)
    pd.testing.assert_frame_equal(threaded.transform_frame(raw, history_ids=histories),
                                  selected.transform_frame(raw, history_ids=histories))
