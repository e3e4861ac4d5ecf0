"""The `semantic_prefix` transform: item -> semantic-ID prefix tokens c1, c1c2, c1c2c3.

Checked on a hand-made table: tokens per level, OOV for unknown items and for prefixes
never seen in train, the spec round trip, config errors, the cross-file tokenizer check,
rare-item AUC, and that the ONNX scorer reproduces offline scores with the fields on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from recflow.evaluation.ranking import item_train_stats, rare_item_metrics
from recflow.features import FeaturesConfig, FeatureSpec
from recflow.features.semantic import SemanticPrefix
from recflow.features.transforms import OOV, PAD
from recflow.pipelines.preprocessing import pipeline_kwargs
from recflow.tokenization.semantic_ids import SemanticIdTable
from tests.helpers import embedded_declaration, embedded_events

REPO = Path(__file__).resolve().parents[3]

# item -> 3 codes; 14 collides with 10 (digit 1); 15 is a cold item (never in train)
CODES = {10: (1, 2, 3), 11: (1, 2, 4), 12: (1, 5, 3), 13: (7, 2, 3), 14: (1, 2, 3),
         15: (7, 2, 9)}
TRAIN = pd.Series([10, 10, 11, 12, 13, 14], name="item_id")


@pytest.fixture
def table() -> SemanticIdTable:
    return SemanticIdTable.build(np.array(list(CODES)), np.array(list(CODES.values())), 10)


def _expected(level: int, items: list[Any], min_count: int = 1) -> list[int]:
    """Reference tokens: prefixes ranked by train count, ties by prefix; others OOV."""
    counts: dict[tuple, int] = {}
    for item in TRAIN:
        counts[CODES[item][:level]] = counts.get(CODES[item][:level], 0) + 1
    ranked = sorted((p for p, c in counts.items() if c >= min_count),
                    key=lambda p: (-counts[p], p))
    index = {p: i + 2 for i, p in enumerate(ranked)}
    return [PAD if item is None else index.get(CODES.get(item, (None,) * 3)[:level], OOV)
            for item in items]


@pytest.mark.parametrize("level", [1, 2, 3])
def test_prefix_tokens_per_level_with_oov_and_padding(table: SemanticIdTable, level: int) -> None:
    prefix = SemanticPrefix(level=level).fit(TRAIN, table)
    items = [10, 11, 12, 13, 14, 15, 99, None]
    got = prefix.transform(pd.Series(items, dtype=object)).tolist()
    assert got == _expected(level, items)
    assert got[-2] == OOV and got[-1] == PAD  # unknown item, missing id
    assert got[0] == got[4]  # colliding items share every code prefix
    assert prefix.size == len({CODES[i][:level] for i in TRAIN}) + 2


def test_cold_item_gets_its_trained_prefix_but_not_an_unseen_one(table: SemanticIdTable) -> None:
    cold = pd.Series([15, 13])  # 15 shares (7,) and (7, 2) with the train item 13
    p1, p2, p3 = (SemanticPrefix(level=lv).fit(TRAIN, table).transform(cold) for lv in (1, 2, 3))
    assert p1[0] == p1[1] != OOV and p2[0] == p2[1] != OOV
    assert p3[0] == OOV != p3[1]  # (7, 2, 9) was never seen in train


def test_min_count_and_id_dtypes(table: SemanticIdTable) -> None:
    prefix = SemanticPrefix(level=1, min_count=2).fit(TRAIN, table)
    assert prefix.transform(pd.Series([10, 13])).tolist() == _expected(1, [10, 13], min_count=2)
    assert prefix.transform(pd.Series([13])).tolist() == [OOV]
    # ids arriving as strings or floats (serving, parquet round trips) find the same token
    same = [prefix.transform(pd.Series(v, dtype=object)).tolist() for v in (["10"], [10.0])]
    assert same == [[2], [2]]


def test_levels_beyond_the_codes_and_duplicate_items_are_refused(table: SemanticIdTable) -> None:
    with pytest.raises(ValueError, match="prefix level 4 exceeds the table's 3 code levels"):
        SemanticPrefix(level=4).fit(TRAIN, table)
    twice = SemanticIdTable(np.array([1, 1]), np.array([[0, 0, 0, 0], [0, 0, 0, 1]]), 4)
    with pytest.raises(ValueError, match="more than once"):
        SemanticPrefix(level=1).fit(pd.Series([1]), twice)


# ---- through the FeatureSpec ------------------------------------------------------------------
def _config(**sid: Any) -> FeaturesConfig:
    return FeaturesConfig.model_validate({
        "labels": ["click"],
        "fields": {"item_id": {"transform": "vocab"},
                   "sid": {"transform": "semantic_prefix", "tokenizer": "tok", **sid}},
    })


def test_spec_emits_one_categorical_field_per_level_and_round_trips(
        table: SemanticIdTable) -> None:
    frame = pd.DataFrame({"item_id": TRAIN, "click": [1, 0, 1, 0, 0, 1]})
    spec = FeatureSpec.from_config(_config(), semantic_ids={"tok": table}).fit(frame)
    assert spec.names == ["item_id", "sid_p1", "sid_p2", "sid_p3"]
    assert [spec[f"sid_p{lv}"].kind for lv in (1, 2, 3)] == ["categorical"] * 3
    raw = pd.DataFrame({"item_id": [10, 15, 99, 14]})
    out = spec.transform_frame(raw)
    for lv in (1, 2, 3):
        assert out[f"sid_p{lv}"].tolist() == _expected(lv, [10, 15, 99, 14])
        assert spec[f"sid_p{lv}"].vocab_size == max(_expected(lv, list(TRAIN))) + 1
    # serving rebuilds the spec from JSON alone: no table, same tokens, same hash
    reloaded = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    pd.testing.assert_frame_equal(reloaded.transform_frame(raw), out)
    assert reloaded.hash == spec.hash
    two = FeatureSpec.from_config(_config(levels=[2, 1]), semantic_ids={"tok": table}).fit(frame)
    assert two.names == ["item_id", "sid_p1", "sid_p2"]
    assert two.transform_frame(raw)["sid_p2"].tolist() == out["sid_p2"].tolist()


@pytest.mark.parametrize(("sid", "fragment"), [
    ({"levels": [0, 1]}, "levels"),
    ({"levels": [1, 1]}, "distinct"),
    ({"levels": []}, "levels"),
    ({"tokenizer": 3}, "tokenizer"),
    ({"bucket": 4}, "bucket"),
])
def test_bad_config_names_the_key(sid: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment) as info:
        _config(**sid)
    assert "sid" in str(info.value)


def test_missing_table_and_too_long_levels_name_the_yaml_key(table: SemanticIdTable) -> None:
    with pytest.raises(KeyError, match=r"preprocessing.fields.sid.tokenizer.*'tok'"):
        FeatureSpec.from_config(_config(), semantic_ids={})
    with pytest.raises(ValueError, match=r"preprocessing.fields.sid.levels: \[4\] exceed the 3"):
        FeatureSpec.from_config(_config(levels=[1, 4]), semantic_ids={"tok": table})
    clash = FeaturesConfig.model_validate({"fields": {
        "sid_p1": {"transform": "vocab"},
        "sid": {"transform": "semantic_prefix", "tokenizer": "tok", "levels": [1]}}})
    with pytest.raises(ValueError, match=r"\['sid_p1'\] are defined twice"):
        FeatureSpec.from_config(clash, semantic_ids={"tok": table})


def test_pipeline_kwargs_check_the_tokenizer_against_semantic_ids() -> None:
    dataset = {"events": {"table": "log", "labels": ["click"]}}
    params = {"semantic_ids": {"tokenizers": {"rq_kmeans": {}, "rq_vae": {}}},
              "dataset": dataset,
              "preprocessing": {"fields": {
                  "item_id": {"transform": "vocab"},
                  "a": {"transform": "semantic_prefix", "tokenizer": "rq_vae"},
                  "b": {"transform": "semantic_prefix", "tokenizer": "rq_vae", "levels": [1]}}}}
    assert pipeline_kwargs(params)["semantic_tokenizers"] == ["rq_vae"]
    params["preprocessing"]["fields"]["b"]["tokenizer"] = "nope"
    with pytest.raises(ValueError, match=r"fields.b.tokenizer: 'nope' is not an entry of "
                                         r"semantic_ids.tokenizers.*\['rq_kmeans', 'rq_vae'\]"):
        pipeline_kwargs(params)
    assert pipeline_kwargs({"dataset": dataset, "preprocessing": {"fields": {
        "x": {"transform": "vocab"}}}})["semantic_tokenizers"] == []


def test_semantic_env_is_the_base_preprocessing_plus_the_prefix_field() -> None:
    from recflow.evaluation.benchmark import rebase_outputs
    from tests.helpers import env_parameters

    base, env = env_parameters("local"), env_parameters("semantic")
    fields = env["preprocessing"]["fields"]
    added = {k: v for k, v in fields.items() if k not in base["preprocessing"]["fields"]}
    assert list(fields) == [*base["preprocessing"]["fields"], *added]  # base's order, then new
    assert [v["transform"] for v in added.values()] == ["semantic_prefix"]
    others = {k: v for k, v in base.items() if k != "preprocessing"}  # only the out root moves
    assert {k: v for k, v in env.items() if k != "preprocessing"} == rebase_outputs(
        others, "data", "data/semantic")
    FeaturesConfig.model_validate(env["preprocessing"])


# ---- rare-item AUC ----------------------------------------------------------------------------
def test_rare_item_auc_covers_only_items_below_the_threshold() -> None:
    train = item_train_stats(pd.DataFrame({"key_item": [1] * 5 + [2] * 2 + [3],
                                           "label_click": [0, 1] * 4}))
    assert train["impressions"].to_dict() == {1: 5, 2: 2, 3: 1}
    test = pd.DataFrame({"key_item": [1, 1, 2, 2, 3, 4, 4],
                         "label_click": [0, 1, 1, 0, 0, 1, 0],
                         "score_ctr": [0.9, 0.1, 0.8, 0.3, 0.2, 0.1, 0.6]})
    out = rare_item_metrics(test, train, threshold=3)  # items 2 (2x), 3 (1x), 4 (unseen)
    rare = test.iloc[2:]
    from sklearn.metrics import roc_auc_score
    assert out["rare_items_rows"] == 5 and out["rare_items_threshold"] == 3
    assert out["auc_rare_items"] == pytest.approx(roc_auc_score(rare["label_click"],
                                                                rare["score_ctr"]))
    assert rare_item_metrics(test, train, threshold=1)["rare_items_rows"] == 2  # unseen only
    assert rare_item_metrics(test.iloc[4:5], train, threshold=3)["auc_rare_items"] is None


# ---- serving reproduces the tokens and the scores ---------------------------------------------
def test_scorer_reproduces_offline_scores_with_prefix_fields(tmp_path: Path) -> None:
    from recflow.datasets.onnx_model import ServingBundleDataset
    from recflow.datasets.synthetic import GeneratorConfig, generate
    from recflow.export.checks import torch_scores
    from recflow.export.onnx_export import model_input_schema
    from recflow.export.params import ExportParams
    from recflow.features.records import raw_records
    from recflow.models.payload import to_payload
    from recflow.pipelines.export import nodes as export_nodes
    from recflow.pipelines.preprocessing import nodes as prep
    from recflow.registry import MODELS
    from recflow.serving import Scorer
    from recflow.serving.schema import feeds_from_frame

    tables = generate(GeneratorConfig(n_users=60, n_items=90, n_impressions=2500, seed=5))
    items = tables.items.sort_values("item_id")
    # a content-like table: category / subcategory / brand codes, the last 10 items left out
    codes = np.column_stack([pd.factorize(items[c])[0] for c in ("category", "subcategory",
                                                                 "brand")])
    sid = SemanticIdTable.build(items["item_id"].to_numpy()[:-10], codes[:-10], 64)
    config = FeaturesConfig.model_validate({
        "labels": ["click", "purchase"],
        "fields": {"user_id": {"transform": "vocab"}, "item_id": {"transform": "vocab"},
                   "price": {"transform": "standardize", "log": True},
                   "hist_item_id": {"transform": "sequence", "of": "item_id", "length": 5},
                   "item_sid": {"transform": "semantic_prefix", "tokenizer": "toy",
                                "levels": [1, 2]}}})
    events = embedded_events(tables.interactions, tables.users, tables.items)
    spec_dict = prep.fit_feature_spec(events, prep.split_by_time(events, config), config,
                                      embedded_declaration(), sid__toy=sid.to_frame())
    spec = FeatureSpec.from_dict(spec_dict)
    test = prep.transform_test(events, spec_dict)
    assert {"item_sid_p1", "item_sid_p2"} <= set(test.columns)
    assert (test["item_sid_p1"] >= 2).mean() > 0.5  # most test items have a trained prefix
    torch.manual_seed(0)
    typed = MODELS.get("deepfm").validate_params({"embed_dim": 4, "hidden": [8]})
    model = MODELS.create("deepfm", spec, params=typed)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # spread the scores of the untrained model
    model.eval()
    assert {"item_sid_p1", "item_sid_p2"} <= set(model.input_names)
    payload = to_payload(model, "deepfm", typed, spec, extra={"name": "sid"})
    fast = ExportParams.model_validate({"quantize": False,
                                        "latency": {"batches": [1], "repeats": 2, "warmup": 0}})
    _, bundle, _ = export_nodes.export_model(payload, spec_dict, test, {"auc": 0.5}, fast)
    ServingBundleDataset(str(tmp_path / "sid")).save(bundle)
    offline = torch_scores(model, feeds_from_frame(test, model_input_schema(model, spec)))
    scorer = Scorer.from_bundle(tmp_path / "sid")
    records = raw_records(events, spec)
    served = scorer.transform(records)
    np.testing.assert_array_equal(served["item_sid_p2"].to_numpy(),
                                  test["item_sid_p2"].to_numpy())
    np.testing.assert_allclose(scorer.score(records), offline, atol=1e-5)
