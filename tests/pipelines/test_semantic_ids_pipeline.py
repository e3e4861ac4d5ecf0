"""Real `kedro run --pipelines=semantic_ids` and `--pipelines=retrieval` on small generated data.

Until `pipeline_registry.py` wires them, the fixture adds both pipelines to the
project's registry (the same wiring the registry is asked to add).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from recflow.config_loader import replacing
from tests.conftest import make_project, run_kedro

SMALL_SIDS = {
    "encoder": {"name": "tfidf_svd",
                "params": {"text_columns": ["title", "category", "subcategory", "brand"],
                           "dim": 16, "min_df": 2}},
    "purity_columns": ["category"],
    "tokenizers": {
        "rq_kmeans": {"name": "rq_kmeans", "params": {"levels": 2, "codebook_size": 16}},
        "rq_vae": {"name": "rq_vae", "params": {"levels": 2, "codebook_size": 16,
                                                     "latent_dim": 8, "hidden": [32],
                                                     "epochs": 5}},
    },
}
SMALL_RETRIEVAL = {
    "event": "click", "baseline": "popularity", "ks": [5, 10, 20], "seed": 1,
    "models": {
        "popularity": {"name": "popularity"},
        "sasrec": {"name": "sasrec", "params": {"max_len": 10, "embed_dim": 16, "heads": 1,
                                                 "layers": 1, "epochs": 2}},
        "two_tower": {"name": "two_tower", "params": {"max_len": 10, "embed_dim": 8,
                                                       "hidden_dim": 32, "out_dim": 16,
                                                       "epochs": 2}},
        "tiger": {"name": "tiger", "tokenizer": "rq_kmeans",
                  "params": {"max_items": 5, "embed_dim": 16, "heads": 1, "layers": 1,
                             "epochs": 2, "beam_size": 20}},
    },
}


def wire_pipelines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add semantic_ids / retrieval to the registry if pipeline_registry.py lacks them."""
    import recflow.pipeline_registry as registry
    from recflow.pipelines import preprocessing, retrieval, semantic_ids

    original = registry.register_pipelines

    def register() -> dict:
        pipes = original()
        if "retrieval" not in pipes:
            params = registry._parameters()
            sem = semantic_ids.create_pipeline(
                tokenizer_names=list(params["semantic_ids"]["tokenizers"]))
            cut = preprocessing.create_pipeline().to_outputs("split_cutoffs")
            pipes["semantic_ids"] = sem
            pipes["retrieval"] = cut + sem + retrieval.create_pipeline(
                models=params["retrieval"]["models"])
        return pipes

    monkeypatch.setattr(registry, "register_pipelines", register)


def write_params(project: Path, sids: dict | None = None, ret: dict | None = None) -> None:
    local = project / "conf" / "local"
    local.mkdir(parents=True, exist_ok=True)
    if sids is not None:
        (local / "parameters_semantic_ids.yml").write_text(yaml.safe_dump(replacing({"semantic_ids": sids})))
    if ret is not None:
        (local / "parameters_retrieval.yml").write_text(yaml.safe_dump(replacing({"retrieval": ret})))


@pytest.fixture(scope="module")
def sid_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mp = pytest.MonkeyPatch()
    wire_pipelines(mp)
    project = make_project(tmp_path_factory.mktemp("sids") / "project", n_users=200,
                           n_items=300, n_impressions=15_000)
    write_params(project, SMALL_SIDS, SMALL_RETRIEVAL)
    try:
        torch.set_num_threads(1)
        run_kedro(project, "semantic_ids")
    finally:
        mp.undo()
    return project


@pytest.mark.slow  # kedro run from disk
def test_semantic_ids_report_follows_the_contract(sid_project: Path) -> None:
    report = json.loads((sid_project / "data/08_reporting/semantic_ids_report.json").read_text())
    assert set(report["tokenizers"]) == {"rq_kmeans", "rq_vae"}
    for name, m in report["tokenizers"].items():
        for key in ("levels", "codebook_size", "collision_rate_before", "collision_rate",
                    "utilization"):
            assert key in m, (name, key)
        assert m["levels"] == 2 and m["codebook_size"] == 16
        assert m["collision_rate"] == 0.0 <= m["collision_rate_before"] < 1.0
        assert len(m["utilization"]) == 2 and all(0 < u <= 1 for u in m["utilization"])
        # distinct prefixes per depth; the last = distinct code tuples before disambiguation
        assert len(m["distinct_prefixes"]) == 2
        assert m["distinct_prefixes"][0] <= m["distinct_prefixes"][1]
        assert m["distinct_prefixes"][-1] == round(m["items"] * (1 - m["collision_rate_before"]))
    # the first code follows the item hierarchy far better than chance
    km = report["tokenizers"]["rq_kmeans"]
    assert km["purity_category"] > km["purity_category_shuffled"] + 0.3
    assert (sid_project / "data/08_reporting/semantic_ids_code_usage.png").stat().st_size > 0


@pytest.mark.slow  # kedro run from disk
def test_semantic_id_tables_are_unique_and_cover_the_catalogue(sid_project: Path) -> None:
    items = pd.read_parquet(sid_project / "data/01_raw/items.parquet")
    for name in ("rq_kmeans", "rq_vae"):
        table = pd.read_parquet(sid_project / f"data/04_feature/semantic_ids/{name}.parquet")
        assert sorted(table["item_id"]) == sorted(items["item_id"])
        assert table["semantic_id"].is_unique
        assert [c for c in table.columns if c.startswith("sid_")] == ["sid_0", "sid_1", "sid_2"]


@pytest.mark.slow  # kedro run from disk
def test_saved_tokenizer_reloads_and_encodes_without_refit(sid_project: Path) -> None:
    from recflow.pipelines.semantic_ids.nodes import embeddings_matrix, load_tokenizer

    payload = torch.load(sid_project / "data/06_models/tokenizers/rq_kmeans.pt",
                         weights_only=True)
    tok = load_tokenizer(payload)
    emb = pd.read_parquet(sid_project / "data/04_feature/item_embeddings.parquet")
    table = pd.read_parquet(sid_project / "data/04_feature/semantic_ids/rq_kmeans.parquet")
    codes = tok.encode(embeddings_matrix(emb))
    np.testing.assert_array_equal(codes, table[["sid_0", "sid_1"]].to_numpy())


def test_bad_tokenizer_yaml_fails_before_running(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    wire_pipelines(monkeypatch)
    project = make_project(tmp_path / "project", n_users=50, n_items=200, n_impressions=2000)
    bad = json.loads(json.dumps(SMALL_SIDS))
    bad["tokenizers"]["rq_kmeans"]["params"]["codebok_size"] = 4
    write_params(project, bad, SMALL_RETRIEVAL)
    with pytest.raises(Exception, match="codebok_size"):
        run_kedro(project, "semantic_ids")
    assert not (project / "data/08_reporting/semantic_ids_report.json").exists()


def wire_collaborative(monkeypatch: pytest.MonkeyPatch) -> None:
    """`semantic_ids` built from pipeline_kwargs (the encoder decides its inputs), after the
    preprocessing nodes that write the tables encode_items reads."""
    import recflow.pipeline_registry as registry
    from recflow.pipelines import preprocessing
    from recflow.pipelines.semantic_ids.pipeline import create_pipeline, pipeline_kwargs

    original = registry.register_pipelines

    def register() -> dict:
        pipes = original()
        params = registry._parameters()
        prep = preprocessing.create_pipeline(**preprocessing.pipeline_kwargs(params))
        needed = [n for n in ("items", "interactions", "split_cutoffs")
                  if n in prep.all_outputs()]
        pipes["semantic_ids"] = prep.to_outputs(*needed) + create_pipeline(
            **pipeline_kwargs(params))
        return pipes

    monkeypatch.setattr(registry, "register_pipelines", register)


def test_cooccurrence_encoder_learns_from_the_retrieval_training_events(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recflow.evaluation import retrieval_protocol
    from recflow.registry import ITEM_ENCODERS

    seen: list[pd.DataFrame] = []
    original = retrieval_protocol.training_events

    def spy(interactions: pd.DataFrame, cutoffs: dict, params) -> pd.DataFrame:
        seen.append(original(interactions, cutoffs, params))
        return seen[-1]

    monkeypatch.setattr(retrieval_protocol, "training_events", spy)
    wire_collaborative(monkeypatch)
    project = make_project(tmp_path / "project", n_users=100, n_items=150, n_impressions=6000)
    encoder = {"name": "cooccurrence", "params": {"dim": 8, "text_weight": 0.5,
                                                  "text_columns": ["title", "category"],
                                                  "text_dim": 4}}
    sids = {**SMALL_SIDS, "encoder": encoder,
            "tokenizers": {"rq_kmeans": SMALL_SIDS["tokenizers"]["rq_kmeans"]}}
    write_params(project, sids, SMALL_RETRIEVAL)
    torch.set_num_threads(1)
    run_kedro(project, "semantic_ids")
    assert len(seen) == 1 and len(seen[0]) > 0
    emb = pd.read_parquet(project / "data/04_feature/item_embeddings.parquet")
    items = pd.read_parquet(project / "data/01_raw/items.parquet").sort_values("item_id")
    expected = ITEM_ENCODERS.create("cooccurrence", params=encoder["params"]).fit_transform(
        items.reset_index(drop=True), events=seen[0])
    assert emb.shape == (len(items), 1 + 8 + 4)
    np.testing.assert_allclose(emb.filter(like="e_").to_numpy(), expected, atol=1e-6)
    report = json.loads((project / "data/08_reporting/semantic_ids_report.json").read_text())
    assert report["tokenizers"]["rq_kmeans"]["collision_rate"] == 0.0
