"""No code runs from a data file: every model artefact in the catalog refuses a planted pickle.

A `--from-nodes` resume (or any later run) loads model files that anyone with write access
to `data/` could have swapped. The teacher used to be a `pickle.PickleDataset`, so a planted
`teacher.pkl` ran its code on load. Here every model-like catalog entry of conf/base (read
through Kedro's own config loader and catalog, `{name}` patterns resolved with a sample
name) gets a malicious file whose unpickling would create a marker file; loading it must
fail with an error naming the file, and the marker must not exist.
"""

from __future__ import annotations

import ast
import builtins
import copy
import functools
import hashlib
import io
import json
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, DatasetError

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
SAMPLE = "sample"
#: dataset types that hold a model (weights, graph, embedding matrix, serving bundle)
MODEL_TYPES = frozenset({
    "recflow.datasets.TorchModelDataset",
    "recflow.datasets.OnnxModelDataset",
    "recflow.datasets.NumpyArrayDataset",
    "recflow.datasets.ServingBundleDataset",
})
#: a file with one of these suffixes under the model layers is a model artefact
MODEL_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".joblib", ".onnx", ".npy",
                  ".npz")
MODEL_LAYERS = ("06_models", "07_model_output")
_PATTERN = re.compile(r"\{[^{}]+\}")


@functools.cache
def _load_catalog_config(env: str) -> dict[str, Any]:
    loader = OmegaConfigLoader(conf_source=str(CONF), base_env="base", default_run_env=env)
    return {k: v for k, v in loader["catalog"].items() if not k.startswith("_")}


def _catalog_config(env: str = "local") -> dict[str, Any]:
    return copy.deepcopy(_load_catalog_config(env))


def _types(config: Any) -> list[str]:
    """Every `type:` in an entry, nested ones (PartitionedDataset's `dataset`) included."""
    if isinstance(config, dict):
        own = [config["type"]] if isinstance(config.get("type"), str) else []
        return own + [t for v in config.values() for t in _types(v)]
    if isinstance(config, list):
        return [t for v in config for t in _types(v)]
    return []


def _is_model_like(config: dict[str, Any]) -> bool:
    if config.get("type") in MODEL_TYPES:
        return True
    filepath = str(config.get("filepath", ""))
    return any(f"/{layer}/" in f"/{filepath}" for layer in MODEL_LAYERS) \
        and filepath.endswith(MODEL_SUFFIXES)


def _model_entries() -> dict[str, dict[str, Any]]:
    return {name: cfg for name, cfg in _catalog_config().items()
            if isinstance(cfg, dict) and _is_model_like(cfg)}


MODEL_ENTRIES = _model_entries()


class _Payload:
    """Unpickling this runs `exec`, which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _raw_pickle(marker: Path) -> bytes:
    return pickle.dumps({"members": [_Payload(marker)], "model": _Payload(marker)}, protocol=2)


def _torch_zip(marker: Path, tmp: Path) -> bytes:
    """A real torch.save archive (what TorchModelDataset writes) with the payload inside."""
    path = tmp / "evil_archive.pt"
    torch.save({"model": "din", "params": {}, "feature_spec_hash": "x",
                "state_dict": {"w": torch.zeros(1)}, "extra": _Payload(marker)}, path)
    blob = path.read_bytes()
    path.unlink()
    return blob


MAKERS = {"raw_pickle": lambda marker, tmp: _raw_pickle(marker), "torch_zip": _torch_zip}


def _plant(dataset_type: str, path: Path, blob: bytes) -> None:
    if dataset_type != "recflow.datasets.ServingBundleDataset":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        return
    # a bundle directory whose manifest is genuine (checksums match) but whose model is not
    from recflow.serving.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, FILES, MANIFEST

    path.mkdir(parents=True, exist_ok=True)
    spec = b"{}"
    (path / FILES["model"]).write_bytes(blob)
    (path / FILES["feature_spec"]).write_bytes(spec)
    manifest = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
                "files": {"model": FILES["model"], "model_int8": None,
                          "feature_spec": FILES["feature_spec"]},
                "sha256": {FILES["model"]: hashlib.sha256(blob).hexdigest(),
                           FILES["feature_spec"]: hashlib.sha256(spec).hexdigest()}}
    (path / MANIFEST).write_text(json.dumps(manifest))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_model_entries_cover_every_model_artefact() -> None:
    """The parametrisation below is not vacuous: it holds the teacher and every model file."""
    names = set(MODEL_ENTRIES)
    assert "distillation_teacher" in names
    assert {"ranking.{name}.model", "distillation_student_kd", "distillation_student_plain",
            "retrieval.{name}.model", "semantic_ids.{name}.tokenizer", "export.{name}.onnx",
            "export.{name}.serving_bundle"} <= names
    for name, cfg in _catalog_config().items():
        if isinstance(cfg, dict) and "06_models/" in str(cfg.get("filepath", "")):
            assert name in names, f"{name}: a file under 06_models/ that this test misses"


@pytest.mark.parametrize("env", ["local"] + sorted(  # "local": conf/base alone
    p.name for p in CONF.iterdir() if p.is_dir() and p.name != "base" and any(p.glob("catalog*"))))
def test_no_catalog_entry_in_any_env_is_pickle_based(env: str) -> None:
    for name, cfg in _catalog_config(env).items():
        for kind in _types(cfg):
            assert not re.search(r"pickle|joblib|cloudpickle|dill", kind, re.IGNORECASE), \
                f"conf/{env}: catalog entry {name!r} is {kind}: loading it can run code"
        if isinstance(cfg, dict):
            assert not (cfg.get("load_args") or {}).get("allow_pickle"), \
                f"conf/{env}: catalog entry {name!r} loads with allow_pickle"


def _calls_torch_load(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch")


def test_the_source_never_unpickles() -> None:
    """No pickle-family loader in src/, and every torch.load is weights_only=True."""
    banned_modules = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve",
                      "marshal"}
    problems = []
    for path in sorted((REPO / "src").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                    else [node.module or ""]
                bad = [n for n in names if n.split(".")[0] in banned_modules]
                if bad:
                    problems.append(f"{where}:{node.lineno} imports {bad}")
            elif _calls_torch_load(node):
                kw = {k.arg: k.value for k in node.keywords}
                safe = kw.get("weights_only")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    problems.append(f"{where}:{node.lineno} torch.load without weights_only=True")
            elif isinstance(node, ast.Attribute) and node.attr in ("read_pickle", "to_pickle"):
                problems.append(f"{where}:{node.lineno} uses {node.attr}")
            elif isinstance(node, ast.keyword) and node.arg == "allow_pickle" \
                    and not (isinstance(node.value, ast.Constant) and node.value.value is False):
                problems.append(f"{where}:{node.lineno} allow_pickle not False")
    assert not problems, "\n".join(problems)


def _cases() -> list[Any]:
    cases = []
    for name in sorted(MODEL_ENTRIES):
        for kind in MAKERS:
            cases.append(pytest.param(name, kind, id=f"{name}-{kind}"))
    return cases


@pytest.mark.parametrize(("entry", "kind"), _cases())
def test_a_planted_pickle_is_refused_naming_the_file_and_runs_nothing(
        entry: str, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)  # catalog filepaths are relative (data/...): all under tmp
    marker = tmp_path / "PWNED"
    catalog = DataCatalog.from_config(_catalog_config())
    dataset_name = _PATTERN.sub(SAMPLE, entry)
    dataset = catalog.get(dataset_name)
    assert dataset is not None, f"{entry}: {dataset_name} does not resolve"
    filepath = Path(str(dataset._describe()["filepath"]))
    assert SAMPLE in str(filepath) or not _PATTERN.search(entry)
    assert project in (project / filepath).resolve().parents  # never plant inside the repo

    blob = MAKERS[kind](marker, tmp_path)
    assert not marker.exists()
    # the payload is live: loading it the unsafe way does run it
    if kind == "raw_pickle":
        pickle.loads(blob)
    else:
        torch.load(io.BytesIO(blob), weights_only=False)
    assert marker.exists()
    marker.unlink()
    _plant(MODEL_ENTRIES[entry]["type"], filepath, blob)
    before = _snapshot(project)

    with pytest.raises(DatasetError) as err:
        catalog.load(dataset_name)

    message = str(err.value)
    assert str(filepath) in message, f"{entry}: the error does not name the file:\n{message}"
    assert "weights_only=False" not in message
    assert not marker.exists(), f"{entry}: loading {filepath} ran code from it"
    assert _snapshot(project) == before, f"{entry}: loading changed files"


def test_torch_model_dataset_refuses_a_corrupt_file_naming_it(tmp_path: Path) -> None:
    from recflow.datasets import TorchModelDataset

    for blob in (b"", b"not a model", b"PK\x03\x04 truncated zip"):
        path = tmp_path / "model.pt"
        path.write_bytes(blob)
        with pytest.raises(DatasetError, match="refused to load") as err:
            TorchModelDataset(filepath=str(path)).load()
        assert str(path) in str(err.value) and "weights_only" not in str(err.value)
        assert err.value.__cause__ is None  # torch's "retry with weights_only=False" is not chained


def test_torch_model_dataset_refuses_plain_data_that_is_not_a_payload(tmp_path: Path) -> None:
    from recflow.datasets import TorchModelDataset

    path = tmp_path / "model.pt"
    for data, match in (([1, 2], "is a list, not a dict"), ({"model": "din"}, "lacks keys"),
                        ({"members": [], "tasks": [], "feature_spec_hash": "x"}, "non-empty"),
                        ({"members": [{"model": "din"}], "tasks": [], "feature_spec_hash": "x"},
                         r"members\[0\] lacks keys")):
        torch.save(data, path)
        with pytest.raises(DatasetError, match=match) as err:
            TorchModelDataset(filepath=str(path)).load()
        assert str(path) in str(err.value)


def test_a_teacher_bundle_round_trips_weights_only(tmp_path: Path) -> None:
    from recflow.datasets import TorchModelDataset

    member = {"name": "din", "model": "din", "params": {"dim": 4, "tower": [8, 4]},
              "state_dict": {"w": torch.arange(3.0)}, "feature_spec_hash": "abc",
              "tasks": ["click"], "recflow_version": "0"}
    bundle = {"members": [member, dict(member)], "tasks": ["click"], "feature_spec_hash": "abc",
              "params": 6}
    dataset = TorchModelDataset(filepath=str(tmp_path / "teacher.pt"))
    dataset.save(bundle)
    loaded = dataset.load()
    assert loaded["tasks"] == ["click"] and loaded["params"] == 6
    assert torch.equal(loaded["members"][1]["state_dict"]["w"], torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["teacher.pt"]  # no .tmp left behind
    with pytest.raises(DatasetError, match=r"members\[0\] lacks keys"):
        dataset.save({**bundle, "members": [{"model": "din"}]})
