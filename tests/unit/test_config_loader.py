"""Envs as deltas of conf/base (recflow.config_loader): the merge rules, through Kedro's
loader as settings.py configures it, and the facts each shipped env relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recflow.config_checks import check_parameters
from recflow.config_loader import REPLACE, DeltaConfigLoader, merge_delta, replacing
from recflow.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS
from tests.helpers import env_parameters

REPO = Path(__file__).resolve().parents[2]
BASE = {"ranking": {"baseline": "lr", "trainer": {"epochs": 4, "lr": 0.002},
                    "models": {"lr": {"name": "lr"},
                               "din": {"name": "din", "params": {"embed_dim": 16}}}},
        "export": {"latency": {"threads": 1, "batches": [1, 64]}}}


def _loader(tmp_path: Path, env: dict, base: dict = BASE, **files: dict) -> DeltaConfigLoader:
    """A conf source with `base` and the env `e` (`env` as its parameters.yml)."""
    for name, data in {"base/parameters.yml": base, "e/parameters.yml": env, **files}.items():
        (tmp_path / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "conf" / name).write_text(yaml.safe_dump(data))
    return CONFIG_LOADER_CLASS(conf_source=str(tmp_path / "conf"), env="e", **CONFIG_LOADER_ARGS)


def test_an_env_key_overrides_one_base_key_and_keeps_its_siblings(tmp_path: Path) -> None:
    params = _loader(tmp_path, {"ranking": {"trainer": {"epochs": 1}}})["parameters"]
    assert params["ranking"]["trainer"] == {"epochs": 1, "lr": 0.002}
    assert params["ranking"]["models"] == BASE["ranking"]["models"]
    assert params["export"] == BASE["export"]
    # a list is a value: replaced whole, never concatenated
    params = _loader(tmp_path, {"export": {"latency": {"batches": [8]}}})["parameters"]
    assert params["export"]["latency"] == {"threads": 1, "batches": [8]}


def test_null_drops_an_inherited_mapping_and_stays_null_on_a_scalar(tmp_path: Path) -> None:
    params = _loader(tmp_path, {"ranking": {"models": {"din": None}},
                                "export": {"latency": {"threads": None}}})["parameters"]
    assert params["ranking"]["models"] == {"lr": {"name": "lr"}}
    assert params["export"]["latency"] == {"threads": None, "batches": [1, 64]}  # null: "off"
    assert "export" not in _loader(tmp_path, {"export": None})["parameters"]


def test_the_replace_marker_replaces_a_block_and_never_reaches_the_nodes(tmp_path: Path) -> None:
    models = {REPLACE: True, "fm": {"name": "fm", "params": {"embed_dim": 4}}}
    params = _loader(tmp_path, {"ranking": {"models": models}})["parameters"]
    assert params["ranking"]["models"] == {"fm": {"name": "fm", "params": {"embed_dim": 4}}}
    assert params["ranking"]["trainer"] == BASE["ranking"]["trainer"]  # siblings merge
    whole = _loader(tmp_path, replacing({"ranking": {"models": {}}}))["parameters"]
    assert whole["ranking"] == {"models": {}}
    assert merge_delta({}, {"a": {"b": {REPLACE: False, "c": 1}}}) == {"a": {"b": {"c": 1}}}
    with pytest.raises(ValueError, match=r"ranking\.models\._replace: expected true or false"):
        merge_delta(BASE, {"ranking": {"models": {REPLACE: "yes"}}})


def test_a_misspelt_block_in_an_env_is_still_refused(tmp_path: Path) -> None:
    params = _loader(tmp_path, {"rankng": {"trainer": {"epochs": 1}}})["parameters"]
    with pytest.raises(ValueError, match=r"unknown top-level key\(s\) \['rankng'\]"):
        check_parameters(params)


def test_the_catalog_still_replaces_per_entry(tmp_path: Path) -> None:
    entry = {"type": "pandas.ParquetDataset", "filepath": "a.parquet",
             "load_args": {"columns": ["x"]}}
    loader = _loader(tmp_path, {}, **{"base/catalog.yml": {"raw": entry},
                                      "e/catalog.yml": {"raw": {"type": "pandas.CSVDataset",
                                                                "filepath": "b.csv"}}})
    assert loader["catalog"]["raw"] == {"type": "pandas.CSVDataset", "filepath": "b.csv"}


# ---- the shipped envs ---------------------------------------------------------------------
def _parameter_lines(env: str) -> int:
    """YAML lines (no comments, no blanks) of an env's parameter files."""
    return sum(1 for path in (REPO / "conf" / env).glob("parameters*.yml")
               for line in path.read_text().splitlines()
               if line.strip() and not line.lstrip().startswith("#"))


def test_the_semantic_env_is_a_few_lines() -> None:
    assert _parameter_lines("semantic") <= 10


@pytest.mark.parametrize("env", sorted(p.name for p in (REPO / "conf").iterdir()
                                       if p.is_dir() and p.name != "base"))
def test_no_marker_reaches_the_resolved_parameters(env: str) -> None:
    def markers(value: object) -> int:
        if isinstance(value, dict):
            return (REPLACE in value) + sum(markers(v) for v in value.values())
        return sum(markers(v) for v in value) if isinstance(value, list) else 0

    assert markers(env_parameters(env)) == 0


def test_movielens_replaces_the_embedded_declaration_and_features() -> None:
    base, ml = env_parameters("local"), env_parameters("movielens")
    assert ml["dataset"]["name"] == "movielens"
    assert list(ml["dataset"]["items"]["columns"]) == ["title", "genres", "category", "year"]
    assert "columns" in ml["dataset"]["events"] and "dwell" not in ml["dataset"]["events"][
        "columns"]  # nothing of the embedded data's declaration is inherited
    assert list(ml["preprocessing"]["fields"])[-1] == "hist_category"
    assert not {"brand", "price", "hist_subcategory"} & set(ml["preprocessing"]["fields"])
    assert ml["preprocessing"]["split"] == base["preprocessing"]["split"]
    trainer = ml["ranking"]["trainer"]
    assert (trainer["epochs"], trainer["lr"], trainer["embedding_lr"]) == (3, 0.001, 0.001)
    assert trainer["checkpoint_dir"] == "data/movielens/06_models/checkpoints"
    assert list(ml["ranking"]["models"]) == list(base["ranking"]["models"])
    assert all("exclude_fields" not in (m.get("params") or {})
               for m in ml["ranking"]["models"].values())
    student = ml["distillation"]["student"]
    assert student["params"]["sequence_field"] == "hist_category"
    assert student["trainer"] == base["distillation"]["student"]["trainer"]
    assert ml["semantic_ids"]["tokenizers"]["rq_vae"]["params"]["codebook_size"] == 64
    check_parameters(ml)


def test_movielens_recbole_repeats_the_movielens_declaration_and_its_own_models() -> None:
    recbole = env_parameters("movielens_recbole")
    assert recbole["dataset"] == env_parameters("movielens")["dataset"]
    raw = yaml.safe_load((REPO / "conf/movielens_recbole/parameters_retrieval.yml").read_text())
    assert recbole["retrieval"]["models"] == {
        k: v for k, v in raw["retrieval"]["models"].items() if k != REPLACE}
    assert recbole["retrieval"]["training"]["patience"] == 10
    encoder = recbole["semantic_ids"]["encoder"]
    assert encoder["name"] == "cooccurrence" and "min_df" not in encoder["params"]
