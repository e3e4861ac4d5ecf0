"""The scorer's two routes, the training contract on requests, and bundle integrity.

Small requests go through compiled per-value lookups, large ones through the
vectorised `FeatureSpec.transform_frame`; both must give the same feeds bit for bit
on a whole test split. Requests that training would have refused are refused by name,
and a damaged bundle is refused naming the file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recflow.features.transforms import Vocabulary
from recflow.serving import RecordError, Scorer
from recflow.serving.bundle import BundleError
from recflow.serving.compiled import IdLookup


@pytest.fixture(scope="module")
def world(serving_world: dict[str, Any]) -> dict[str, Any]:
    return serving_world


def _routes(bundle: Path) -> tuple[Scorer, Scorer]:
    compiled, vectorised = Scorer.from_bundle(bundle), Scorer.from_bundle(bundle)
    compiled.compiled_max_batch, vectorised.compiled_max_batch = 10**9, 0
    return compiled, vectorised


# ---- the two routes ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["din", "small"])
def test_compiled_and_vectorised_routes_give_identical_feeds_on_the_whole_split(
        world: dict, name: str) -> None:
    entry = world["models"][name]
    compiled, vectorised = _routes(entry["bundle"])
    columns = list(compiled.raw_schema)
    for records in (world["records"][columns].to_dict("records"),
                    json.loads(world["records"][columns].to_json(orient="records"))):
        fast, slow = compiled.feeds(records), vectorised.feeds(records)
        assert fast.keys() == slow.keys()
        for key in fast:
            assert fast[key].dtype == slow[key].dtype and fast[key].shape == slow[key].shape
            np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)
        assert np.abs(compiled.score(records) - entry["offline"]).max() <= 1e-5
    # one record per request (cached per-value results), twice: misses, then hits
    for _ in range(2):
        singles = [compiled.feeds([r]) for r in records[:150]]
        for key in fast:
            np.testing.assert_array_equal(np.concatenate([f[key] for f in singles]),
                                          fast[key][:150], err_msg=key)


def test_small_requests_take_the_compiled_route_and_agree_record_by_record(world: dict) -> None:
    scorer = Scorer.from_bundle(world["models"]["din"]["bundle"])
    scorer.compiled_max_batch = 16
    records = world["records"][list(scorer.raw_schema)].head(40).to_dict("records")
    one_by_one = np.vstack([scorer.score([r]) for r in records])
    assert np.abs(one_by_one - scorer.score(records)).max() <= 1e-6  # 40 records: vectorised
    scores, stats = scorer.score_with_stats([{**records[0], "price": None,
                                             "item_id": "never-seen"}])
    assert stats["price"] == {"missing": 1} and stats["item_id"]["oov"] == 1
    assert np.isfinite(scores).all()


@pytest.mark.parametrize(("values", "probes"), [
    ([3, 7, 11], [3, 3.0, "3", "3.0", " 7", 3.5, "3.5", "abc", "1_1", 10**30, None,
                  float("nan"), "", 11]),
    (["3", "a", "7.5"], [3, 3.0, "3", 7.5, "7.5", "a", "A", 3.5, None, float("nan"), ""]),
])
def test_a_compiled_lookup_maps_every_value_kind_as_the_vocabulary_does(
        values: list, probes: list) -> None:
    vocab = Vocabulary().load_state({"values": values})
    lookup = IdLookup(values, list(range(2, 2 + len(values))))
    want = vocab.transform(pd.Series(probes, dtype=object))
    assert [lookup(v) for v in probes] == want.tolist()


# ---- the training contract on requests ------------------------------------------------------
@pytest.mark.parametrize("route", ["compiled", "vectorised"])
@pytest.mark.parametrize(("value", "message"), [
    (float("inf"), r"must be finite \(null means missing\), got inf"),
    (-float("inf"), "must be finite"),
    (10**400, r"holds an integer of 1329 bits, beyond the range of a float64"),
    (-2.5, r"must be > 0 \(the dataset declares `gt: 0`\), got -2.5"),
    (0, "must be > 0"),
])
def test_numbers_training_refused_are_refused_naming_field_and_rule(
        world: dict, route: str, value: Any, message: str) -> None:
    scorer = dict(zip(("compiled", "vectorised"), _routes(world["models"]["din"]["bundle"]),
                      strict=True))[route]
    good = world["records"].iloc[0].to_dict()
    with pytest.raises(RecordError, match=f"record 1: field 'price' {message}") as info:
        scorer.score([good, {**good, "price": value}])
    assert info.value.field == "price" and info.value.record == 1


def test_nan_means_missing_and_the_bounds_are_described(world: dict) -> None:
    scorer = Scorer.from_bundle(world["models"]["din"]["bundle"])
    good = world["records"].iloc[0].to_dict()
    _, stats = scorer.score_with_stats([{**good, "price": float("nan")}])
    assert stats["price"] == {"missing": 1}
    assert scorer.describe()["bounds"] == {"price": {"gt": 0.0}}


def test_ids_beyond_64_bits_are_refused_by_name(world: dict) -> None:
    scorer = Scorer.from_bundle(world["models"]["din"]["bundle"])
    good = world["records"].iloc[0].to_dict()
    with pytest.raises(RecordError, match="record 0: field 'item_id' holds the id"):
        scorer.score([{**good, "item_id": 2**64}])
    with pytest.raises(RecordError, match="field 'hist_item_id' holds the id"):
        scorer.score([{**good, "hist_item_id": [1, -(2**63) - 1]}])


# ---- bundle integrity ---------------------------------------------------------------------------
@pytest.fixture
def bundle(world: dict, tmp_path: Path) -> Path:
    copy = tmp_path / "din"
    shutil.copytree(world["models"]["din"]["bundle"], copy)
    return copy


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _write_manifest(bundle: Path, manifest: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_the_input_example_is_real_records_and_checks_out(bundle: Path, world: dict) -> None:
    example = json.loads((bundle / "input_example.json").read_text())
    assert 1 <= len(example) <= 5 and set(example[0]) >= set(Scorer.from_bundle(bundle).raw_schema)
    first = world["records"].iloc[0]
    assert example[0]["item_id"] == first["item_id"]  # the first test records, raw
    report = Scorer.from_bundle(bundle).check()
    assert report["verified"] and report["records"] == len(example)
    manifest = _manifest(bundle)
    manifest["input_example_scores"] = [[s[0] + 0.01] for s in manifest["input_example_scores"]]
    _write_manifest(bundle, manifest)
    with pytest.raises(ValueError, match="scores differ from the export's by up to 0.01"):
        Scorer.from_bundle(bundle).check()


def test_a_flipped_bit_is_refused_naming_the_file(bundle: Path) -> None:
    blob = bytearray((bundle / "model.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (bundle / "model.onnx").write_bytes(bytes(blob))
    with pytest.raises(BundleError, match=r"model\.onnx: SHA-256 does not match the manifest"):
        Scorer.from_bundle(bundle)


def test_a_bundle_without_checksums_is_refused_unless_allowed(bundle: Path) -> None:
    manifest = _manifest(bundle)
    del manifest["sha256"]
    _write_manifest(bundle, manifest)
    with pytest.raises(BundleError, match=r"manifest\.json: no SHA-256 checksum .*--allow-unverified"):
        Scorer.from_bundle(bundle)
    assert Scorer.from_bundle(bundle, allow_unverified=True).check()["verified"]


def test_a_truncated_model_is_named(bundle: Path) -> None:
    blob = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(BundleError, match=r"model\.onnx: SHA-256 does not match"):
        Scorer.from_bundle(bundle)
    manifest = _manifest(bundle)
    del manifest["sha256"]
    _write_manifest(bundle, manifest)
    with pytest.raises(ValueError, match=r"model\.onnx.*onnxruntime cannot load it"):
        Scorer.from_bundle(bundle, allow_unverified=True)


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", r"manifest\.json: not valid JSON"),
    ("[1, 2]", r"manifest\.json: format 'list' is not 'recflow-serving-bundle'"),
    (json.dumps({"format": "recflow-serving-bundle", "files": {}}),
     r"manifest\.json: `files` must name at least the model"),
])
def test_a_garbage_manifest_is_named(bundle: Path, text: str, message: str) -> None:
    (bundle / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match=message):
        Scorer.from_bundle(bundle)


def test_a_spec_from_another_model_is_refused_naming_both_files(bundle: Path, world: dict) -> None:
    other = world["models"]["small"]["bundle"]
    # the same spec hash would pass: change a fitted value, as a retrained spec would
    spec = json.loads((other / "feature_spec.json").read_text())
    spec["fields"][0]["state"]["values"] = spec["fields"][0]["state"]["values"][:-1]
    blob = json.dumps(spec).encode()
    (bundle / "feature_spec.json").write_bytes(blob)
    manifest = _manifest(bundle)
    manifest["sha256"]["feature_spec.json"] = hashlib.sha256(blob).hexdigest()
    _write_manifest(bundle, manifest)
    with pytest.raises(BundleError, match=r"model\.onnx with .*feature_spec\.json: .*train/serve skew"):
        Scorer.from_bundle(bundle)
