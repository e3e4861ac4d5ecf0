"""The ranking training hot path computes what the straightforward version computes.

One shared embedding table against one `nn.Embedding(padding_idx=0)` per vocabulary (the
layout before), the fused cross layer against its formula, the fused Adam against the
per-parameter loop, and the trainer's batch timing in the history.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recflow.features import FeatureSpec
from recflow.models.layers import MLP, CrossNetV2, FieldEmbedding
from recflow.training.core import build_optimizer
from tests.helpers import tiny_spec
from tests.unit.models.test_models import B, make_batch


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return tiny_spec(12, 30, 5, 6)


def per_vocabulary_tables(spec: FeatureSpec, dim: int, seed: int) -> nn.ModuleList:
    """The old layout, drawn the old way: one small-normal table per vocabulary."""
    torch.manual_seed(seed)
    owners = ["user_id", "item_id", "category"]  # spec order; hist_item_id shares item_id's
    tables = nn.ModuleList()
    for owner in owners:
        table = nn.Embedding(int(spec[owner].vocab_size), dim, padding_idx=0)
        nn.init.normal_(table.weight, std=0.01)
        with torch.no_grad():
            table.weight[0].zero_()
        tables.append(table)
    return tables


def reference_forward(tables: nn.ModuleList, numeric: torch.Tensor,
                      inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """One lookup per field, stacked in spec order (the straightforward version)."""
    hist = tables[1](inputs["hist_item_id"])
    count = (inputs["hist_item_id"] != 0).sum(1, keepdim=True).clamp(min=1)
    return torch.stack([tables[0](inputs["user_id"]), tables[1](inputs["item_id"]),
                        tables[2](inputs["category"]), inputs["price"][:, None] * numeric[0],
                        hist.sum(1) / count], dim=1)


def test_shared_table_draws_the_per_vocabulary_weights(spec: FeatureSpec) -> None:
    """A seed gives the weights the one-table-per-vocabulary layout gave (and the same
    numeric weights after them), so seeded results carry over."""
    tables = per_vocabulary_tables(spec, 4, seed=7)
    numeric = torch.randn(1, 4) * 0.01
    torch.manual_seed(7)
    emb = FieldEmbedding(spec, 4)
    rows = torch.cat([torch.zeros(1, 4), *(t.weight[1:] for t in tables)])
    assert torch.equal(emb.table.weight.detach(), rows)
    assert torch.equal(emb.numeric.detach(), numeric)


def test_shared_table_matches_per_vocabulary_tables(spec: FeatureSpec) -> None:
    """Same weights -> identical outputs, and identical gradients row for row."""
    tables = per_vocabulary_tables(spec, 4, seed=3)
    emb = FieldEmbedding(spec, 4)
    emb.load_state_dict({**{f"tables.{i}.weight": t.weight.detach() for i, t in
                            enumerate(tables)}, "numeric": emb.numeric.detach()})
    inputs, _ = make_batch(seed=5)
    out = emb(inputs)
    want = reference_forward(tables, emb.numeric, inputs)
    assert torch.equal(out, want)
    with torch.no_grad():  # the eval / export path: the plain embedding op, same numbers
        assert torch.equal(emb.eval()(inputs), out)
    emb.train()
    upstream = torch.randn_like(out)
    out.backward(upstream)
    want.backward(upstream)
    grads = torch.cat([torch.zeros(1, 4), *(t.weight.grad[1:] for t in tables)])
    torch.testing.assert_close(emb.table.weight.grad, grads, rtol=0, atol=1e-7)
    assert all(torch.equal(t.weight.grad[0], torch.zeros(4)) for t in tables)
    assert torch.equal(emb.table.weight.grad[0], torch.zeros(4))  # missing ids learn nothing


def test_interleaved_kinds_keep_spec_order(spec: FeatureSpec) -> None:
    """Numeric between categoricals: the stacked output still follows the spec."""
    emb = FieldEmbedding(spec, 3, fields=["price", "user_id", "category"])
    inputs, _ = make_batch(seed=2)
    out = emb(inputs)
    names = emb.fields
    for i, name in enumerate(names):
        torch.testing.assert_close(out[:, i], emb.embed(inputs, name), rtol=0, atol=0)


def test_cross_layer_is_its_formula() -> None:
    torch.manual_seed(0)
    cross = CrossNetV2(6, 3)
    for b in cross.bias:
        nn.init.normal_(b)
    x0 = torch.randn(B, 6)
    x = x0
    for w, b in zip(cross.weight, cross.bias, strict=True):
        x = x0 * (x @ w.weight.t() + b) + x
    torch.testing.assert_close(cross(x0), x, rtol=1e-6, atol=1e-6)


def test_mlp_in_place_relu_keeps_gradients() -> None:
    """ReLU in place overwrites only what backward does not read (the Linear output)."""
    torch.manual_seed(0)
    mlp = MLP(5, [7, 7], out_dim=1)
    x = torch.randn(B, 5, requires_grad=True)
    reference = nn.Sequential(*[nn.ReLU() if isinstance(m, nn.ReLU) else m
                                for m in mlp.layers])
    mlp(x).sum().backward()
    got = x.grad.clone()
    x.grad = None
    reference(x).sum().backward()
    torch.testing.assert_close(got, x.grad, rtol=0, atol=0)


def test_fused_adam_takes_the_per_parameter_loop_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 4), nn.Flatten(), nn.Linear(8, 1))
    twin = nn.Sequential(nn.Embedding(20, 4), nn.Flatten(), nn.Linear(8, 1))
    twin.load_state_dict(model.state_dict())
    fused = build_optimizer(model, lr=0.01, embedding_lr=0.02, weight_decay=0.1)
    assert all(g["fused"] for g in fused.param_groups)
    plain = torch.optim.Adam([{"params": [twin[0].weight], "lr": 0.02, "weight_decay": 0.1},
                              {"params": list(twin[2].parameters()), "lr": 0.01,
                               "weight_decay": 0.1}], foreach=False)
    ids = torch.randint(0, 20, (16, 2))
    for _ in range(5):
        for net, opt in ((model, fused), (twin, plain)):
            opt.zero_grad()
            net(ids).pow(2).mean().backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
