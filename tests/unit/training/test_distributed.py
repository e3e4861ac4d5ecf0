"""DDP training (2 gloo processes via the elastic launcher) against single-process training.

Tolerance: with the same global batch, the averaged DDP gradient equals the
single-process one up to float summation order, so after 3 epochs of Adam the weights
agree to 1e-5 absolute (observed ~6e-7) and the valid AUC / train loss to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recflow.features.spec import sequence_columns
from recflow.registry import MODELS
from recflow.training import TrainerConfig, fit, frame_to_tensors
from recflow.training.distributed import fit_distributed
from tests.helpers import tiny_spec

pytestmark = pytest.mark.slow  # spawns DDP processes

N_USERS, N_ITEMS, N_CATS, SEQ = 30, 50, 5, 3
WEIGHT_ATOL = 1e-5
METRIC_ATOL = 1e-5


def make_frame(n: int, seed: int) -> pd.DataFrame:
    """Processed columns for `tiny_spec`, clicks planted on item parity and price."""
    rng = np.random.default_rng(seed)
    item = rng.integers(1, N_ITEMS, n)
    price = rng.normal(size=n).astype(np.float32)
    logit = 1.5 * np.where(item % 2 == 0, 1.0, -1.0) + price
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    frame = pd.DataFrame({
        "key_user": rng.integers(1, N_USERS, n),
        "user_id": rng.integers(1, N_USERS, n),
        "item_id": item,
        "category": item % N_CATS,
        "price": price,
        "label_click": click,
        "label_purchase": click * (rng.random(n) < 0.3).astype(np.int8),
    })
    hist = rng.integers(0, N_ITEMS, (n, SEQ))
    for i, col in enumerate(sequence_columns("hist_item_id", SEQ)):
        frame[col] = hist[:, i]
    return frame


@pytest.fixture(scope="module")
def spec():
    return tiny_spec(N_USERS, N_ITEMS, N_CATS, SEQ)


@pytest.fixture(scope="module")
def runs(spec, tmp_path_factory):
    """One 2-process run and its single-process reference, same YAML except `workers`."""
    # 603 rows / batch 64: a short last batch of 27 rows, split 14 / 13 across the ranks.
    train = frame_to_tensors(make_frame(603, 0), spec)
    valid = frame_to_tensors(make_frame(300, 1), spec)
    base = {"epochs": 3, "batch_size": 64, "lr": 0.02, "progress": False, "seed": 3}
    out = {}
    for workers in (1, 2):
        ckpt = tmp_path_factory.mktemp(f"ckpt{workers}")
        torch.manual_seed(0)
        model = MODELS.create("fm", spec, params={"embed_dim": 4})
        out["init"] = {k: v.clone() for k, v in model.state_dict().items()}
        config = TrainerConfig(**base, workers=workers, checkpoint_dir=str(ckpt))
        out[workers] = (model, fit(model, train, valid, config), ckpt)
    return out


def test_two_processes_match_single_process(runs) -> None:
    (m1, r1, _), (m2, r2, _) = runs[1], runs[2]
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for key, init in runs["init"].items():  # both trained (a no-op run would match too)
        assert (s2[key] - init).abs().max() > 100 * WEIGHT_ATOL, key
    for key in s1:
        torch.testing.assert_close(s2[key], s1[key], atol=WEIGHT_ATOL, rtol=0, msg=key)
    assert len(r2.history) == len(r1.history) == 3
    for h1, h2 in zip(r1.history, r2.history, strict=True):
        assert h2["valid_auc"] == pytest.approx(h1["valid_auc"], abs=METRIC_ATOL)
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], abs=METRIC_ATOL)
    assert r2.history[-1]["valid_auc"] > 0.6
    assert r2.best_epoch == r1.best_epoch


def test_checkpoint_written_once_by_rank_zero(runs) -> None:
    model, _, ckpt = runs[2]
    files = sorted(p.name for p in ckpt.iterdir())
    assert files == ["epoch_0003.pt"]  # no second writer's .tmp, older epochs replaced
    payload = torch.load(ckpt / files[0], map_location="cpu", weights_only=True)
    assert len(payload["rank_rng"]) == 2  # gathered on rank 0: only rank 0 writes
    assert not torch.equal(payload["rank_rng"][0], payload["rank_rng"][1])
    assert payload["fingerprint"]["trainer"]["workers"] == 2
    for key, value in model.state_dict().items():
        torch.testing.assert_close(payload["module"][key], value, atol=0, rtol=0)


def test_batch_size_must_split_across_workers(spec) -> None:
    batch = frame_to_tensors(make_frame(20, 0), spec)
    model = MODELS.create("lr", spec, params={})
    config = TrainerConfig(workers=2, batch_size=65, progress=False)
    with pytest.raises(ValueError, match=r"trainer\.batch_size \(65\).*trainer\.workers \(2\)"):
        fit(model, batch, batch, config)


def test_nccl_without_gpus_is_a_clear_error(spec, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    batch = frame_to_tensors(make_frame(20, 0), spec)
    model = MODELS.create("lr", spec, params={})
    config = TrainerConfig(workers=2, batch_size=64, backend="nccl", progress=False)
    with pytest.raises(ValueError, match="trainer.backend: nccl needs one CUDA device"):
        fit_distributed(model, batch, batch, config)


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="backend"):
        TrainerConfig(workers=2, backend="mpi")
