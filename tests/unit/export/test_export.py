"""ONNX export: every registered model through the one export path, parity, metadata, datasets.

Parametrised over `MODELS.list()`, so a newly registered model (built-in or
plugin) is exported, checked and compared with torch without touching this file.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from kedro.io import DatasetError

from recflow.datasets.onnx_model import OnnxModelDataset, ServingBundleDataset
from recflow.export.checks import ParityError, latency_table, parity, torch_scores
from recflow.export.onnx_export import example_inputs, export_onnx, read_metadata
from recflow.export.params import ExportParams
from recflow.export.runtime import optimize_graph, quantize_int8, run, session
from recflow.features import FeatureSpec
from recflow.models.payload import to_payload
from recflow.pipelines.export import create_pipeline, nodes, pipeline_kwargs
from recflow.registry import MODELS
from recflow.serving.schema import OUTPUT_NAME, feeds_from_frame, input_schema
from tests.helpers import tiny_spec

ALL_MODELS = MODELS.list()
L, N_ITEMS = 5, 40


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return tiny_spec(15, N_ITEMS, 6, L)


def build(name: str, spec: FeatureSpec) -> torch.nn.Module:
    """A small model with BatchNorm statistics moved off their init, left in train mode."""
    torch.manual_seed(0)
    model = MODELS.create(name, spec, params={} if name == "lr" else {"embed_dim": 4})
    with torch.no_grad():  # bigger weights than the init, so scores spread over (0, 1)
        for p in model.parameters():
            p.mul_(3.0)
        model.train()(example_inputs(input_schema(spec, spec.names), batch=64, seed=9))
    return model


def processed_frame(spec: FeatureSpec, n: int, seed: int = 1) -> pd.DataFrame:
    """Model-ready columns (as preprocessing writes them) plus labels."""
    inputs = example_inputs(input_schema(spec, spec.names), batch=n, seed=seed)
    cols: dict[str, np.ndarray] = {}
    for f in spec.fields:
        values = inputs[f.name].numpy()
        if f.kind == "sequence":
            cols.update({c: values[:, i] for i, c in enumerate(f.output_columns())})
        else:
            cols[f.name] = values
    rng = np.random.default_rng(seed)
    cols["key_user"] = cols["user_id"]
    cols["label_click"] = rng.integers(0, 2, n)
    cols["label_purchase"] = cols["label_click"] * rng.integers(0, 2, n)
    return pd.DataFrame(cols)


# ---- every registered model --------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_registered_model_exports_with_parity(name: str, spec: FeatureSpec) -> None:
    model = build(name, spec)  # in train mode: the exporter must switch it (and its wrapper) off
    proto = export_onnx(model, spec, name=f"my_{name}", opset=17, metadata={"test_metrics":
                                                                             {"auc": 0.7}})
    assert not model.training
    onnx.checker.check_model(proto, full_check=True)

    meta = read_metadata(proto)
    assert meta["model_name"] == f"my_{name}" and meta["registered_model"] == name
    assert meta["feature_spec_hash"] == spec.hash and meta["opset"] == 17
    assert meta["recflow_version"] and meta["test_metrics"] == {"auc": 0.7}
    assert [e["name"] for e in meta["input_schema"]] == model.input_names
    assert meta["score_names"] == model.score_names
    assert [i.name for i in proto.graph.input] == model.input_names  # exactly what it reads
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]

    feeds = feeds_from_frame(processed_frame(spec, 300), meta["input_schema"])
    expected = torch_scores(model, feeds)
    assert expected.shape == (300, len(model.score_names)) and expected.std() > 1e-3
    # chunks of 128 leave a last batch of 44 rows: the batch axis is really dynamic
    for graph in (proto, optimize_graph(proto, "basic"), optimize_graph(proto, "extended")):
        result = parity(model, session(graph, threads=1), feeds, tolerance=1e-5, name=name,
                        batch_size=128)
        assert result["max_abs_diff"] <= 1e-5 and result["rows"] == 300
    (one,) = session(proto).run(None, {k: v[:1] for k, v in feeds.items()})
    np.testing.assert_allclose(one, expected[:1], atol=1e-5, rtol=0)

    int8 = quantize_int8(proto)
    assert read_metadata(int8)["model_name"] == f"my_{name}"
    got = run(session(int8), feeds)
    assert got.shape == expected.shape and np.isfinite(got).all()
    assert np.abs(got - expected).max() < 0.1  # int8 approximates; the AUC cost is reported


def test_parity_failure_names_the_model_and_tolerance(spec: FeatureSpec) -> None:
    model = build("deepfm", spec).eval()
    proto = export_onnx(model, spec, name="deepfm")
    with torch.no_grad():
        next(model.parameters()).add_(0.5)  # torch now disagrees with the exported graph
    feeds = feeds_from_frame(processed_frame(spec, 50), input_schema(spec, model.input_names))
    with pytest.raises(ParityError, match=r"model 'deepfm'.*parity_tolerance 1e-05.*50 test rows"):
        parity(model, session(proto), feeds, tolerance=1e-5, name="deepfm")


def test_latency_table_has_every_variant_and_batch(spec: FeatureSpec) -> None:
    model = build("fm", spec).eval()
    proto = export_onnx(model, spec, name="fm")
    feeds = feeds_from_frame(processed_frame(spec, 10), input_schema(spec, model.input_names))
    table = latency_table(model, {"ort_fp32": session(proto, threads=1)}, feeds, [1, 16],
                          repeats=3, warmup=1, threads=1)
    assert set(table) == {"torch", "ort_fp32"}
    for variant in table.values():
        assert set(variant) == {"1", "16"}
        assert all(0 < s["p50_ms"] <= s["p99_ms"] for s in variant.values())


# ---- the node, the report, the pipeline --------------------------------------------------
FAST = {"latency": {"batches": [1, 8], "repeats": 3, "warmup": 1}}


@pytest.fixture(scope="module")
def payload(spec: FeatureSpec) -> dict:
    model = build("din", spec).eval()
    params = MODELS.get("din").validate_params({"embed_dim": 4})
    return to_payload(model, "din", params, spec, extra={"name": "my_din"})


def test_export_node_outputs_and_contract_keys(payload: dict, spec: FeatureSpec, tmp_path) -> None:
    params = ExportParams.model_validate(FAST)
    test = processed_frame(spec, 200)
    fp32, int8, bundle, summary = nodes.export_model_int8(
        payload, spec.to_dict(), test, {"auc": 0.61, "params": 10, "curve": [1, 2]}, params)
    assert read_metadata(fp32)["test_metrics"] == {"auc": 0.61, "params": 10}
    assert read_metadata(int8)["precision"] == "int8"
    assert summary["max_abs_diff"] <= 1e-5 and summary["rows"] == 200
    assert summary["quantized_auc_delta"] is not None
    assert summary["p50_ms_b8_int8"] > 0 and set(summary["latency"]) == {
        "torch", "ort_fp32", "ort_int8"}

    report = nodes.report_export(summary__my_din=summary)
    assert set(nodes.CONTRACT_KEYS) <= set(report["models"]["my_din"])
    assert json.loads(json.dumps(report))  # JSON-serialisable as is
    assert {r["variant"] for r in report["latency_table"]} == {"torch", "ort_fp32", "ort_int8"}

    ServingBundleDataset(str(tmp_path / "bundle")).save(bundle)
    loaded = ServingBundleDataset(str(tmp_path / "bundle")).load()
    assert loaded["manifest"]["name"] == "my_din" and loaded["model_int8"] is not None
    assert loaded["manifest"]["raw_schema"]["hist_item_id"] == "sequence"
    assert loaded["manifest"]["raw_schema"]["price"] == "numeric"


def test_export_node_without_quantisation(payload: dict, spec: FeatureSpec) -> None:
    params = ExportParams.model_validate({**FAST, "quantize": False})
    fp32, bundle, summary = nodes.export_model(payload, spec.to_dict(), processed_frame(spec, 50), {},
                                               params)
    assert summary["quantized_auc_delta"] is None and bundle["model_int8"] is None
    assert "ort_int8" not in summary["latency"]
    with pytest.raises(ValueError, match="export.quantize.*parameters_export.yml"):
        nodes.export_model_int8(payload, spec.to_dict(), processed_frame(spec, 50), {}, params)


def test_export_node_refuses_a_payload_from_another_spec(payload: dict, spec: FeatureSpec) -> None:
    other = FeatureSpec.from_dict(spec.to_dict())
    other.fields[0].vocab_size = 99
    with pytest.raises(ValueError, match="feature spec"):
        nodes.export_model_int8(payload, other.to_dict(), processed_frame(spec, 20), {},
                                ExportParams.model_validate(FAST))


def test_pipeline_shape_follows_models_and_quantize() -> None:
    both = create_pipeline(model_names=["lr", "din"])
    assert {"export.lr.onnx", "export.lr.onnx_int8", "export.din.serving_bundle",
            "export_report"} <= both.all_outputs()
    assert {"ranking.lr.model", "ranking.lr.metrics", "model_input_test", "feature_spec",
            "params:export"} <= both.inputs()
    assert "export.lr.onnx_int8" not in create_pipeline(model_names=["lr"], quantize=False).all_outputs()
    assert not create_pipeline(model_names=[]).nodes


def test_pipeline_kwargs_default_to_the_ranking_entries() -> None:
    params = {"ranking": {"models": {"lr": {}, "din": {}}}, "export": {"quantize": False}}
    assert pipeline_kwargs(params) == {"model_names": ["lr", "din"], "quantize": False}
    params["export"]["models"] = ["din"]
    assert pipeline_kwargs(params)["model_names"] == ["din"]
    with pytest.raises(ValueError, match=r"parameters_export.yml: export.opsett"):
        pipeline_kwargs({"export": {"opsett": 17}})
    with pytest.raises(ValueError, match=r"export.graph_optimization"):
        pipeline_kwargs({"export": {"graph_optimization": "max"}})


# ---- datasets ----------------------------------------------------------------------------
def test_onnx_model_dataset_round_trip_is_atomic(spec: FeatureSpec, tmp_path) -> None:
    proto = export_onnx(build("lr", spec).eval(), spec, name="lr")
    path = tmp_path / "onnx" / "lr.onnx"
    dataset = OnnxModelDataset(str(path))
    assert not dataset.exists()
    dataset.save(proto)
    assert dataset.exists() and sorted(p.name for p in path.parent.iterdir()) == ["lr.onnx"]
    assert read_metadata(dataset.load()) == read_metadata(proto)
    with pytest.raises(DatasetError, match="ModelProto"):
        dataset.save(b"not a model")
    assert read_metadata(dataset.load())["model_name"] == "lr"  # the old file is intact
    with pytest.raises(DatasetError, match="--pipelines=export"):
        OnnxModelDataset(str(tmp_path / "missing.onnx")).load()


def test_bundle_dataset_detects_tampering(spec: FeatureSpec, tmp_path) -> None:
    proto = export_onnx(build("lr", spec).eval(), spec, name="lr")
    dataset = ServingBundleDataset(str(tmp_path / "lr"))
    dataset.save({"model": proto, "feature_spec": spec.to_dict(), "manifest": {"name": "lr"}})
    dataset.save({"model": proto, "feature_spec": spec.to_dict(), "manifest": {"name": "lr2"}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr"]  # no staging leftovers
    assert dataset.load()["manifest"]["name"] == "lr2"
    (tmp_path / "lr" / "feature_spec.json").write_text("{}")
    with pytest.raises(DatasetError, match="SHA-256 does not match"):
        dataset.load()
