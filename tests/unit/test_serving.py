"""Serving: raw records -> Scorer (spec transforms + onnxruntime) and the HTTP service.

The scorer must reproduce torch on preprocessing's own output from raw records
(train/serve skew), run with torch and Kedro unimportable, and the service must
answer bad requests with a 4xx that names the problem and keep serving.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recflow.serving import RecordError, Scorer

REPO = Path(__file__).resolve().parents[2]


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


# ---- the HTTP service ----------------------------------------------------------------------
def _call(url: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", params=["stdlib", "asgi"])
def service(world: dict, request: pytest.FixtureRequest):
    """`python -m recflow.serving BUNDLE [--asgi]` on 127.0.0.1, a free port, max batch 8."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "recflow.serving", str(world["models"]["din"]["bundle"]),
         "--host", "127.0.0.1", "--port", str(port), "--max-batch", "8",
         "--max-body-bytes", "20000", "--log-level", "WARNING",
         *(["--asgi"] if request.param == "asgi" else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if _call(f"{url}/health")[0] == 200:
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{request.param} service did not start: {process.stderr.read()}")
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=10)
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught
    assert process.returncode in ((0,) if request.param == "stdlib" else (0, -signal.SIGTERM))


def test_service_scores_good_requests(service: str, world: dict) -> None:
    assert _call(f"{service}/health") == (200, {"status": "ok", "model": "din"})
    assert _call(f"{service}/healthz")[0] == 200
    status, meta = _call(f"{service}/metadata")
    assert status == 200 and meta["max_batch"] == 8 and "hist_item_id" in meta["fields"]
    records = json.loads(world["records"].head(5).to_json(orient="records"))
    status, body = _call(f"{service}/score", {"records": records})
    assert status == 200 and body["score_names"] == ["ctr"] and len(body["scores"]) == 5
    got = np.array([s["ctr"] for s in body["scores"]])
    assert np.abs(got - world["models"]["din"]["offline"][:5, 0]).max() <= 1e-5
    assert _call(f"{service}/score", records[:2])[0] == 200  # a bare list works too
    assert _call(f"{service}/score", {"records": []}) == (200, {
        "model": "din", "score_names": ["ctr"], "scores": [], "stats": {}})
    unseen = {**records[0], "item_id": 10**9, "price": None}
    status, body = _call(f"{service}/score", {"records": [unseen]})
    assert status == 200 and body["stats"]["item_id"] == {"oov": 1}
    assert body["stats"]["price"] == {"missing": 1}


def test_service_rejects_bad_requests_and_stays_up(service: str, world: dict) -> None:
    records = json.loads(world["records"].head(9).to_json(orient="records"))
    good = records[0]
    missing = {k: v for k, v in good.items() if k != "price"}
    cases = [
        ({"records": [good, missing]}, None, 422, "missing field 'price'"),
        ({"records": [{**good, "price": "cheap"}]}, None, 422, "field 'price' must be a number"),
        ({"records": [{**good, "hist_item_id": 7}]}, None, 422, "field 'hist_item_id'"),
        ({"records": records}, None, 413, "batch of 9 records exceeds the limit of 8"),
        (None, b"{not json", 400, "not valid JSON"),
        ({"rows": records}, None, 400, '{"records"'),
        (None, b" " * 30000, 413, "exceeds the limit of 20000"),
    ]
    for body, raw, status, message in cases:
        got_status, got = _call(f"{service}/score", body, raw=raw)
        assert got_status == status and message in got["error"], (status, got)
    status, got = _call(f"{service}/score", {"records": [good, missing]})
    assert got["field"] == "price" and got["record"] == 1
    assert _call(f"{service}/nope")[0] == 404
    assert _call(f"{service}/nope", {"records": []})[0] == 404
    assert _call(f"{service}/score", {"records": [good]})[0] == 200  # still serving
    assert _call(f"{service}/health")[0] == 200
