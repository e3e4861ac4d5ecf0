"""MLCC / MC-MLCC: shapes, the docstring example, parameter and FLOP counts, that its
compressed crosses learn an interaction logistic regression cannot, and ONNX parity for the
multi-channel, three-level variant (the default one is in the zoo-wide tests)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from recflow.export.checks import parity
from recflow.export.onnx_export import example_inputs, export_onnx
from recflow.export.runtime import session
from recflow.features import FeatureSpec
from recflow.metrics.ranking import auc
from recflow.models.layers import CompressionCross
from recflow.models.ranking import mlcc as mlcc_module
from recflow.registry import MODELS, RegistryError
from recflow.serving.schema import input_schema
from tests.helpers import field, tiny_spec

MC = {"embed_dim": 8, "channels": 2, "heads": 3, "cross_dims": [3, 2, 1], "out_dim": 4,
      "hidden": [16, 8]}


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return tiny_spec(12, 30, 5, 6)


def build(spec: FeatureSpec, **params: object) -> nn.Module:
    torch.manual_seed(0)
    return MODELS.create("mlcc", spec, params=params)


def test_docstring_example_runs() -> None:
    assert doctest.testmod(mlcc_module).failed == 0


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_block_and_model_shapes(spec: FeatureSpec, channels: int) -> None:
    block = CompressionCross(num_fields=5, dim=8, channels=channels, heads=3, cross_dims=[3, 2],
                             out_dim=4)
    assert block(torch.randn(7, 5, 8)).shape == (7, 5, 4)
    model = build(spec, **{**MC, "channels": channels}).eval()
    inputs = example_inputs(input_schema(spec, model.input_names), batch=7, seed=0)
    assert model(inputs).shape == (7, 1)


def test_parameter_count_formula(spec: FeatureSpec) -> None:
    model = build(spec, **MC)
    d, c, h, dims, out, hidden = (MC[k] for k in ("embed_dim", "channels", "heads",
                                                  "cross_dims", "out_dim", "hidden"))
    m = 5  # user, item, category, price, pooled history
    width = d // c
    sizes = [width, *dims]
    per_head = sum(i * o for i, o in zip(sizes, sizes[1:], strict=False))
    table = 1 + (12 - 1) + (30 - 1) + (5 - 1)  # shared padding row + each vocabulary's rows
    g = m // 2
    widths = [m * out, *hidden, 1]
    expected = ((table + 1) * d                          # categorical rows + price's vector
                + c * (m * width) * (h * per_head)       # global compressors
                + m * (c * h * sum(dims) + d) * out      # per-field local compressors
                + (m * g + g) + (g * m + m)              # field gate
                + sum(i * o + o for i, o in zip(widths, widths[1:], strict=False)))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_matmul_flops_match_torchs_flop_counter(spec: FeatureSpec) -> None:
    """Linear layers' 2·in·out plus `matmul_flops` (what `benchmarks/ctr_profile.py`
    counts) is every matmul FLOP torch's counter sees in a forward, plus the crossing
    levels after the first, which run as a broadcast product-sum the counter does not see."""
    model = build(spec, **MC).eval()
    batch, fields = 32, 5
    inputs = example_inputs(input_schema(spec, model.input_names), batch=batch, seed=0)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(inputs)
    linear = sum(2 * m.in_features * m.out_features for m in model.modules()
                 if isinstance(m, nn.Linear))
    dims = MC["cross_dims"]
    later = MC["channels"] * MC["heads"] * sum(2 * fields * i * o
                                                  for i, o in zip(dims, dims[1:], strict=False))
    assert counter.get_total_flops() == batch * (linear + model.cross.matmul_flops() - later)


def test_channels_must_divide_the_embedding(spec: FeatureSpec) -> None:
    with pytest.raises(RegistryError, match="channels"):
        MODELS.create("mlcc", spec, params={"embed_dim": 6, "channels": 4})
    with pytest.raises(RegistryError, match="cross_dims"):
        MODELS.create("mlcc", spec, params={"cross_dims": []})


def _parity_data(n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Click odds set by the parity of a + b only: no main effect for a linear model."""
    g = torch.Generator().manual_seed(seed)
    a, b, noise = (torch.randint(1, 9, (n,), generator=g) for _ in range(3))
    click = torch.bernoulli(torch.where((a + b) % 2 == 0, 0.85, 0.15), generator=g)
    return {"a": a, "b": b, "noise": noise, "x": torch.randn(n, generator=g)}, click


def _test_auc(name: str, spec: FeatureSpec, params: dict[str, object]) -> float:
    torch.manual_seed(0)
    model = MODELS.create(name, spec, params=params)
    (train, y), (test, y_test) = _parity_data(1024, 0), _parity_data(2048, 1)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        loss = model.loss(model(train), {"click": y})
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        scores = torch.sigmoid(model.eval()(test)[:, 0])
    return auc(y_test.numpy(), scores.numpy())


def test_compressed_crosses_learn_a_pairwise_cross_lr_cannot() -> None:
    """No hidden MLP and no gate: the logit is linear in [crosses, raw embeddings], so only
    the compression crosses (degree >= 2 in the embeddings) can express parity(a + b)."""
    spec = FeatureSpec(fields=[field("a", "categorical", 9), field("b", "categorical", 9),
                               field("noise", "categorical", 9), field("x", "numeric")],
                       labels=["click"])
    lr = _test_auc("lr", spec, {})
    crosses = _test_auc("mlcc", spec, {"embed_dim": 8, "hidden": [], "field_gate": False})
    assert lr < 0.56 and crosses > lr + 0.2, (lr, crosses)  # oracle AUC: 0.85


def test_multi_channel_variant_exports_with_parity(spec: FeatureSpec) -> None:
    model = build(spec, **MC)
    with torch.no_grad():  # bigger weights than the init, so the higher levels matter
        for p in model.parameters():
            p.mul_(3.0)
    proto = export_onnx(model, spec, name="mc_mlcc", opset=17)
    feeds = {k: v.numpy() for k, v in
             example_inputs(input_schema(spec, model.input_names), batch=300, seed=4).items()}
    result = parity(model, session(proto, threads=1), feeds, tolerance=1e-5, name="mc_mlcc",
                    batch_size=128)
    assert result["max_abs_diff"] <= 1e-5 and result["rows"] == 300
    assert np.isfinite(result["max_abs_diff"])
