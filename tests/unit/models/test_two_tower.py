"""Two-tower retrieval: the logQ-corrected in-batch loss, learning, cold items via features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recflow.metrics.retrieval import recall_ndcg_at_k
from recflow.models.retrieval import RETRIEVAL_MODELS, RetrievalData
from recflow.models.retrieval.two_tower import (
    TwoTower,
    feature_table,
    in_batch_softmax_loss,
    training_pairs,
)

torch.set_num_threads(1)

SMALL = {"max_len": 4, "embed_dim": 8, "hidden_dim": 32, "out_dim": 16, "epochs": 12,
         "batch_size": 64, "lr": 0.01, "dropout": 0.0, "temperature": 0.1}


def test_logq_correction_matches_a_hand_computed_example() -> None:
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    item = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    log_q = torch.log(torch.tensor([0.5, 0.25]))
    # row 0: logits [1/0.5 - ln .5, 0.6/0.5 - ln .25]; row 1: [0 - ln .5, 0.8/0.5 - ln .25]
    rows = [(2 + math.log(2), 1.2 + math.log(4)), (math.log(2), 1.6 + math.log(4))]
    want = (-(rows[0][0] - math.log(math.exp(rows[0][0]) + math.exp(rows[0][1])))
            - (rows[1][1] - math.log(math.exp(rows[1][0]) + math.exp(rows[1][1])))) / 2
    got = in_batch_softmax_loss(user, item, torch.tensor([1, 2]), log_q, temperature=0.5)
    assert float(got) == pytest.approx(want, rel=1e-6)
    # without the correction: plain in-batch softmax
    plain = in_batch_softmax_loss(user, item, torch.tensor([1, 2]), None, temperature=0.5)
    want_plain = (-(2 - math.log(math.exp(2) + math.exp(1.2)))
                  - (1.6 - math.log(1 + math.exp(1.6)))) / 2
    assert float(plain) == pytest.approx(want_plain, rel=1e-6)
    # the correction lifts the rarer item: row 0's loss on the popular positive goes up
    assert float(got) > float(plain)


def test_duplicate_items_in_a_batch_are_not_negatives() -> None:
    user = torch.eye(3)
    item = torch.eye(3)
    same = in_batch_softmax_loss(user, item, torch.tensor([7, 7, 8]), None, temperature=1.0)
    # rows 0 and 1 see only {self, item 8}; row 2 sees all three
    two = -(1 - math.log(math.e + 1))
    three = -(1 - math.log(math.e + 2))
    assert float(same) == pytest.approx((two + two + three) / 3, rel=1e-6)


def test_training_pairs_are_every_prefix_with_its_next_item() -> None:
    hist, targets = training_pairs([np.array([5, 6, 7]), np.array([9])], max_len=2)
    assert hist.tolist() == [[0, 5], [5, 6]] and targets.tolist() == [[6], [7]]


def test_a_target_window_offers_the_next_items_padded_at_the_end() -> None:
    hist, ahead = training_pairs([np.array([5, 6, 7, 8])], max_len=2, window=2)
    assert hist.tolist() == [[0, 5], [5, 6], [6, 7]]
    assert ahead.tolist() == [[6, 7], [7, 8], [8, 0]]


def test_feature_table_checks_shapes() -> None:
    names, table = feature_table({"a": np.array([0, 1, 2])}, n_items=2)
    assert names == ["a"] and table[:, 0].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="item_features\\['a'\\] has shape"):
        feature_table({"a": np.array([0, 1])}, n_items=2)


def group_task(seed: int = 0, n_groups: int = 6, per_group: int = 8, cold_per_group: int = 2,
               n_users: int = 300):
    """The next item is a random item of the group after the previous item's group.

    Item ids carry no order; only the `group` feature reveals the rule. The last
    `cold_per_group` items of each group never occur in training (cold).
    """
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    perm = rng.permutation(n) + 1  # item index -> shuffled so ids do not encode the group
    group = np.zeros(n + 1, dtype=np.int64)
    group[perm] = np.repeat(np.arange(1, n_groups + 1), per_group)
    members = {g: perm[(g - 1) * per_group:g * per_group] for g in range(1, n_groups + 1)}
    warm = {g: m[:per_group - cold_per_group] for g, m in members.items()}
    cold = {g: m[per_group - cold_per_group:] for g, m in members.items()}

    def walk(length: int) -> np.ndarray:
        out = [rng.choice(warm[rng.integers(1, n_groups + 1)])]
        for _ in range(length - 1):
            out.append(rng.choice(warm[group[out[-1]] % n_groups + 1]))
        return np.array(out)

    seqs = [walk(int(rng.integers(3, 9))) for _ in range(n_users)]
    data = RetrievalData(n_items=n, train_sequences=seqs, item_features={"group": group}, seed=seed)
    return data, group, warm, cold


def test_training_reduces_loss_and_learns_the_feature_rule() -> None:
    data, group, warm, _ = group_task()
    model = RETRIEVAL_MODELS.create("two_tower", params=SMALL).fit(data)
    assert model.history[-1] < model.history[0] - 0.5, model.history
    histories = [np.array([w[0]]) for w in warm.values()]
    top = model.recommend(histories, 6)
    n_groups = len(warm)
    right = [(group[row] == g % n_groups + 1).mean() for g, row in zip(warm, top, strict=True)]
    assert np.mean(right) > 0.8, right  # chance: 1/6


def test_cold_items_rank_through_their_features() -> None:
    data, group, warm, cold = group_task()
    n_groups = len(warm)
    histories = [np.array([w[0]]) for w in warm.values()]
    targets = [set(cold[g % n_groups + 1].tolist()) for g in warm]
    model = RETRIEVAL_MODELS.create("two_tower", params=SMALL).fit(data)
    vectors = model.item_vectors()
    all_cold = np.concatenate(list(cold.values()))
    assert torch.isfinite(vectors).all() and (vectors[all_cold].norm(dim=1) > 0.99).all()
    recall, _ = recall_ndcg_at_k(model.recommend(histories, 8), targets, 8)
    assert recall > 0.5, recall  # the next group's cold items are among its 8 items
    # ID-only (no features): every cold item is the same OOV vector, nothing to rank them by
    id_only = RetrievalData(n_items=data.n_items, train_sequences=data.train_sequences, seed=0)
    blind = RETRIEVAL_MODELS.create("two_tower", params=SMALL).fit(id_only)
    blind_recall, _ = recall_ndcg_at_k(blind.recommend(histories, 8), targets, 8)
    assert recall > blind_recall


def test_state_round_trip_and_attention_pooling() -> None:
    data, _, warm, _ = group_task(n_users=60)
    params = {**SMALL, "epochs": 1, "pooling": "attention"}
    model = RETRIEVAL_MODELS.create("two_tower", params=params).fit(data)
    histories = [np.array([w[0], w[1]]) for w in warm.values()] + [np.array([], dtype=np.int64)]
    rebuilt = TwoTower.from_state(params, model.state())
    assert np.array_equal(rebuilt.recommend(histories, 5), model.recommend(histories, 5))
    assert rebuilt.feature_names == ["group"]


def test_model_without_item_features() -> None:
    data, *_ = group_task(n_users=40)
    bare = RetrievalData(n_items=data.n_items, train_sequences=data.train_sequences)
    model = RETRIEVAL_MODELS.create("two_tower", params={**SMALL, "epochs": 1}).fit(bare)
    top = model.recommend([np.array([1, 2]), np.array([], dtype=np.int64)], 5)
    assert top.shape == (2, 5) and ((top >= 1) & (top <= data.n_items)).all()
