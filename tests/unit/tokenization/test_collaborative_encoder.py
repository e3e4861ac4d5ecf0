"""The `cooccurrence` item encoder: collaborative vectors from training events only."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pandas as pd
import pytest

from recflow.registry import ITEM_ENCODERS, RegistryError
from recflow.tokenization.encoders import cooccurrence_matrix, shifted_ppmi
from recflow.tokenization.semantic_ids import distinct_prefixes

N_ITEMS = 12  # items 0..11; 0..5 = group A, 6..10 = group B, 11 never interacted with


def items_frame() -> pd.DataFrame:
    genre = ["comedy"] * 6 + ["drama"] * 6
    return pd.DataFrame({"item_id": np.arange(N_ITEMS),
                         "title": [f"film {g} {i}" for i, g in enumerate(genre)],
                         "genres": genre})


def grouped_events(seed: int = 0) -> pd.DataFrame:
    """40 users, each rating 4 random items of ONE group (A or B), in time order."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(0, 6), np.arange(6, 11)]
    rows = [(u, item, t) for u in range(40)
            for t, item in enumerate(rng.choice(groups[u % 2], size=4, replace=False))]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def encoder(**params):
    return ITEM_ENCODERS.create("cooccurrence", params={"dim": 4, **params})


def cosine(x: np.ndarray, i: int, j: int) -> float:
    return float(x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j])))


@pytest.mark.parametrize("window", [None, 2])
def test_items_that_cooccur_are_closer_than_items_that_never_do(window: int | None) -> None:
    x = encoder(window=window).fit_transform(items_frame(), events=grouped_events())
    sims = x @ x.T
    a, b = np.arange(0, 6), np.arange(6, 11)
    within = np.mean([sims[np.ix_(g, g)][~np.eye(len(g), dtype=bool)].mean() for g in (a, b)])
    across = sims[np.ix_(a, b)].mean()
    assert within > across + 0.5
    np.testing.assert_allclose(np.linalg.norm(x[:11], axis=1), 1.0, atol=1e-5)


def test_cooccurrence_counts_match_hand_counts() -> None:
    # one user watching a, b, c (indices 0, 1, 2) in that order
    users, items = np.zeros(3, np.int64), np.array([0, 1, 2])
    near = cooccurrence_matrix(users, items, 3, window=1).toarray()
    np.testing.assert_array_equal(near, [[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    whole = cooccurrence_matrix(users, items, 3, window=None).toarray()
    np.testing.assert_array_equal(whole, [[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    # a second user's sequence never pairs with the first one's
    two = cooccurrence_matrix(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 0]), 3, window=5)
    np.testing.assert_array_equal(two.toarray(), [[0, 1, 1], [1, 0, 0], [1, 0, 0]])


def test_shifted_ppmi_matches_the_dense_formula() -> None:
    import scipy.sparse as sp

    c = np.array([[0, 3, 1], [3, 0, 2], [1, 2, 0]], dtype=float)
    got = shifted_ppmi(sp.csr_matrix(c), shift=1.5, smoothing=0.75).toarray()
    ctx = c.sum(0) ** 0.75
    with np.errstate(divide="ignore"):
        pmi = np.log(c) - np.log(c.sum(1, keepdims=True)) - np.log(ctx / ctx.sum()) - np.log(1.5)
    np.testing.assert_allclose(got, np.where(c > 0, np.maximum(pmi, 0), 0), atol=1e-12)


def test_item_absent_from_events_gets_zero_or_text_only_vector() -> None:
    items, events = items_frame(), grouped_events()
    x = encoder().fit_transform(items, events=events)
    np.testing.assert_array_equal(x[11], 0.0)
    mixed = encoder(text_weight=0.5, text_columns=["title", "genres"], text_dim=3)
    y = mixed.fit_transform(items, events=events)
    np.testing.assert_array_equal(y[11, :4], 0.0)
    assert np.linalg.norm(y[11, 4:]) == pytest.approx(0.5, abs=1e-5)


def ring_events(reps: int = 5) -> pd.DataFrame:
    """Items 0..7 on a ring: every user watches one item, then its successor."""
    i = np.tile(np.arange(8), reps)
    return pd.DataFrame({"user_id": np.repeat(np.arange(len(i)), 2),
                         "item_id": np.column_stack([i, (i + 1) % 8]).ravel(),
                         "timestamp": np.tile([0, 1], len(i))})


def test_only_the_given_events_are_learnt_from() -> None:
    items, events = items_frame(), ring_events()
    base = encoder(dim=8).fit_transform(items, events=events)
    assert cosine(base, 0, 1) > cosine(base, 0, 4) + 0.5  # neighbours vs opposite
    # drop the users who watched 0 and 1 together: the pair no longer co-occurs
    pair = events.groupby("user_id")["item_id"].transform(lambda s: {0, 1} <= set(s))
    without = encoder(dim=8).fit_transform(items, events=events[~pair])
    assert cosine(without, 0, 1) < cosine(base, 0, 1) - 0.5
    # same events, any row order: same vectors (it orders by user and time itself)
    shuffled = events.sample(frac=1.0, random_state=3)
    np.testing.assert_allclose(encoder(dim=8).fit_transform(items, events=shuffled), base,
                               atol=1e-6)


def test_state_round_trips_through_json() -> None:
    items, events = items_frame(), grouped_events()
    params = {"text_weight": 0.3, "text_columns": ["title", "genres"], "text_dim": 3}
    enc = encoder(**params).fit(items, events=events)
    state = json.loads(json.dumps(enc.state()))
    fresh = encoder(**params).load_state(state)
    new = pd.DataFrame({"item_id": [3, 99], "title": ["film comedy 3", "new drama"],
                        "genres": ["comedy", "drama"]})
    np.testing.assert_array_equal(fresh.transform(items), enc.transform(items))
    np.testing.assert_array_equal(fresh.transform(new), enc.transform(new))


def test_text_weight_concatenates_a_scaled_text_vector() -> None:
    items, events = items_frame(), grouped_events()
    x = encoder(text_weight=0.25, text_columns=["title", "genres"], text_dim=5).fit_transform(
        items, events=events)
    assert x.shape == (N_ITEMS, 4 + 5)
    np.testing.assert_allclose(np.linalg.norm(x[:, 4:], axis=1), 0.25, atol=1e-5)
    assert encoder().fit_transform(items, events=events).shape == (N_ITEMS, 4)


@pytest.mark.parametrize(("params", "key"), [({"dim": 0}, "dim"), ({"window": 0}, "window"),
                                             ({"windw": 3}, "windw"),
                                             ({"shift": 0.5}, "shift")])
def test_bad_params_are_refused_naming_the_key(params: dict, key: str) -> None:
    with pytest.raises(RegistryError, match=key):
        ITEM_ENCODERS.create("cooccurrence", params=params)


def test_text_weight_without_text_columns_and_fit_without_events_are_refused() -> None:
    with pytest.raises(RegistryError, match="text_columns"):
        ITEM_ENCODERS.create("cooccurrence", params={"text_weight": 0.5})
    with pytest.raises(ValueError, match="events"):
        encoder().fit(items_frame())
    with pytest.raises(KeyError, match="timestamp"):
        encoder().fit(items_frame(), events=grouped_events().drop(columns="timestamp"))


def test_distinct_prefixes_per_depth() -> None:
    codes = np.array([[0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 1, 0]])
    assert distinct_prefixes(codes) == [2, 3, 3]


def test_pipeline_reads_events_only_for_encoders_that_need_them() -> None:
    from recflow.pipelines.semantic_ids.pipeline import (
        EVENT_INPUTS,
        create_pipeline,
        pipeline_kwargs,
    )

    def encode_inputs(enc: str | None) -> list[str]:
        pipe = create_pipeline(["rq_kmeans"], encoder=enc)
        return next(n for n in pipe.nodes if n.name == "encode_items").inputs

    assert encode_inputs("tfidf_svd") == ["items", "params:semantic_ids"]
    assert encode_inputs("cooccurrence") == ["items", "params:semantic_ids", *EVENT_INPUTS]
    kwargs = pipeline_kwargs({"semantic_ids": {"encoder": {"name": "cooccurrence"},
                                               "tokenizers": {"rq_kmeans": {}}}})
    assert kwargs == {"tokenizer_names": ["rq_kmeans"], "encoder": "cooccurrence"}


def test_encode_items_fits_on_the_protocols_training_events(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The node hands the encoder exactly what training_events returns, nothing else."""
    from recflow.pipelines.semantic_ids.nodes import encode_items
    from recflow.pipelines.semantic_ids.params import SemanticIdsParams

    train = grouped_events()
    held_out = pd.DataFrame({"user_id": [0] * 5, "item_id": [0, 6, 7, 8, 9],
                             "timestamp": [9, 10, 11, 12, 13]})  # 0 with group B: a leak
    calls = []

    def training_events(interactions, cutoffs, params):
        calls.append((len(interactions), cutoffs, params))
        return train

    fake = types.ModuleType("recflow.evaluation.retrieval_protocol")
    fake.training_events = training_events
    monkeypatch.setitem(sys.modules, "recflow.evaluation.retrieval_protocol", fake)
    params = SemanticIdsParams.model_validate(
        {"encoder": {"name": "cooccurrence", "params": {"dim": 4}},
         "tokenizers": {"rq_kmeans": {"name": "rq_kmeans"}}})
    frame = encode_items(items_frame(), params, pd.concat([train, held_out]), {"k": 1},
                         retrieval="retrieval-params")
    assert calls == [(len(train) + 5, {"k": 1}, "retrieval-params")]
    expected = encoder().fit_transform(items_frame(), events=train)
    np.testing.assert_allclose(frame.filter(like="e_").to_numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="pipeline_kwargs"):
        encode_items(items_frame(), params)
