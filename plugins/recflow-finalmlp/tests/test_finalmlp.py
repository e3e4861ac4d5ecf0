"""FinalMLP plugin: discovered through its entry point, trains, fuses, exports with parity."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from recflow_finalmlp import FinalMLP, MultiHeadBilinearFusion

from recflow.features import FeatureSpec, FieldSpec
from recflow.registry import MODELS, RegistryError

B, L, N_ITEMS = 64, 5, 30
SMALL = {"embed_dim": 4, "stream1_hidden": [16, 8], "stream2_hidden": [16], "gate_hidden": [8]}


def _field(name: str, kind: str, vocab: int | None = None, **params) -> FieldSpec:
    transform = {"categorical": "vocab", "numeric": "standardize", "sequence": "sequence"}[kind]
    return FieldSpec(name=name, kind=kind, transform=transform, params=params,
                     columns=[] if kind == "sequence" else [name], vocab_size=vocab)


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return FeatureSpec(
        fields=[
            _field("user_id", "categorical", 12),
            _field("item_id", "categorical", N_ITEMS),
            _field("price", "numeric"),
            _field("hist_item_id", "sequence", N_ITEMS, of="item_id", length=L),
        ],
        labels=["click"],
    )


def make_batch(seed: int = 0, n: int = B) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    item = torch.randint(1, N_ITEMS, (n,), generator=g)
    inputs = {
        "user_id": torch.randint(1, 12, (n,), generator=g),
        "item_id": item,
        "price": torch.randn(n, generator=g),
        "hist_item_id": torch.randint(0, N_ITEMS, (n, L), generator=g),
    }
    return inputs, (item % 2 == 0).float()


def build(spec: FeatureSpec, **params) -> FinalMLP:
    torch.manual_seed(0)
    return MODELS.create("finalmlp", spec, params={**SMALL, **params})


def test_found_through_its_entry_point() -> None:
    component = MODELS.get("finalmlp")
    assert component.target is FinalMLP
    assert component.source == "recflow-finalmlp"
    assert component.params is FinalMLP.params_schema


@pytest.mark.parametrize("params", [
    {},
    {"feature_selection": False},
    {"stream1_context": ["user_id"], "stream2_context": ["item_id", "hist_item_id"]},
    {"fusion_heads": 4, "norm": "batch", "dropout": 0.1},
])
def test_learns_the_planted_signal(spec: FeatureSpec, params: dict) -> None:
    model = build(spec, **params).train()
    inputs, click = make_batch()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(30):
        loss = model.loss(model(inputs), {"click": click})
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert model(inputs).shape == (B, 1)
    assert losses[-1] < 0.7 * losses[0], losses


def test_gates_depend_on_their_context(spec: FeatureSpec) -> None:
    model = build(spec, stream1_context=["user_id"]).eval()
    inputs, _ = make_batch()
    gate = model.gates[0](model.embedding, inputs)
    assert gate.shape == (B, 4 * 4) and ((gate > 0) & (gate < 2)).all()
    other = model.gates[0](model.embedding, {**inputs, "user_id": inputs["user_id"].flip(0)})
    assert not torch.allclose(gate, other)
    assert model.gates[1](model.embedding, inputs).shape == (1, 16)  # learned vector


def test_fusion_is_the_multi_head_bilinear_form() -> None:
    torch.manual_seed(0)
    fusion = MultiHeadBilinearFusion(6, 4, heads=2)
    x, y = torch.randn(5, 6), torch.randn(5, 4)
    want = fusion.w_x(x) + fusion.w_y(y)
    for h in range(2):
        xh, yh = x[:, 3 * h:3 * h + 3], y[:, 2 * h:2 * h + 2]
        want = want + ((xh @ fusion.w_xy[h]) * yh).sum(dim=1, keepdim=True)
    torch.testing.assert_close(fusion(x, y), want)


def test_bad_params_name_the_key(spec: FeatureSpec) -> None:
    with pytest.raises(RegistryError, match="fusion_heads"):
        build(spec, fusion_heads=3)
    with pytest.raises(RegistryError, match="stream_hidden"):
        build(spec, stream_hidden=[8])
    with pytest.raises(ValueError, match="nope"):
        build(spec, stream1_context=["nope"])
    with pytest.raises(RegistryError, match="feature_selection"):
        build(spec, feature_selection=False, stream1_context=["user_id"])


def test_reads_only_its_fields(spec: FeatureSpec) -> None:
    model = build(spec, fields=["item_id", "price"]).eval()
    assert model.input_names == ["item_id", "price"]
    inputs, _ = make_batch()
    assert model({"item_id": inputs["item_id"], "price": inputs["price"]}).shape == (B, 1)


class _Positional(torch.nn.Module):
    def __init__(self, model: FinalMLP) -> None:
        super().__init__()
        self.model = model

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.model.input_names, tensors, strict=True))
        return self.model.predict(self.model(named))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_matches_torch(spec: FeatureSpec) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = build(spec, stream1_context=["user_id"], fusion_heads=2, norm="batch")
    with torch.no_grad():
        model.train()(make_batch(seed=3)[0])  # move BatchNorm statistics off their init
    wrapper = _Positional(model).eval()
    names = model.input_names
    traced, _ = make_batch(seed=1, n=8)
    buffer = io.BytesIO()
    torch.onnx.export(wrapper, tuple(traced[n] for n in names), buffer, dynamo=False,
                      opset_version=17, input_names=names, output_names=["scores"],
                      dynamic_axes={n: {0: "batch"} for n in [*names, "scores"]})
    inputs, _ = make_batch(seed=2)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {n: inputs[n].numpy() for n in names})
    with torch.no_grad():
        want = model.predict(model(inputs)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
