"""Serving: raw records -> Scorer (spec transforms + onnxruntime).

The scorer must reproduce torch on preprocessing's own output from raw records
(train/serve skew) and run with torch and Kedro unimportable. The HTTP service
is tested in test_http_service.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recflow.serving import RecordError, Scorer

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def world(serving_world: dict[str, Any]) -> dict[str, Any]:
    return serving_world


# ---- the scorer ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["din", "small"])
def test_scorer_on_raw_records_reproduces_offline_scores(world: dict, name: str) -> None:
    entry, records = world["models"][name], world["records"]
    scorer = Scorer.from_bundle(entry["bundle"])
    assert len(records) == len(world["test"]) > 100
    from_frame = scorer.score(records)
    assert np.abs(from_frame - entry["offline"]).max() <= 1e-5
    as_dicts = records[list(scorer.raw_schema)].to_dict("records")  # only what the model needs
    assert np.abs(scorer.score(as_dicts) - entry["offline"]).max() <= 1e-5
    as_json = json.loads(records[list(scorer.raw_schema)].to_json(orient="records"))
    assert np.abs(scorer.score(as_json) - entry["offline"]).max() <= 1e-5


def test_raw_schema_asks_only_for_what_the_model_reads(world: dict) -> None:
    scorer = Scorer.from_bundle(world["models"]["small"]["bundle"])
    assert scorer.raw_schema == {"item_id": "categorical", "price": "numeric",
                                 "hist_subcategory": "sequence"}
    described = scorer.describe()
    assert described["model"] == "small" and described["score_names"] == ["ctr"]
    assert set(described["fields"]) == set(scorer.raw_schema)


def test_unseen_ids_go_to_oov_and_missing_numerics_to_the_fitted_default(world: dict) -> None:
    scorer = Scorer.from_bundle(world["models"]["din"]["bundle"])
    record = world["records"].iloc[0].to_dict()
    unseen = {**record, "item_id": 10**9, "brand": "no-such-brand", "price": None,
              "hist_item_id": [10**9, *record["hist_item_id"]]}
    scores, stats = scorer.score_with_stats([record, unseen])
    assert np.isfinite(scores).all() and scores.shape == (2, 1)
    assert stats["item_id"]["oov"] == 1 and stats["brand"]["oov"] >= 1
    assert stats["price"]["missing"] == 1 and stats["hist_item_id"]["oov"] >= 1
    frame = scorer.transform([unseen])
    assert frame["item_id"].iloc[0] == 1  # OOV index
    assert frame["price"].iloc[0] == 0.0  # standardised train mean


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"price": "cheap"}, "price", "must be a number"),
    ({"item_id": {"id": 3}}, "item_id", "must be a string or integer id, or null, got dict"),
    ({"gender": True}, "gender", "must be a string or integer id, or null, got bool"),
    ({"hist_item_id": 12}, "hist_item_id", "must be a list of string or integer ids"),
    ({"hist_item_id": [1, [2]]}, "hist_item_id", r"must be a list .*; it holds list"),
])
def test_wrong_types_raise_naming_field_and_record(world: dict, change: dict, field: str,
                                                   message: str) -> None:
    scorer = Scorer.from_bundle(world["models"]["din"]["bundle"])
    good = world["records"].iloc[0].to_dict()
    with pytest.raises(RecordError, match=f"record 1: field '{field}' {message}") as info:
        scorer.score([good, {**good, **change}])
    assert info.value.field == field and info.value.record == 1


def test_missing_keys_and_non_records_raise_clearly(world: dict) -> None:
    scorer = Scorer.from_bundle(world["models"]["din"]["bundle"])
    good = world["records"].iloc[0].to_dict()
    partial = {k: v for k, v in good.items() if k != "hist_subcategory"}
    with pytest.raises(RecordError, match="record 2: missing field 'hist_subcategory'"):
        scorer.score([good, good, partial])
    with pytest.raises(RecordError, match=r"missing field\(s\) \['price'\]"):
        scorer.score(world["records"].drop(columns=["price"]))
    with pytest.raises(RecordError, match="record 0 must be an object"):
        scorer.score([[1, 2, 3]])
    with pytest.raises(RecordError, match="list of objects"):
        scorer.score("user_id=3")
    assert scorer.score([]).shape == (0, 1)


def test_a_spec_from_another_run_is_refused(world: dict) -> None:
    bundle = world["models"]["din"]["bundle"]
    other = json.loads(json.dumps(world["spec_dict"]))
    other["fields"][0]["state"]["values"] = other["fields"][0]["state"]["values"][:-1]
    with pytest.raises(ValueError, match="train/serve skew"):
        Scorer(bundle / "model.onnx", other)
    with pytest.raises(FileNotFoundError, match="int8"):
        Scorer.from_bundle(bundle, int8=True)  # exported without quantisation
    with pytest.raises(FileNotFoundError, match="not a recflow serving bundle"):
        Scorer.from_bundle(world["root"])


NO_TORCH = textwrap.dedent("""
    import json, sys
    for name in ("torch", "kedro"):
        sys.modules[name] = None  # any import of them now raises ImportError
    from recflow.serving import Scorer
    scorer = Scorer.from_bundle(sys.argv[1])
    scores = scorer.score(json.load(open(sys.argv[2])))
    loaded = sorted(m for m, mod in sys.modules.items()
                    if m.split(".")[0] in ("torch", "kedro") and mod is not None)
    print(json.dumps({"scores": scores[:, 0].tolist(), "loaded": loaded}))
""")


def test_scorer_runs_without_torch_or_kedro(world: dict, tmp_path: Path) -> None:
    entry = world["models"]["din"]
    records = world["records"].head(50)
    path = tmp_path / "records.json"
    path.write_text(records.to_json(orient="records"))
    done = subprocess.run([sys.executable, "-c", NO_TORCH, str(entry["bundle"]), str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert np.abs(np.array(out["scores"]) - entry["offline"][:50, 0]).max() <= 1e-5
