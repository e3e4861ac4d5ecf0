"""Tests for the ranking model zoo: every registered model, on a tiny hand-built spec.

Parametrised over `MODELS.list()`, so a newly registered model is covered by the
contract checks (shapes, learning, probabilities, ONNX parity, params) for free.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from recflow.features import FeatureSpec
from recflow.models.layers import DotInteraction, FieldEmbedding, FMInteraction
from recflow.registry import MODELS, RegistryError
from tests.helpers import tiny_spec

B, L, N_ITEMS = 64, 6, 30
SMALL = {"embed_dim": 4}  # keeps every model tiny and fast
ALL_MODELS = MODELS.list()


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return tiny_spec(12, N_ITEMS, 5, L)


def make_batch(seed: int = 0, n: int = B) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Inputs plus labels with a learnable signal: even items get clicked, pricey ones bought."""
    g = torch.Generator().manual_seed(seed)
    item = torch.randint(2, N_ITEMS, (n,), generator=g)
    hist = torch.randint(2, N_ITEMS, (n, L), generator=g)
    hist = hist * (torch.arange(L) >= torch.randint(0, L, (n, 1), generator=g))  # left padding
    inputs = {
        "user_id": torch.randint(1, 12, (n,), generator=g),
        "item_id": item,
        "category": torch.randint(0, 5, (n,), generator=g),  # 0 = missing
        "price": torch.randn(n, generator=g),
        "hist_item_id": hist,
    }
    click = (item % 2 == 0).float()
    labels = {"click": click, "purchase": click * (inputs["price"] > 0).float()}
    return inputs, labels


def build(name: str, spec: FeatureSpec, **params) -> nn.Module:
    torch.manual_seed(0)
    return MODELS.create(name, spec, params={**SMALL, **params} if name != "lr" else params)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_shape_and_predict_range(name: str, spec: FeatureSpec) -> None:
    model = build(name, spec).eval()
    inputs, _ = make_batch()
    logits = model(inputs)
    assert logits.shape == (B, len(model.tasks))
    probs = model.predict(logits)
    assert probs.shape == (B, len(model.score_names))
    assert model.score_names[0] == "ctr"
    assert torch.isfinite(logits).all() and ((probs >= 0) & (probs <= 1)).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_a_few_adam_steps_reduce_the_loss(name: str, spec: FeatureSpec) -> None:
    model = build(name, spec).train()
    inputs, labels = make_batch()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(25):
        loss = model.loss(model(inputs), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("name", ALL_MODELS)
def test_subset_of_fields_reads_only_those(name: str, spec: FeatureSpec) -> None:
    fields = ["item_id", "price", "hist_item_id"]
    model = build(name, spec, fields=fields).eval()
    assert model.input_names == fields
    inputs, _ = make_batch()
    assert model({k: inputs[k] for k in fields}).shape == (B, len(model.tasks))


class _Positional(nn.Module):
    """Positional tensors in `input_names` order -> predict(forward(...)), as served."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model.predict(self.model(dict(zip(self.model.input_names, tensors,
                                                      strict=True))))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter, on purpose
@pytest.mark.parametrize("name", ALL_MODELS)
def test_onnx_export_matches_torch(name: str, spec: FeatureSpec) -> None:
    model = build(name, spec)
    with torch.no_grad():
        model.train()(make_batch(seed=3)[0])  # move any BatchNorm stats off their init
    wrapper = _Positional(model).eval()  # export restores the wrapper's mode on the way out
    names = model.input_names
    export_inputs, _ = make_batch(seed=1, n=8)
    buffer = io.BytesIO()
    torch.onnx.export(
        wrapper, tuple(export_inputs[n] for n in names), buffer, dynamo=False,
        opset_version=17, input_names=names, output_names=["scores"],
        dynamic_axes={n: {0: "batch"} for n in [*names, "scores"]},
    )
    inputs, _ = make_batch(seed=2)  # a different batch size than the traced one
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {n: inputs[n].numpy() for n in names})
    with torch.no_grad():
        want = model.predict(model(inputs)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_bad_params_raise_registry_error_naming_the_key(name: str, spec: FeatureSpec) -> None:
    with pytest.raises(RegistryError, match="embedding_dim"):
        MODELS.create(name, spec, params={"embedding_dim": 8})
    with pytest.raises(RegistryError, match="fields"):
        MODELS.create(name, spec, params={"fields": 3})


def test_bad_constraint_values_are_rejected(spec: FeatureSpec) -> None:
    with pytest.raises(RegistryError, match="embed_dim"):
        MODELS.create("deepfm", spec, params={"embed_dim": 0})
    with pytest.raises(RegistryError, match="structure"):
        MODELS.create("dcnv2", spec, params={"structure": "sideways"})
    with pytest.raises(RegistryError, match="num_experts"):
        MODELS.create("dcnv2", spec, params={"num_experts": 4})
    with pytest.raises(ValueError, match="nope"):
        MODELS.create("fm", spec, params={"fields": ["item_id", "nope"]})


def test_din_attends_to_the_sequence_unless_switched_off(spec: FeatureSpec) -> None:
    inputs, _ = make_batch()
    changed = {**inputs, "hist_item_id": inputs["hist_item_id"].flip(0)}
    with torch.no_grad():
        din = build("din", spec).eval()
        assert not torch.allclose(din(inputs), din(changed))
        ablated = build("din", spec, use_sequence=False).eval()
        assert "hist_item_id" not in ablated.input_names
        torch.testing.assert_close(ablated(inputs), ablated(changed))


def test_din_ignores_padding_positions(spec: FeatureSpec) -> None:
    inputs, _ = make_batch()
    padded = {**inputs, "hist_item_id": torch.cat(
        [torch.zeros(B, 3, dtype=torch.long), inputs["hist_item_id"]], dim=1)}
    with torch.no_grad():
        din = build("din", spec).eval()
        torch.testing.assert_close(din(inputs), din(padded))


def test_esmm_ctcvr_below_ctr_and_loss_is_stable(spec: FeatureSpec) -> None:
    model = build("esmm", spec).eval()
    inputs, labels = make_batch()
    with torch.no_grad():
        probs = model.predict(model(inputs))
    assert model.score_names == ["ctr", "ctcvr"]
    assert (probs[:, 1] <= probs[:, 0]).all()

    logits = torch.randn(B, 2) * 3
    p_ctr, p_ctcvr = torch.sigmoid(logits[:, 0]), torch.sigmoid(logits).prod(dim=1)
    bce = nn.functional.binary_cross_entropy
    naive = bce(p_ctr, labels["click"]) + bce(p_ctcvr, labels["purchase"])
    torch.testing.assert_close(model.loss(logits, labels), naive)
    extreme = torch.tensor([[200.0, 200.0], [-200.0, -200.0], [200.0, -200.0]],
                           requires_grad=True)
    ones, zeros = torch.ones(3), torch.zeros(3)
    loss = model.loss(extreme, {"click": zeros, "purchase": ones})  # purchase needs a click
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(extreme.grad).all()


@pytest.mark.parametrize(("structure", "low_rank"),
                         list(itertools.product(["stacked", "parallel"], [None, 2])))
def test_dcnv2_variants_run(structure: str, low_rank: int | None, spec: FeatureSpec) -> None:
    params = {"structure": structure, "low_rank": low_rank, "cross_layers": 2,
              "num_experts": 3 if low_rank else 1, "hidden": [8]}
    model = build("dcnv2", spec, **params)
    inputs, labels = make_batch()
    model.loss(model(inputs), labels).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_field_embedding_shares_and_pools(spec: FeatureSpec) -> None:
    emb = FieldEmbedding(spec, 3)
    inputs, _ = make_batch()
    out = emb(inputs)
    assert out.shape == (B, 5, 3) and len(emb.vocab_sizes) == 3  # history reuses item's
    hist = inputs["hist_item_id"][0]
    expected = emb.lookup("item_id", hist[hist != 0]).mean(dim=0)
    torch.testing.assert_close(out[0, 4], expected)
    torch.testing.assert_close(out[:, 3], inputs["price"][:, None] * emb.numeric[0])


def test_interactions_match_explicit_pairwise_dots() -> None:
    e = torch.randn(4, 5, 3)
    pairs = torch.stack([(e[:, i] * e[:, j]).sum(-1) for i, j in
                         itertools.combinations(range(5), 2)], dim=1)
    torch.testing.assert_close(DotInteraction(5)(e), pairs)
    torch.testing.assert_close(FMInteraction()(e), pairs.sum(1, keepdim=True))


@pytest.mark.parametrize("name", ["deepfm", "dcnv2", "lr"])
def test_exclude_fields_drops_fields_after_the_selection(spec: FeatureSpec, name: str) -> None:
    dropped = spec.names[0]
    model = MODELS.create(name, spec, params={"exclude_fields": [dropped]})
    assert model.input_names == [n for n in spec.names if n != dropped]
    subset = MODELS.create(name, spec, params={"fields": spec.names[:3],
                                               "exclude_fields": [spec.names[1]]})
    assert subset.input_names == [spec.names[0], spec.names[2]]
    with pytest.raises(ValueError, match=r"exclude_fields: unknown field\(s\) \['nope'\]"):
        MODELS.create(name, spec, params={"exclude_fields": ["nope"]})
