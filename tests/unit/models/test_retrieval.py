"""Retrieval metrics, the semantic-ID trie, constrained beam search and the models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recflow.metrics.retrieval import coverage_at_k, recall_ndcg_at_k, retrieval_report
from recflow.models.retrieval import RETRIEVAL_MODELS, RetrievalData, Trie
from recflow.models.retrieval.base import left_pad, windows
from recflow.models.retrieval.tiger import (
    TigerModule,
    TigerParams,
    constrained_beam_search,
    merge_cold,
)
from recflow.registry import RegistryError
from recflow.tokenization import disambiguate
from recflow.tokenization.trie import TrieTable, repeat_penalty, seen_fraction

torch.set_num_threads(1)


def test_recall_and_ndcg_against_hand_computed_values() -> None:
    topk = np.array([[1, 2, 3], [4, 5, 6]])
    targets = [{2, 9}, {7}]
    recall, ndcg = recall_ndcg_at_k(topk, targets, 3)
    # user 1: one of two targets at rank 2; user 2: nothing
    assert recall == pytest.approx((0.5 + 0.0) / 2)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg == pytest.approx(((1 / math.log2(3)) / idcg + 0.0) / 2)
    assert recall_ndcg_at_k(topk, targets, 1) == (0.0, 0.0)
    assert coverage_at_k(topk, 2, n_items=8) == pytest.approx(4 / 8)


def test_report_restricts_cold_recall_to_cold_targets() -> None:
    topk = np.array([[5, 1], [2, 3]])
    report = retrieval_report(topk, [{5, 1}, {4}], cold_items={5, 4}, n_items=5, ks=[1, 2])
    assert report["recall@1"] == pytest.approx((0.5 + 0) / 2)
    assert report["recall@1_cold"] == pytest.approx((1.0 + 0.0) / 2)
    assert report["users_with_cold_targets"] == 2


def test_windows_and_left_pad() -> None:
    wins, own = windows([np.arange(1, 6)], 3)
    assert [w.tolist() for w in wins] == [[3, 4, 5], [1, 2, 3]] and own.tolist() == [1, 1]
    # stride 1: every target owned once, by the window where it has 2 items of context
    wins, own = windows([np.arange(1, 6)], 3, stride=1)
    assert [w.tolist() for w in wins] == [[3, 4, 5], [2, 3, 4], [1, 2, 3]]
    assert own.tolist() == [2, 2, 1]
    owned = [int(w[j]) for w, o in zip(wins, own, strict=True) for j in range(o, len(w))]
    assert sorted(owned) == [2, 3, 4, 5]
    assert left_pad([np.array([1, 2]), np.array([3, 4, 5, 6])], 3).tolist() == [
        [0, 1, 2], [4, 5, 6]]


def _ids_with_collisions() -> np.ndarray:
    codes = np.array([[0, 1], [0, 1], [0, 1], [1, 0], [2, 2], [1, 0]])
    return disambiguate(codes)  # digits 0,1,2 / 0,1 / 0


def test_trie_handles_the_disambiguation_level() -> None:
    ids = _ids_with_collisions()
    trie = Trie(ids, np.arange(1, 7), vocab=3)
    assert trie.contains(ids).all()
    assert not trie.contains(np.array([[0, 1, 2 + 0 * 1], [1, 0, 2], [2, 2, 1]]))[1:].any()
    # after the shared prefix (0, 1) exactly the three digits are allowed
    node = trie.step(trie.step(torch.tensor([0]), torch.tensor([0])), torch.tensor([1]))
    assert trie.allowed(node)[0].tolist() == [True, True, True]
    with pytest.raises(ValueError, match="not unique"):
        Trie(np.array([[0, 1], [0, 1]]), np.array([1, 2]), vocab=2)


def test_constrained_beam_search_only_emits_valid_ids() -> None:
    torch.manual_seed(0)
    ids = _ids_with_collisions()
    sids = np.vstack([np.zeros((1, 3), dtype=np.int64), ids])
    module = TigerModule([3, 3, 3], TigerParams(max_items=3, embed_dim=8, heads=1, layers=1))
    trie = Trie(ids, np.arange(1, 7), vocab=3)
    from recflow.models.retrieval.tiger import history_tokens

    prefix = history_tokens(module, torch.as_tensor(sids), [np.array([1, 4]), np.array([6])], 3)
    items, scores = constrained_beam_search(module, trie, prefix, beam=10)
    assert items.shape == (2, 10)
    for row, row_scores in zip(items, scores, strict=True):
        valid = row[row > 0]
        assert len(valid) == 6 and sorted(valid.tolist()) == [1, 2, 3, 4, 5, 6]  # all, once
        assert (row[6:] == -1).all() and np.isinf(row_scores[6:]).all()
        assert np.all(np.diff(row_scores[:6]) <= 1e-6)  # best first
        # beam probabilities over the whole (tiny) catalogue sum to one
        assert np.exp(row_scores[:6]).sum() == pytest.approx(1.0, abs=1e-4)


def _cyclic_data(n_items: int = 12, users: int = 60, seed: int = 0) -> RetrievalData:
    """Each user walks the catalogue in order (i -> i + 1): a learnable next-item rule."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(users):
        start = rng.integers(1, n_items + 1)
        seqs.append((np.arange(start, start + 8) - 1) % n_items + 1)
    return RetrievalData(n_items=n_items, train_sequences=seqs, seed=seed)


def _hit_rate(model, n_items: int) -> float:
    histories = [np.array([i, i % n_items + 1]) for i in range(1, n_items + 1)]
    expected = [(i + 1) % n_items + 1 for i in range(1, n_items + 1)]
    top = model.recommend(histories, 1)[:, 0]
    return float(np.mean(top == np.array(expected)))


def test_popularity_ranks_by_training_counts() -> None:
    data = RetrievalData(n_items=4, train_sequences=[np.array([2, 2, 3]), np.array([2, 4])])
    model = RETRIEVAL_MODELS.create("popularity").fit(data)
    assert model.recommend([np.array([1])], 3).tolist() == [[2, 3, 4]]


def test_sasrec_learns_a_sequential_rule() -> None:
    data = _cyclic_data()
    model = RETRIEVAL_MODELS.create("sasrec", params={"max_len": 8, "embed_dim": 16, "heads": 1,
                                                      "layers": 1, "dropout": 0.0, "epochs": 40,
                                                      "batch_size": 32, "lr": 0.01}).fit(data)
    assert model.history[-1] < model.history[0]
    assert _hit_rate(model, data.n_items) >= 0.8


def test_sasrec_with_ligr_blocks_learns_a_sequential_rule() -> None:
    data = _cyclic_data()
    model = RETRIEVAL_MODELS.create("sasrec", params={"max_len": 8, "embed_dim": 16, "heads": 1,
                                                      "layers": 1, "dropout": 0.0, "epochs": 40,
                                                      "batch_size": 32, "lr": 0.01,
                                                      "block": "ligr"}).fit(data)
    assert _hit_rate(model, data.n_items) >= 0.8


def test_ligr_gates_scale_each_sublayer() -> None:
    """With the gates shut (bias -> -inf) a LiGR block is the identity; open, it is not."""
    from recflow.models.retrieval.blocks import LiGRLayer

    torch.manual_seed(0)
    layer, x = LiGRLayer(d=8, heads=2, ffn_dim=16, dropout=0.0).eval(), torch.randn(2, 5, 8)
    assert not torch.allclose(layer(x, None), x)
    with torch.no_grad():
        for gate in (layer.gate1, layer.gate2):
            gate.weight.zero_()
            gate.bias.fill_(-1e4)
    torch.testing.assert_close(layer(x, None), x)


def test_repeat_bias_learns_that_nobody_repeats() -> None:
    """Users consume each item once: the learned bias turns negative and the top-5 holds no
    item of the window; the sampled loss cannot carry it (refused)."""
    rng = np.random.default_rng(0)
    data = RetrievalData(n_items=30, train_sequences=[rng.permutation(np.arange(1, 31))[:20]
                                                      for _ in range(60)])
    model = RETRIEVAL_MODELS.create("sasrec", params={
        "max_len": 8, "embed_dim": 16, "heads": 1, "layers": 1, "epochs": 30,
        "batch_size": 64, "lr": 0.01, "repeat_bias": True}).fit(data)
    assert float(model.module.repeat) < -1.0
    histories = [rng.permutation(np.arange(1, 31))[:8] for _ in range(20)]
    top = model.recommend(histories, 5)
    assert not any(set(t) & set(h) for t, h in zip(top, histories, strict=True))
    with pytest.raises(RegistryError, match="repeat_bias: true needs loss: full_softmax"):
        RETRIEVAL_MODELS.create("sasrec", params={"repeat_bias": True,
                                                  "loss": "sampled_softmax"})


def test_fast_dropout_is_dropout() -> None:
    """Same law as nn.Dropout: keep with 1 - p, kept values scaled by 1 / (1 - p); identity
    in eval; every nn.Dropout of a model is swapped."""
    from torch import nn

    from recflow.models.retrieval.blocks import FastDropout, use_fast_dropout

    torch.manual_seed(0)
    drop, x = FastDropout(0.3), torch.ones(200_000)
    y = drop(x)
    values = torch.unique(y).tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / 0.7)]
    assert abs(float((y > 0).float().mean()) - 0.7) < 0.005
    assert torch.equal(drop.eval()(x), x)
    model = use_fast_dropout(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.4),
                                           nn.TransformerEncoderLayer(4, 1, 8, 0.2)))
    swapped = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert swapped and all(type(m) is FastDropout for m in swapped)
    assert [m.p for m in swapped] == [0.4, 0.2, 0.2, 0.2]


def test_tiger_learns_a_sequential_rule_through_semantic_ids() -> None:
    data = _cyclic_data()
    n = data.n_items
    codes = np.column_stack([np.arange(n) // 4, np.arange(n) % 4 // 2])  # collisions in pairs
    data.semantic_ids = np.vstack([np.zeros((1, 3), dtype=np.int64), disambiguate(codes)])
    model = RETRIEVAL_MODELS.create("tiger", params={"max_items": 4, "embed_dim": 16, "heads": 1,
                                                     "layers": 1, "dropout": 0.0, "epochs": 40,
                                                     "batch_size": 32, "lr": 0.01,
                                                     "beam_size": 5}).fit(data)
    assert model.history[-1] < model.history[0]
    assert _hit_rate(model, n) >= 0.8
    top = model.recommend([np.array([1, 2])], 5)
    assert ((top >= 1) & (top <= n)).all() and len(set(top[0].tolist())) == 5


def test_seen_fraction_is_the_share_of_a_tokens_items_in_the_window() -> None:
    """Hand-built trie: per query node and next token, the share of the IDs under it that
    are window items; the penalty is exactly b on a window item, log(1 - f) as b -> -inf."""
    ids = np.array([[0, 0], [0, 1], [1, 0], [1, 2]])  # items 1..4
    trie = TrieTable(ids, np.arange(1, 5), vocab=3)
    assert trie.size[0] == 4 and trie.size[trie.next_node[0, 1]] == 2
    sids = np.vstack([[0, 0], ids])
    nodes, codes = Trie(ids, np.arange(1, 5), 3).window(np.array([[0, 2, 4]]), sids)
    assert (nodes[0, 0] == -1).all()  # padding is in no one's window
    root, one = 0, int(trie.next_node[0, 1])
    query = np.array([[root, one, int(trie.next_node[0, 0])]])
    first = seen_fraction(trie, query, nodes[:, :, 0], codes[:, :, 0], 3)
    assert first[0, 0].tolist() == [0.5, 0.5, 0.0]  # (0, _) holds items 1, 2; (1, _) 3, 4
    assert not first[0, 1:].any()  # deeper nodes never match a level-0 prefix
    second = seen_fraction(trie, query, nodes[:, :, 1], codes[:, :, 1], 3)
    assert second[0, 1].tolist() == [0.0, 0.0, 1.0]  # under (1, _): item 4 = (1, 2)
    assert second[0, 2].tolist() == [0.0, 1.0, 0.0]  # under (0, _): item 2 = (0, 1)
    hidden = seen_fraction(trie, query, nodes[:, :, 1], codes[:, :, 1], 3,
                           visible=np.zeros((1, 3, 3), dtype=bool))
    assert not hidden.any()
    # a repeat counts once; an item the trie does not hold (a warm item, cold trie) not at all
    again, _ = trie.window(np.array([[2, 4, 2, 0]]), sids)
    assert (again[0, :2] >= 0).all() and (again[0, 2:] == -1).all()
    part = TrieTable(ids[:2], np.arange(1, 3), vocab=3)  # items 1, 2 only
    held, held_codes = part.window(np.array([[2, 3]]), sids)
    assert (held[0, 0] >= 0).all() and (held[0, 1] == -1).all()  # item 3 starts (1, ...)
    assert seen_fraction(part, np.array([[0]]), held[:, :, 0], held_codes[:, :, 0],
                         3)[0, 0].tolist() == [0.5, 0.0, 0.0]
    penalty = repeat_penalty(np.array([0.0, 0.5, 1.0], dtype=np.float32), -2.0)
    np.testing.assert_allclose(penalty, [0.0, np.log(0.5 + 0.5 * np.exp(-2.0)), -2.0],
                               rtol=1e-6)


def test_tiger_token_table_keeps_code_levels_and_the_item_token() -> None:
    """code_levels cuts the codes and re-ranks the items that then collide; item_token makes
    the last token the item index; asking for more levels than exist is a named error."""
    sids = np.array([[0, 0, 0, 0], [1, 2, 3, 0], [1, 2, 4, 0], [5, 6, 7, 0]])
    tiger = RETRIEVAL_MODELS.create("tiger", params={"code_levels": 2})
    assert tiger.token_table(sids).tolist() == [[0, 0, 0], [1, 2, 0], [1, 2, 1], [5, 6, 0]]
    tiger = RETRIEVAL_MODELS.create("tiger", params={"code_levels": 1, "item_token": True})
    assert tiger.token_table(sids).tolist() == [[0, 0], [1, 1], [1, 2], [5, 3]]
    assert np.array_equal(RETRIEVAL_MODELS.create("tiger", params={}).token_table(sids), sids)
    with pytest.raises(ValueError, match="code_levels: 4, but the semantic IDs have 3"):
        RETRIEVAL_MODELS.create("tiger", params={"code_levels": 4}).token_table(sids)
    big = np.zeros((30_001, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="dense trie of nodes x items, at least 7 GiB for 30,000"):
        RETRIEVAL_MODELS.create("tiger", params={"item_token": True}).token_table(big)


def test_tiger_with_item_tokens_learns_the_sequential_rule() -> None:
    data = _cyclic_data()
    n = data.n_items
    codes = np.column_stack([np.arange(n) // 4, np.arange(n) % 4 // 2])
    data.semantic_ids = np.vstack([np.zeros((1, 3), dtype=np.int64), disambiguate(codes)])
    model = RETRIEVAL_MODELS.create("tiger", params={
        "max_items": 4, "embed_dim": 16, "heads": 1, "layers": 1, "dropout": 0.0, "epochs": 40,
        "batch_size": 32, "lr": 0.01, "beam_size": 5, "code_levels": 1, "item_token": True,
        "repeat_bias": True}).fit(data)
    assert model.sid_table[1:, -1].tolist() == list(range(1, n + 1))
    assert _hit_rate(model, n) >= 0.8


def test_tiger_repeat_bias_learns_that_nobody_repeats() -> None:
    """SASRec's repeat_bias test for TIGER: the item-level bias turns negative and the
    top-5 then holds no item of the window."""
    rng = np.random.default_rng(0)
    n = 24
    data = RetrievalData(n_items=n, train_sequences=[rng.permutation(np.arange(1, n + 1))[:16]
                                                     for _ in range(60)])
    codes = np.column_stack([np.arange(n) // 4, np.arange(n) % 4])
    data.semantic_ids = np.vstack([np.zeros((1, 3), dtype=np.int64), disambiguate(codes)])
    model = RETRIEVAL_MODELS.create("tiger", params={
        "max_items": 6, "embed_dim": 16, "heads": 1, "layers": 1, "dropout": 0.0, "epochs": 30,
        "batch_size": 16, "lr": 0.01, "beam_size": 10, "repeat_bias": True}).fit(data)
    assert float(model.module.repeat) < -1.5
    histories = [rng.permutation(np.arange(1, n + 1))[:6] for _ in range(20)]
    top = model.recommend(histories, 5)
    assert not any(set(t) & set(h) for t, h in zip(top, histories, strict=True))
    # repeat_window: the bias reaches older items of the history than the decoder reads
    longer = [rng.permutation(np.arange(1, n + 1))[:12] for _ in range(20)]

    def repeats() -> int:  # recommended items already in the 12-item history, over 20 users
        return sum(len(set(t) & set(h)) for t, h in zip(model.recommend(longer, 5), longer,
                                                        strict=True))

    within_decoder_window = repeats()
    model.params = model.params.model_copy(update={"repeat_window": 12})
    assert within_decoder_window >= 20 and repeats() <= within_decoder_window // 10
    with pytest.raises(RegistryError, match="repeat_window needs repeat_bias: true"):
        RETRIEVAL_MODELS.create("tiger", params={"repeat_window": 50})


def test_tiger_requires_semantic_ids() -> None:
    with pytest.raises(ValueError, match="semantic_ids pipeline"):
        RETRIEVAL_MODELS.create("tiger").fit(_cyclic_data())


def test_merge_cold_gives_every_top_k_prefix_its_cold_share() -> None:
    warm = np.array([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    cold = np.array([[9, 8, -1], [3, -1, -1]])  # row 2: the only candidate is already warm
    out = merge_cold(warm, cold, 6, share=1 / 3)
    # slots 3 and 6 go to cold items in order; without candidates they stay warm
    assert out.tolist() == [[1, 2, 9, 3, 4, 8], [1, 2, 3, 4, 5, 6]]
    assert merge_cold(warm, cold, 6, share=0.0).tolist() == warm.tolist()


def _cold_start_task(n_groups: int = 6, per_group: int = 4, n_users: int = 120):
    """Users stay inside one content group; the last item of every group never appears in
    training, so only content (the shared code prefix) can reveal it."""
    rng = np.random.default_rng(0)
    n = n_groups * per_group
    group = np.arange(n) // per_group
    warm = [np.flatnonzero((group == g) & (np.arange(n) % per_group < per_group - 1)) + 1
            for g in range(n_groups)]
    users = rng.integers(0, n_groups, size=n_users)
    seqs = [rng.choice(warm[g], size=12) for g in users]
    codes = np.column_stack([group, np.arange(n) % per_group])
    sids = np.vstack([np.zeros((1, 3), dtype=np.int64), disambiguate(codes)])
    cold = np.array([g * per_group + per_group for g in range(n_groups)])  # 1-based indices
    data = RetrievalData(n_items=n, train_sequences=seqs, semantic_ids=sids, cold_items=cold)
    histories = [s[-4:] for s in seqs[:30]]
    targets = [{int(cold[g])} for g in users[:30]]
    return data, histories, targets, set(cold.tolist())


def test_tiger_reaches_cold_items_through_their_codes_where_sasrec_cannot() -> None:
    data, histories, targets, cold = _cold_start_task()
    small = {"embed_dim": 16, "heads": 1, "layers": 1, "dropout": 0.0, "epochs": 15,
             "batch_size": 32, "lr": 0.01}
    tiger = RETRIEVAL_MODELS.create("tiger", params={**small, "max_items": 4, "beam_size": 10,
                                                     "cold_share": 0.2}).fit(data)
    sasrec = RETRIEVAL_MODELS.create("sasrec", params={**small, "max_len": 8}).fit(data)
    top = tiger.recommend(histories, 10)
    tiger_cold = retrieval_report(top, targets, cold, data.n_items, [5, 10])["recall@10_cold"]
    sasrec_cold = retrieval_report(sasrec.recommend(histories, 10), targets, cold,
                                   data.n_items, [5, 10])["recall@10_cold"]
    assert tiger_cold >= 0.5  # the user's group prefix is decoded; its cold item takes a slot
    assert sasrec_cold < tiger_cold
    # cold_share 0.2: two of every top-10 are the decoder's best cold items
    assert all(np.isin(row, list(cold)).sum() >= 2 for row in top)


def test_tiger_weights_from_another_block_layout_get_a_named_error() -> None:
    sids = np.vstack([np.zeros((1, 3), dtype=np.int64),
                      disambiguate(np.column_stack([np.arange(8) // 4, np.arange(8) % 4]))])
    old = TigerModule((sids[1:].max(axis=0) + 1).tolist(),
                      TigerParams(embed_dim=8, heads=1, layers=1, norm="pre", input_norm=False))
    state = {"state_dict": old.state_dict(), "semantic_ids": torch.as_tensor(sids)}
    params = {"embed_dim": 8, "heads": 1, "layers": 1}  # today's defaults: post-LN, input LN
    with pytest.raises(ValueError, match="re-run the retrieval pipeline"):
        RETRIEVAL_MODELS.get("tiger").target.from_state(params, state)


@pytest.mark.parametrize("block", [
    {},  # SASRec's block: post-LN, GELU, FFN 4d, input LayerNorm
    {"norm": "pre", "activation": "relu", "input_norm": False, "init_std": 0.5, "ffn_dim": 40},
])
def test_cached_decoding_matches_the_full_forward_pass(block: dict) -> None:
    torch.manual_seed(0)
    module = TigerModule([6, 5, 3], TigerParams(max_items=4, embed_dim=16, heads=2, layers=2,
                                                dropout=0.0, **block)).eval()
    tokens = torch.randint(2, module.total, (3, 9))
    tokens[0, :4] = 0  # left padding
    tokens[0, 4] = 1
    logits, cache, pad = module.prefill(tokens[:, :6])
    torch.testing.assert_close(logits, module(tokens[:, :6])[:, -1], atol=1e-5, rtol=1e-5)
    for end in (7, 8, 9):
        logits, cache, pad = module.step(tokens[:, end - 1], cache, pad)
        torch.testing.assert_close(logits, module(tokens[:, :end])[:, -1], atol=1e-5, rtol=1e-5)
