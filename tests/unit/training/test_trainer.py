"""Tensor conversion, batching and the trainer: learning, determinism, resume, early stopping.

A tiny model defined here (embeddings + embedding-bag + linear, with dropout so
the global RNG matters) keeps these tests independent of the model zoo.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from recflow.features.spec import FeatureSpec, FieldSpec, sequence_columns
from recflow.metrics.ranking import auc
from recflow.models.base import RankingModel
from recflow.training import (
    TensorBatch,
    TrainerConfig,
    fit,
    frame_to_tensors,
    iterate_batches,
    predict,
)

N_USERS, N_ITEMS, SEQ_LEN = 40, 60, 4


def make_spec() -> FeatureSpec:
    return FeatureSpec(
        fields=[
            FieldSpec("user_id", "categorical", "vocab", {}, ["user_id"], vocab_size=N_USERS + 1),
            FieldSpec("item_id", "categorical", "vocab", {}, ["item_id"], vocab_size=N_ITEMS + 1),
            FieldSpec("price", "numeric", "standardize", {}, ["price"]),
            FieldSpec("hist", "sequence", "sequence", {"of": "item_id", "length": SEQ_LEN}, [],
                      vocab_size=N_ITEMS + 1),
        ],
        labels=["click", "purchase"],
    )


def make_frame(n: int, seed: int, flip: bool = False) -> pd.DataFrame:
    """Clicks planted on item parity and price; `flip` inverts the signal (for early stopping)."""
    rng = np.random.default_rng(seed)
    item = rng.integers(1, N_ITEMS + 1, n)
    price = rng.normal(size=n).astype(np.float32)
    logit = 2.0 * np.where(item % 2 == 0, 1.0, -1.0) + price
    click = (rng.random(n) < 1 / (1 + np.exp(-(-logit if flip else logit)))).astype(np.int8)
    frame = pd.DataFrame({
        "key_user": rng.integers(1, N_USERS + 1, n),
        "key_item": item,
        "key_timestamp": np.arange(n),
        "user_id": rng.integers(1, N_USERS + 1, n),
        "item_id": item,
        "price": price,
        "label_click": click,
        "label_purchase": click * (rng.random(n) < 0.3),
    })
    hist = rng.integers(0, N_ITEMS + 1, (n, SEQ_LEN))
    for i, col in enumerate(sequence_columns("hist", SEQ_LEN)):
        frame[col] = hist[:, i]
    return frame


class TinyModel(RankingModel):
    def __init__(self, spec: FeatureSpec, dim: int = 4) -> None:
        super().__init__(spec)
        self.user = nn.Embedding(spec["user_id"].vocab_size, dim)
        self.item = nn.Embedding(spec["item_id"].vocab_size, dim)
        self.hist = nn.EmbeddingBag(spec["hist"].vocab_size, dim, mode="mean", padding_idx=0)
        self.dropout = nn.Dropout(0.1)
        self.out = nn.Linear(3 * dim + 1, len(self.tasks))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([self.user(inputs["user_id"]), self.item(inputs["item_id"]),
                       self.hist(inputs["hist"]), inputs["price"].unsqueeze(1)], dim=1)
        return self.out(self.dropout(x))


@pytest.fixture(scope="module")
def data() -> tuple[FeatureSpec, TensorBatch, TensorBatch]:
    spec = make_spec()
    return spec, frame_to_tensors(make_frame(3000, 1), spec), frame_to_tensors(make_frame(800, 2), spec)


def new_model(spec: FeatureSpec, seed: int = 0) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel(spec)


CFG = dict(batch_size=256, lr=0.02, embedding_lr=0.05, progress=False, seed=3)


# ---- data ----------------------------------------------------------------------------------
def test_frame_to_tensors_shapes_and_dtypes():
    spec, frame = make_spec(), make_frame(50, 0)
    batch = frame_to_tensors(frame, spec)
    assert len(batch) == 50
    assert batch.inputs["user_id"].dtype == torch.int64 and batch.inputs["user_id"].shape == (50,)
    assert batch.inputs["price"].dtype == torch.float32 and batch.inputs["price"].shape == (50,)
    assert batch.inputs["hist"].dtype == torch.int64 and batch.inputs["hist"].shape == (50, SEQ_LEN)
    np.testing.assert_array_equal(
        batch.inputs["hist"].numpy(), frame[sequence_columns("hist", SEQ_LEN)].to_numpy()
    )
    assert set(batch.labels) == {"click", "purchase"}
    assert batch.labels["click"].dtype == torch.float32
    np.testing.assert_array_equal(batch.users, frame["key_user"].to_numpy())


def test_frame_to_tensors_names_missing_columns():
    with pytest.raises(KeyError, match="hist"):
        frame_to_tensors(make_frame(5, 0).drop(columns="hist__002"), make_spec())


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_cover_every_row_once(shuffle):
    n = 1003
    batch = TensorBatch({"x": torch.arange(n), "s": torch.arange(2 * n).view(n, 2)},
                        {"click": torch.arange(n).float()}, np.arange(n))
    gen = torch.Generator().manual_seed(0)
    parts = list(iterate_batches(batch, 100, shuffle=shuffle, generator=gen))
    assert [len(p) for p in parts] == [100] * 10 + [3]
    seen = torch.cat([p.inputs["x"] for p in parts])
    assert sorted(seen.tolist()) == list(range(n))
    assert (seen != torch.arange(n)).any() == shuffle
    for p in parts:  # rows stay aligned across inputs, labels and users
        np.testing.assert_array_equal(p.inputs["s"][:, 0].numpy(), 2 * p.inputs["x"].numpy())
        np.testing.assert_array_equal(p.labels["click"].long().numpy(), p.users)


# ---- trainer -------------------------------------------------------------------------------
def test_config_rejects_unknown_keys():
    with pytest.raises(ValidationError):
        TrainerConfig(epochs=1, learning_rate=0.1)


def test_learns_planted_signal(data):
    spec, train, valid = data
    model = new_model(spec)
    result = fit(model, train, valid, TrainerConfig(epochs=3, **CFG))
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert set(result.history[0]) == {"epoch", "train_loss", "valid_auc", "valid_logloss",
                                      "batch_seconds", "seconds", "samples_per_s"}
    # batch assembly is part of the train loop samples_per_s covers, so shorter than it
    row = result.history[0]
    assert 0 < row["batch_seconds"] < len(train) / row["samples_per_s"]
    assert result.best_valid_auc > 0.8
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    scores = predict(model, valid, batch_size=300)
    assert scores.shape == (len(valid), 1) and model.training  # mode restored
    assert auc(valid.labels["click"].numpy(), scores[:, 0]) == pytest.approx(
        result.history[-1]["valid_auc"])


def test_param_groups_and_step_cap(data):
    spec, train, valid = data
    model = new_model(spec)
    result = fit(model, train, valid, TrainerConfig(epochs=1, max_steps_per_epoch=2,
                                                    optimizer="adamw", **CFG))
    # 2 steps of 256 rows: samples/s is computed from 512 samples
    assert result.history[0]["samples_per_s"] > 0


def test_same_seed_same_weights(data):
    spec, train, valid = data
    runs = []
    for _ in range(2):
        model = new_model(spec)
        runs.append((fit(model, train, valid, TrainerConfig(epochs=2, **CFG)), model.state_dict()))
    (r1, w1), (r2, w2) = runs
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert [h["valid_auc"] for h in r1.history] == [h["valid_auc"] for h in r2.history]


def _metrics(history):
    return [(h["epoch"], h["train_loss"], h["valid_auc"], h["valid_logloss"]) for h in history]


def test_resume_reproduces_uninterrupted_run(data, tmp_path):
    spec, train, valid = data
    full_model = new_model(spec)
    full = fit(full_model, train, valid, TrainerConfig(epochs=4, **CFG))

    ckpt = str(tmp_path / "ckpt")
    fit(new_model(spec), train, valid, TrainerConfig(epochs=2, checkpoint_dir=ckpt, **CFG))
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["epoch_0002.pt"]

    resumed_model = new_model(spec, seed=99)  # different init: everything must come from the checkpoint
    resumed = fit(resumed_model, train, valid,
                  TrainerConfig(epochs=4, checkpoint_dir=ckpt, resume=True, **CFG))
    assert _metrics(resumed.history) == _metrics(full.history)
    assert resumed.best_epoch == full.best_epoch
    full_w, resumed_w = full_model.state_dict(), resumed_model.state_dict()
    assert all(torch.equal(full_w[k], resumed_w[k]) for k in full_w)

    with pytest.raises(ValueError, match="lr"):
        fit(new_model(spec), train, valid, TrainerConfig(
            epochs=5, checkpoint_dir=ckpt, resume=True, **{**CFG, "lr": 0.1}))


def test_early_stopping_restores_best(data, tmp_path):
    spec, train, _ = data
    valid = frame_to_tensors(make_frame(800, 2, flip=True), spec)  # learning the signal hurts
    model = new_model(spec)
    cfg = TrainerConfig(epochs=8, early_stopping_patience=2, checkpoint_dir=str(tmp_path), **CFG)
    result = fit(model, train, valid, cfg)
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 2 < 8
    assert result.best_valid_auc == max(h["valid_auc"] for h in result.history)
    restored = auc(valid.labels["click"].numpy(), predict(model, valid)[:, 0])
    assert restored == result.best_valid_auc

    # resuming a run that already stopped trains nothing more and restores the same weights
    again = new_model(spec, seed=5)
    resumed = fit(again, train, valid, cfg.model_copy(update={"resume": True}))
    assert _metrics(resumed.history) == _metrics(result.history)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
