"""ONNX export of the retrieval models: parity, payload round trips, TIGER's runtime loop."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from recflow.datasets import NumpyArrayDataset
from recflow.export.checks import ParityError, compare
from recflow.export.onnx_export import read_metadata
from recflow.export.retrieval import export_retriever, retriever_from_payload
from recflow.export.runtime import session
from recflow.models.retrieval import RETRIEVAL_MODELS, RetrievalData, Trie
from recflow.models.retrieval.tiger import constrained_beam_search, history_tokens
from recflow.serving.generative import GenerativeRetriever
from recflow.tokenization import disambiguate

torch.set_num_threads(1)

N_ITEMS = 40
PARAMS = {
    "popularity": {},
    "sasrec": {"max_len": 6, "embed_dim": 16, "heads": 2, "layers": 1, "epochs": 1},
    "sasrec_sampled": {"max_len": 6, "embed_dim": 16, "heads": 2, "layers": 1, "epochs": 1,
                       "loss": "sampled_softmax", "num_negatives": 8},
    "sasrec_ligr": {"max_len": 6, "embed_dim": 16, "heads": 2, "layers": 2, "epochs": 1,
                    "block": "ligr"},
    "sasrec_repeat": {"max_len": 6, "embed_dim": 16, "heads": 2, "layers": 1, "epochs": 2,
                      "repeat_bias": True},
    "two_tower": {"max_len": 6, "embed_dim": 8, "hidden_dim": 16, "out_dim": 8, "epochs": 1,
                  "batch_size": 32},
    "tiger": {"max_items": 3, "embed_dim": 16, "heads": 2, "layers": 1, "epochs": 1,
              "beam_size": 12, "cold_share": 0.1},  # set: unset, it comes from data.valid
    "tiger_repeat": {"max_items": 3, "embed_dim": 16, "heads": 2, "layers": 1, "epochs": 1,
                     "beam_size": 12, "cold_share": 0.1, "repeat_bias": True,
                     "repeat_window": 5},  # the bias reaches 2 items beyond the input
    "tiger_items": {"max_items": 3, "embed_dim": 16, "heads": 2, "layers": 1, "epochs": 1,
                    "beam_size": 12, "cold_share": 0.1, "repeat_bias": True,
                    "repeat_window": 5, "code_levels": 1, "item_token": True},
}


@pytest.fixture(scope="module")
def data() -> RetrievalData:
    rng = np.random.default_rng(3)
    seqs = [rng.integers(1, N_ITEMS - 4, size=int(rng.integers(2, 9))) for _ in range(80)]
    features = {"colour": np.concatenate([[0], rng.integers(1, 5, N_ITEMS)]),
                "size": np.concatenate([[0], rng.integers(1, 3, N_ITEMS)])}
    codes = disambiguate(np.stack([rng.integers(0, 4, N_ITEMS), rng.integers(0, 4, N_ITEMS)], 1))
    sids = np.vstack([np.zeros((1, codes.shape[1]), dtype=np.int64), codes])
    return RetrievalData(n_items=N_ITEMS, train_sequences=seqs, item_features=features,
                         semantic_ids=sids, seed=0)


@pytest.fixture(scope="module")
def histories() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    out = [rng.integers(1, N_ITEMS + 1, size=int(rng.integers(1, 9))) for _ in range(40)]
    return out + [np.array([N_ITEMS]), np.array([], dtype=np.int64)]  # a cold item; no history


def _payload(name: str, data: RetrievalData, tmp_path) -> dict:
    """Fit, then go through the on-disk format the catalog uses (weights_only load)."""
    registered = next(r for r in ("sasrec", "tiger", name) if name.startswith(r))
    model = RETRIEVAL_MODELS.create(registered, params=PARAMS[name]).fit(data)
    payload = {"model": registered, "params": PARAMS[name],
               "state_dict": model.state(), "feature_spec_hash": None}
    torch.save(payload, tmp_path / f"{name}.pt")
    return model, torch.load(tmp_path / f"{name}.pt", weights_only=True)


@pytest.mark.parametrize("name", list(PARAMS))
def test_payload_rebuilds_the_same_retriever(name, data, histories, tmp_path) -> None:
    model, payload = _payload(name, data, tmp_path)
    rebuilt = retriever_from_payload(payload)
    assert np.array_equal(rebuilt.recommend(histories, 5), model.recommend(histories, 5))


def test_sasrec_sampled_softmax_trains(data) -> None:
    model = RETRIEVAL_MODELS.create("sasrec", params={**PARAMS["sasrec_sampled"], "epochs": 3})
    model.fit(data)
    assert all(np.isfinite(model.history)) and model.history[-1] < model.history[0]


def _check_graph(proto: onnx.ModelProto, feeds: dict, want: np.ndarray) -> None:
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    sess = session(proto)
    for rows in (slice(0, 1), slice(0, 7), slice(None)):  # any batch size
        got = sess.run(None, {k: v[rows] for k, v in feeds.items()})[0]
        assert np.abs(got - want[rows]).max() <= 1e-5


@pytest.mark.parametrize("name", ["sasrec", "sasrec_sampled", "sasrec_ligr", "sasrec_repeat"])
def test_sasrec_export_parity(name, data, histories, tmp_path) -> None:
    from recflow.models.retrieval.base import left_pad

    model, payload = _payload(name, data, tmp_path)
    out = export_retriever(payload, histories, name="sasrec")
    rep = out["report"]
    assert rep["max_abs_diff"] <= 1e-5 and rep["rows"] == len(histories)
    hist = left_pad(histories, PARAMS[name]["max_len"])
    with torch.no_grad():
        want = model.module.eval().user_embedding(torch.as_tensor(hist)).numpy()
    _check_graph(out["user_encoder"], {"history": hist}, want)
    matrix = out["item_vectors"]
    assert matrix.dtype == np.float32 and matrix.shape == (N_ITEMS + 1, 16)
    assert not matrix[0].any()
    # ANN side: user vector x item matrix (+ the repeat bias on the history's items, from
    # the metadata) = SASRec's own scores
    bias = read_metadata(out["user_encoder"]).get("repeat_bias")
    assert (bias is None) == (name != "sasrec_repeat")
    in_history = np.zeros((len(hist), N_ITEMS + 1))
    np.put_along_axis(in_history, hist, 1.0, axis=1)
    ann = want @ matrix[1:].T + float(bias or 0.0) * in_history[:, 1:]
    np.testing.assert_allclose(ann, model.scores(histories).numpy(), atol=1e-5)
    assert rep["top10_agreement"] == 1.0


def test_two_tower_export_parity_and_new_items(data, histories, tmp_path) -> None:
    model, payload = _payload("two_tower", data, tmp_path)
    out = export_retriever(payload, histories, name="two_tower")
    assert out["report"]["max_abs_diff"] <= 1e-5 and out["report"]["top10_agreement"] == 1.0
    assert set(out["report"]["graphs"]) == {"user_tower", "item_tower"}
    from recflow.models.retrieval.base import left_pad

    hist = left_pad(histories, PARAMS["two_tower"]["max_len"])
    _check_graph(out["user_tower"], {"history": hist},
                 model.user_vectors(histories).numpy())
    matrix = out["item_vectors"]
    assert matrix.shape == (N_ITEMS + 1, 8) and not matrix[0].any()
    np.testing.assert_allclose(np.linalg.norm(matrix[1:], axis=1), 1.0, atol=1e-5)
    # item tower: catalogue rows reproduce the matrix; a new item (index 0) is OOV + features
    codes = {f"feature_{f}": data.item_features[f][1:] for f in ("colour", "size")}
    items = np.arange(1, N_ITEMS + 1)
    _check_graph(out["item_tower"], {"item": items, **codes}, matrix[1:])
    new = {"item": np.array([0, 0]), "feature_colour": np.array([1, 4]),
           "feature_size": np.array([2, 1])}
    with torch.no_grad():
        want = model.module.item_tower(torch.tensor([0, 0]), torch.tensor([[1, 2], [4, 1]]))
    got = session(out["item_tower"]).run(None, new)[0]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


@pytest.fixture(scope="module")
def tiger(data, tmp_path_factory):
    model, payload = _payload("tiger", data, tmp_path_factory.mktemp("tiger"))
    return model, payload


def test_tiger_runtime_loop_matches_torch_beam_search(tiger, data, histories) -> None:
    model, payload = tiger
    out = export_retriever(payload, histories, name="tiger")
    rep = out["report"]
    assert rep["max_abs_diff"] <= 1e-5 and rep["beam_top10_identical"] == 1.0
    runtime = GenerativeRetriever(out["decoder_step"].SerializeToString())
    prefix = history_tokens(model.module, model.sid_table, histories, model.params.max_items)
    assert np.array_equal(runtime.history_tokens(histories), prefix.numpy())
    torch_trie = Trie(data.semantic_ids[1:], np.arange(1, N_ITEMS + 1), runtime.trie.next_node.shape[1])
    assert np.array_equal(runtime.trie.next_node, torch_trie.next_node)
    for beam in (5, 12, 60):
        got, got_scores = runtime.search(runtime.history_tokens(histories), beam)
        want, want_scores = constrained_beam_search(model.module, model.trie, prefix, beam)
        assert np.array_equal(got, want), beam
        finite = np.isfinite(want_scores)
        assert np.array_equal(np.isfinite(got_scores), finite)
        np.testing.assert_allclose(got_scores[finite], want_scores[finite], atol=1e-5)
    # recommend = Tiger.recommend: beam search + the cold-item search under the cold trie
    assert len(runtime.cold_items) == 5 and runtime.cold_share == model.params.cold_share
    top = runtime.recommend(histories, 10)
    assert np.array_equal(top, model.recommend(histories, 10))
    assert rep["recommend_top10_identical"] == 1.0
    assert np.isin(top[:, 9], runtime.cold_items).all()  # floor(0.1 * 10) = 1 cold slot


@pytest.mark.parametrize("name", ["tiger_repeat", "tiger_items"])
def test_tiger_repeat_bias_is_served_as_trained(name, data, histories, tmp_path) -> None:
    """The item-level bias travels as metadata and the numpy beam search applies it as
    torch's does; made strongly negative, it keeps every window item out of the served
    lists (a prefix whose items were all seen drops at the level where that holds). With
    `item_token` the served trie is the model's token table, not the tokenizer's IDs."""
    model, payload = _payload(name, data, tmp_path)
    with torch.no_grad():
        model.module.repeat.copy_(torch.tensor(-30.0))
    payload["state_dict"] = model.state()
    out = export_retriever(payload, histories, name="tiger")
    assert out["report"]["beam_top10_identical"] == 1.0
    assert out["report"]["recommend_top10_identical"] == 1.0
    runtime = GenerativeRetriever(out["decoder_step"])
    assert runtime.repeat_bias == pytest.approx(-30.0)
    assert runtime.repeat_window == 5
    top = runtime.recommend(histories, 10)
    assert np.array_equal(top, model.recommend(histories, 10))
    plain, _ = runtime.search(runtime.history_tokens(histories), 10)  # no window: no bias

    def repeats(lists: np.ndarray) -> int:
        return sum(len(set(t) & set(h[-5:].tolist())) for t, h in zip(lists, histories,
                                                                       strict=True))
    assert repeats(plain) > 0 and repeats(top) == 0
    assert np.array_equal(runtime.sids, model.sid_table.numpy())


def test_tiger_runtime_returns_only_valid_items(tiger, histories) -> None:
    _, payload = tiger
    out = export_retriever(payload, histories[:5], name="tiger")
    runtime = GenerativeRetriever(out["decoder_step"])
    items, _ = runtime.search(runtime.history_tokens(histories), beam=N_ITEMS + 10)
    for row in items:
        real = row[row > 0]
        assert sorted(real.tolist()) == list(range(1, N_ITEMS + 1))  # every item once
        assert (row[len(real):] == -1).all()
    top = runtime.recommend(histories, 10)
    assert ((top >= 1) & (top <= N_ITEMS)).all()
    cold, _ = runtime.search(runtime.history_tokens(histories), 20, runtime.cold_trie)
    assert set(cold[cold > 0].tolist()) == set(runtime.cold_items.tolist())
    assert all(len(set(r)) == 10 for r in top)


def test_generative_runtime_imports_no_torch() -> None:
    code = ("import sys; import recflow.serving.generative; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parity_failure_names_the_numbers() -> None:
    want = np.zeros((3, 2), dtype=np.float32)
    got = want.copy()
    got[1, 1] = 3e-4
    with pytest.raises(ParityError, match=r"model 'x'.*user vectors differ from torch by 0.0003"
                                          r".*on 3 histories; worst at row 1, output 1"):
        compare(got, want, tolerance=1e-5, name="x", what="user vectors",
                rows_label="histories")


def test_popularity_has_no_export(data, tmp_path) -> None:
    _, payload = _payload("popularity", data, tmp_path)
    with pytest.raises(ValueError, match="has no export"):
        export_retriever(payload, [np.array([1])], name="popularity")


def test_numpy_array_dataset_round_trip(tmp_path) -> None:
    path = tmp_path / "sub" / "vectors.npy"
    ds = NumpyArrayDataset(str(path), dtype="float32")
    ds.save(np.arange(6, dtype=np.float64).reshape(3, 2))
    back = np.load(path)  # what an ANN library does
    assert back.dtype == np.float32 and back.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert ds.exists() and np.array_equal(ds.load(), back)
    mapped = NumpyArrayDataset(str(path), load_args={"mmap_mode": "r"}).load()
    assert isinstance(mapped, np.memmap)
