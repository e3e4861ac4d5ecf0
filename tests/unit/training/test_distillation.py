"""Distillation losses against hand-computed values, temperature scaling, cached teacher logits."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recflow.registry import LOSSES, RegistryError
from recflow.training.distillation import (
    TEACHER_PREFIX,
    DistillationObjective,
    intermediate_match,
    kd_bce,
    listwise_kl,
    logit_mse,
    objective_from_config,
    soft_bce,
    teacher_logits,
)

torch.set_num_threads(1)


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _bce(target: float, p: float) -> float:
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_kd_bce_matches_hand_computation():
    z_s, z_t, y = torch.tensor([0.5, -1.0]), torch.tensor([2.0, -0.5]), torch.tensor([1.0, 0.0])
    a, t = 0.3, 2.0
    hard = (_bce(1, _sig(0.5)) + _bce(0, _sig(-1.0))) / 2
    soft = (_bce(_sig(2.0 / t), _sig(0.5 / t)) + _bce(_sig(-0.5 / t), _sig(-1.0 / t))) / 2
    expected = (1 - a) * hard + a * t * t * soft
    assert kd_bce(z_s, y, z_t, alpha=a, temperature=t).item() == pytest.approx(expected, rel=1e-6)


def test_temperature_scaling():
    z_s, z_t = torch.tensor([0.4, -2.0, 1.0]), torch.tensor([1.5, -1.0, 3.0])
    for t in (1.0, 2.0, 5.0):
        expected = t * t * np.mean([_bce(_sig(b / t), _sig(a / t))
                                    for a, b in zip(z_s.tolist(), z_t.tolist(), strict=True)])
        assert soft_bce(z_s, z_t, t).item() == pytest.approx(expected, rel=1e-6)
    # T² keeps the soft gradient's scale: d/dz_s of T²·BCE(σ(z_t/T), σ(z_s/T)) = T·(σ(z_s/T) − σ(z_t/T))
    z = torch.tensor([0.4], requires_grad=True)
    soft_bce(z, torch.tensor([1.5]), 4.0).backward()
    assert z.grad.item() == pytest.approx(4.0 * (_sig(0.1) - _sig(1.5 / 4)), rel=1e-5)
    # the teacher is detached
    zt = torch.tensor([1.0], requires_grad=True)
    soft_bce(torch.tensor([0.0], requires_grad=True), zt, 2.0).backward()
    assert zt.grad is None


def test_logit_mse_and_intermediate_match():
    assert logit_mse(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])).item() == pytest.approx(2.5)
    h_s, h_t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    # cos = 0 -> 1 − 0; ||h_s − h_t||² = 1 + 4
    assert intermediate_match(h_s, h_t).item() == pytest.approx(6.0)
    proj = torch.nn.Linear(3, 2)
    assert intermediate_match(torch.randn(4, 3), torch.randn(4, 2), proj).ndim == 0
    with pytest.raises(ValueError, match="projection"):
        intermediate_match(torch.randn(4, 3), torch.randn(4, 2))


def test_listwise_kl_over_teacher_top_k():
    t = torch.tensor([[3.0, 1.0, 0.0, -5.0]])
    s = torch.tensor([[1.0, 2.0, 9.0, 0.0]])
    # top-2 of the teacher: columns 0, 1
    p_t = np.exp([3.0, 1.0]) / np.exp([3.0, 1.0]).sum()
    p_s = np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()
    expected = float(np.sum(p_t * np.log(p_t / p_s)))
    assert listwise_kl(s, t, k=2).item() == pytest.approx(expected, rel=1e-5)
    assert listwise_kl(t.clone(), t, k=3).item() == pytest.approx(0.0, abs=1e-7)
    # temperature: T² · KL of the softened distributions
    pt2 = np.exp(np.array([3.0, 1.0]) / 2); pt2 /= pt2.sum()  # noqa: E702
    ps2 = np.exp(np.array([1.0, 2.0]) / 2); ps2 /= ps2.sum()  # noqa: E702
    assert listwise_kl(s, t, k=2, temperature=2.0).item() == pytest.approx(
        4 * float(np.sum(pt2 * np.log(pt2 / ps2))), rel=1e-5)


def test_registered_terms_compose_and_match_functions():
    assert {"kd_bce", "logit_mse", "hard_label"} <= set(LOSSES.list())
    terms = objective_from_config([{"name": "kd_bce", "params": {"alpha": 0.4, "temperature": 3}},
                                   {"name": "logit_mse", "params": {"weight": 0.1}}])
    z_s, z_t, y = torch.tensor([[0.2], [-0.7]]), torch.tensor([[1.0], [-2.0]]), torch.tensor([1., 0.])

    def hard(logits, labels):
        return torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels["click"])

    total = sum(term(z_s, {"click": y}, z_t, [0], hard) for term in terms)
    expected = kd_bce(z_s[:, 0], y, z_t[:, 0], 0.4, 3.0) + 0.1 * logit_mse(z_s, z_t)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(RegistryError, match="alpha"):
        LOSSES.create("kd_bce", params={"alpha": 2})
    with pytest.raises(RegistryError, match="unknown loss"):
        objective_from_config([{"name": "nope"}])


@pytest.fixture(scope="module")
def tiny():
    from recflow.features import FeatureSpec, FieldSpec
    from recflow.training.data import frame_to_tensors

    spec = FeatureSpec(fields=[FieldSpec(name=n, kind="categorical", transform="vocab", params={},
                                         columns=[n], vocab_size=5)
                               for n in ("user_id", "item_id", "category")],
                       labels=["click", "purchase"])
    rng = np.random.default_rng(0)
    n = 64
    frame = pd.DataFrame({f.name: rng.integers(1, 4, n) for f in spec.fields})
    frame["key_user"] = rng.integers(0, 5, n)
    frame["label_click"] = rng.integers(0, 2, n).astype(float)
    frame["label_purchase"] = frame["label_click"] * rng.integers(0, 2, n)
    return spec, frame_to_tensors(frame, spec)


def test_per_head_teacher_logits_and_online_objective(tiny):
    from recflow.registry import MODELS

    spec, batch = tiny
    torch.manual_seed(0)
    esmm = MODELS.create("esmm", spec, params={"embed_dim": 4, "hidden": [8]})
    student = MODELS.create("esmm", spec, params={"embed_dim": 2, "hidden": [4]})
    both = teacher_logits([esmm], batch, ["click", "purchase"])
    with torch.inference_mode():
        fresh = esmm.eval()(batch.inputs).numpy()
    np.testing.assert_allclose(both, fresh, atol=1e-6)
    # an ensemble averages member logits
    other = MODELS.create("lr", spec, params={})
    np.testing.assert_allclose(teacher_logits([esmm, other], batch, ["click"])[:, 0],
                               (fresh[:, 0] + teacher_logits([other], batch, ["click"])[:, 0]) / 2,
                               atol=1e-6)
    terms = objective_from_config([{"name": "kd_bce", "params": {"alpha": 1.0}}])
    objective = DistillationObjective(student, terms, ["click", "purchase"])
    labels = dict(batch.labels)
    labels[TEACHER_PREFIX + "click"] = torch.from_numpy(both[:, 0])
    labels[TEACHER_PREFIX + "purchase"] = torch.from_numpy(both[:, 1])
    z = objective(batch.inputs)
    expected = soft_bce(z, torch.from_numpy(both), 1.0)  # one term per head, averaged
    assert objective.loss(z, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    # online: the teacher trains on its own loss; the student sees its logits detached
    online = DistillationObjective(student, terms, ["click"], teachers=[esmm]).train()
    z = online(batch.inputs)
    loss = online.loss(z, batch.labels)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in esmm.named_parameters() if p.grad is not None}
    assert grads and all(p.grad is not None for p in student.parameters() if p.numel() > 0
                         and p is not student.embedding.numeric)
    esmm.zero_grad()
    esmm.loss(esmm(batch.inputs), batch.labels).backward()  # teacher's own loss only
    for n, p in esmm.named_parameters():  # the distillation term sent the teacher nothing
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n])
    assert set(online.input_names) == {"user_id", "item_id", "category"}
