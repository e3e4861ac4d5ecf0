"""The generated YAML reference and model zoo cover every typed field and registered name."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from tests.conftest import REPO


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_reference", REPO / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(gen, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("reference")
    return {p.name: p.read_text() for p in gen.generate(out)}


def _typed_param_models() -> list[type[BaseModel]]:
    """Found independently of the generator: pydantic models defined in the params modules."""
    import recflow.pipelines

    modules = [importlib.import_module(name) for name in (
        "recflow.features.config", "recflow.training.ranking_task", "recflow.training.entry",
        "recflow.export.params", "recflow.evaluation.retrieval_params")]
    for info in pkgutil.iter_modules(recflow.pipelines.__path__):
        if importlib.util.find_spec(f"recflow.pipelines.{info.name}.params"):
            modules.append(importlib.import_module(f"recflow.pipelines.{info.name}.params"))
    return [obj for module in modules for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, BaseModel) and obj.__module__ == module.__name__
            and not obj.__name__.startswith("_")]


def _section(page: str, anchor: str) -> str:
    match = re.search(rf"\{{ #{re.escape(anchor)} \}}\n(.*?)(?=\n#{{2,3}} |\Z)", page, re.S)
    assert match, f"no section #{anchor} in the generated page"
    return match.group(1)


def test_every_field_of_every_typed_params_model_is_documented(pages) -> None:
    page = pages["parameters.md"]
    models = _typed_param_models()
    names = {m.__name__ for m in models}
    assert {"FeaturesConfig", "RankingParams", "ModelEntry", "TrainerConfig"} <= names
    for model in models:
        section = _section(page, model.__name__.lower())
        for field, info in model.model_fields.items():
            row = re.search(rf"^\| `{field}` \|.*$", section, re.M)
            assert row, f"{model.__name__}.{field} missing from the YAML reference"
            if info.description:
                assert " ".join(info.description.split())[:40] in row.group(0).replace("\\|", "|")


def test_every_parameters_file_has_its_block_documented(gen, pages) -> None:
    keys = {b.key for b in gen.parameter_blocks()}
    for path in sorted((REPO / "conf" / "base").glob("parameters_*.yml")):
        for key in yaml.safe_load(path.read_text()) or {}:
            assert key in keys, f"{path.name}: block '{key}' has no typed model in the reference"
            assert f"`{key}:`" in pages["parameters.md"]


def test_every_registered_component_is_in_the_model_zoo(gen, pages) -> None:
    page = pages["models.md"]
    registries = dict(gen.registries())
    from recflow.registry import MODELS

    assert registries["Ranking models"] is MODELS
    assert {"lr", "deepfm", "din"} <= set(MODELS.list())
    for registry in registries.values():
        for component in registry:
            assert f"| [`{component.name}`](#{registry.kind}-{component.name}) |" in page
            section = _section(page, f"{registry.kind}-{component.name}")
            for field in gen.fields_of(component.params):
                assert f"| `{field.name}` |" in section, (component.name, field.name)


def test_defaults_and_constraints_are_rendered(pages) -> None:
    trainer = _section(pages["parameters.md"], "trainerconfig")
    assert re.search(r"^\| `epochs` \| int \| `5` \| ≥ 1, ≤ 10000 \|", trainer, re.M)
    assert re.search(r"^\| `optimizer` \| `\"adam\"` \\\| `\"adamw\"` \| `\"adam\"` \|", trainer, re.M)
    ranking = _section(pages["parameters.md"], "rankingparams")
    assert re.search(r"^\| `models` \| .* \| \*\*required\*\* \| min length 1 \|", ranking, re.M)


def test_nav_hook_lists_every_page(gen, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# a")
    (tmp_path / "new_guide.md").write_text("# new")
    config = {"docs_dir": str(tmp_path), "nav": [{"Home": "a.md"}, {"Guides": ["x.md"]}]}
    assert gen.on_config(config)["nav"][1]["Guides"] == ["x.md", "new_guide.md"]


def test_mkdocs_nav_names_existing_pages() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    docs = REPO / "docs"

    def files(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from files(value)
        elif isinstance(node, list):
            for value in node:
                yield from files(value)

    generated = {"reference/parameters.md", "reference/models.md"}
    for page in files(config["nav"]):
        assert page in generated or (docs / page).exists(), page
