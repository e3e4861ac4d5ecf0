"""Strict configuration: strict numbers, size bounds, unknown blocks, early per-entry checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from recflow.config_checks import check_parameters, known_blocks
from recflow.config_types import MAX_BUCKETS
from recflow.features.config import FeaturesConfig
from recflow.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS
from recflow.training.trainer import TrainerConfig

REPO = Path(__file__).resolve().parents[2]


def _fields(**sequence):
    return {"fields": {"item_id": {"transform": "vocab"},
                       "hist": {"transform": "sequence", "of": "item_id", **sequence}}}


def test_bool_is_not_an_int():
    with pytest.raises(ValidationError, match=r"epochs: expected an integer .*got True"):
        TrainerConfig.model_validate({"epochs": True})
    with pytest.raises(ValidationError, match=r"length: expected an integer >= 1 and <= 512"):
        FeaturesConfig.model_validate(_fields(length=True))
    assert FeaturesConfig.model_validate(_fields(length=3)).fields["hist"].length == 3
    # floats still take ints, never bools
    assert TrainerConfig.model_validate({"lr": 1}).lr == 1.0
    with pytest.raises(ValidationError, match="lr"):
        TrainerConfig.model_validate({"lr": True})


def test_sizes_are_bounded_and_the_message_says_the_bound():
    cross = {"transform": "hash_cross", "columns": ["a", "b"]}
    with pytest.raises(ValidationError, match=rf"num_buckets: expected an integer >= 2 and "
                                              rf"<= {MAX_BUCKETS}, got 1000000000000.0"):
        FeaturesConfig.model_validate({"fields": {"x": {**cross, "num_buckets": 1e12}}})
    with pytest.raises(ValidationError, match=f"less than or equal to {MAX_BUCKETS}"):
        FeaturesConfig.model_validate({"fields": {"x": {**cross, "num_buckets": 10**12}}})
    with pytest.raises(ValidationError, match="less than or equal to 1000000"):
        TrainerConfig.model_validate({"batch_size": 10**9})


def test_unknown_top_level_block_is_refused():
    with pytest.raises(ValueError, match=r"unknown top-level key\(s\) \['rankng'\].*"
                                         r"Known blocks: \[.*'ranking'"):
        check_parameters({"rankng": {"models": {}}})
    assert {"dataset", "preprocessing", "ranking", "retrieval", "distillation", "semantic_ids",
            "export", "preprocessing_streaming"} == set(known_blocks())
    with pytest.raises(ValueError, match=r"seed: the top-level `seed` was never read; .*"
                                         r"ranking\.trainer\.seed"):
        check_parameters({"seed": 42})
    check_parameters({"_anchor": {"x": 1}})  # YAML anchors are not blocks


def test_per_entry_trainer_override_checked_with_its_base():
    params = {"ranking": {"trainer": {"epochs": 2},
                          "models": {"lr": {"name": "lr", "trainer": {"lr": -1}}}}}
    with pytest.raises(ValueError, match=r"^parameters_ranking.yml: ranking.models.lr.trainer.lr: "
                                         r"Input should be greater than 0"):
        check_parameters(params)
    params["ranking"]["models"]["lr"]["trainer"] = {"epochs": True}
    with pytest.raises(ValueError, match=r"ranking.models.lr.trainer.epochs: expected an integer"):
        check_parameters(params)
    params["ranking"]["models"]["lr"]["trainer"] = {}
    params["ranking"]["trainer"]["epochs"] = 0
    with pytest.raises(ValueError, match=r"ranking.trainer.epochs: Input should be greater"):
        check_parameters(params)


def test_per_entry_params_and_distillation_entries_name_their_path():
    with pytest.raises(ValueError, match=r"parameters_ranking.yml: ranking.models.big: .*"
                                         r"ranking.models.big.params.embed_dim"):
        check_parameters({"ranking": {"models": {
            "big": {"name": "deepfm", "params": {"embed_dim": 10**6}}}}})
    with pytest.raises(ValueError, match=r"parameters_distillation.yml: "
                                         r"distillation.teacher.members\[0\].trainer.batch_size"):
        check_parameters({"distillation": {"teacher": {"members": [
            {"name": "lr", "trainer": {"batch_size": 0}}]}, "student": {"name": "lr"}}})



def test_a_tokenizer_entry_names_its_class_with_name_and_the_old_key_is_explained():
    """`name:` names the registered component (encoder, tokenizer, loss); `tokenizer:` means
    only "an entry of semantic_ids.tokenizers" (retrieval entries, semantic_prefix fields)."""
    check_parameters({"semantic_ids": {"tokenizers": {"rq": {"name": "rq_kmeans"}}}})
    with pytest.raises(ValueError, match=r"semantic_ids.tokenizers.rq: `tokenizer: rq_kmeans` "
                                         r"is now `name: rq_kmeans`"):
        check_parameters({"semantic_ids": {"tokenizers": {"rq": {"tokenizer": "rq_kmeans"}}}})
    with pytest.raises(ValueError, match=r"semantic_ids.tokenizers.rq: unknown tokenizer 'rq_kmean'"):
        check_parameters({"semantic_ids": {"tokenizers": {"rq": {"name": "rq_kmean"}}}})


@pytest.mark.parametrize(("block", "path"), [
    ({"ranking": {"models": {"x": {"model": "lr"}}}}, r"parameters_ranking.yml: ranking.models.x"),
    ({"retrieval": {"models": {"x": {"model": "popularity"}}}},
     r"parameters_retrieval.yml: retrieval.models.x"),
    ({"distillation": {"teacher": {"members": [{"model": "lr"}]}, "student": {"name": "lr"}}},
     r"parameters_distillation.yml: distillation.teacher.members\[0\]"),
    ({"distillation": {"teacher": {"members": [{"name": "lr"}]}, "student": {"model": "lr"}}},
     r"parameters_distillation.yml: distillation.student"),
])
def test_a_model_entry_still_naming_its_model_with_model_gets_the_rename(block, path):
    """Model entries name their registered model with `name:` like every other component
    entry; the key they used before 2026-11-30 is refused with the rename, in the pre-run
    check and in the typed parameters Kedro validates."""
    name = "popularity" if "retrieval" in block else "lr"
    with pytest.raises(ValueError, match=rf"{path}: `model: {name}` is now `name: {name}`"):
        check_parameters(block)


def test_the_typed_entries_refuse_the_old_key_too():
    from recflow.evaluation.retrieval_params import RetrievalEntry
    from recflow.pipelines.distillation.params import TeacherMember
    from recflow.training.entry import ModelEntry

    for kind, name in ((ModelEntry, "lr"), (RetrievalEntry, "sasrec"), (TeacherMember, "lr")):
        with pytest.raises(ValidationError, match=rf"`model: {name}` is now `name: {name}`"):
            kind.model_validate({"model": name})
        # an old env's `model:` soft-merged over base's `name:` entry
        with pytest.raises(ValidationError, match=rf"`model: {name}` is now `name: {name}`"):
            kind.model_validate({"name": name, "model": name})
        assert kind.model_validate({"name": name}).name == name


def test_an_old_env_delta_over_base_gets_the_rename_not_an_unknown_key():
    """An env written before the rename (`model: lr`) merges into base's `name: lr` entry;
    the pre-run check names the rename, not pydantic's "extra inputs are not permitted"."""
    from recflow.config_loader import merge_delta

    base = {"ranking": {"models": {"lr": {"name": "lr"}}}}
    merged = merge_delta(base, {"ranking": {"models": {"lr": {"model": "lr"}}}})
    with pytest.raises(ValueError, match=r"ranking.models.lr: `model: lr` is now `name: lr`"):
        check_parameters(merged)


@pytest.mark.parametrize("env", sorted(p.name for p in (REPO / "conf").iterdir()
                                       if p.is_dir() and p.name != "base"))
def test_every_env_validates(env):
    from recflow.evaluation.retrieval_params import RetrievalParams
    from recflow.export.params import ExportParams
    from recflow.pipelines.distillation.params import validate as distillation
    from recflow.pipelines.preprocessing_streaming.params import PreprocessingStreamingParams
    from recflow.pipelines.ranking.params import RankingParams
    from recflow.pipelines.semantic_ids.params import SemanticIdsParams

    loader = CONFIG_LOADER_CLASS(conf_source=str(REPO / "conf"), env=env, **CONFIG_LOADER_ARGS)
    params = loader["parameters"]
    check_parameters(params)
    # every typed block still validates under strict numbers and the new bounds
    FeaturesConfig.model_validate(params["preprocessing"])
    RankingParams.model_validate(params["ranking"])
    RetrievalParams.model_validate(params["retrieval"])
    SemanticIdsParams.model_validate(params["semantic_ids"])
    ExportParams.model_validate(params["export"])
    PreprocessingStreamingParams.model_validate(params["preprocessing_streaming"])
    distillation(params["distillation"])


def _bad_env(tmp_path, monkeypatch) -> Path:
    import shutil

    shutil.copytree(REPO / "conf", tmp_path / "conf")
    (tmp_path / "pyproject.toml").write_text(
        (REPO / "pyproject.toml").read_text())
    (tmp_path / "conf" / "bad").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEDRO_ENV", "bad")
    # no loader captured from an earlier Kedro session in this process: read KEDRO_ENV's
    monkeypatch.setattr("recflow.hooks.ConfigCaptureHooks.config_loader", None)
    return tmp_path / "conf" / "bad"


def test_a_yaml_syntax_error_names_the_file_with_its_path(tmp_path, monkeypatch):
    from recflow.pipeline_registry import register_pipelines

    bad = _bad_env(tmp_path, monkeypatch)
    (bad / "parameters_typo.yml").write_text("ranking:\n  trainer: {epochs: 2\n")
    with pytest.raises(Exception, match=r"conf/bad/parameters_typo\.yml.*line 2"):
        register_pipelines()


def test_register_pipelines_refuses_before_any_node(tmp_path, monkeypatch):
    from recflow.pipeline_registry import register_pipelines

    _bad_env(tmp_path, monkeypatch)
    (tmp_path / "conf" / "bad" / "parameters_ranking.yml").write_text(
        "ranking:\n  models:\n    lr:\n      name: lr\n      trainer: {lr: -1}\n")
    with pytest.raises(ValueError, match="parameters_ranking.yml: ranking.models.lr.trainer.lr"):
        register_pipelines()
