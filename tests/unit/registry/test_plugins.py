"""Entry-point plugins: broken ones warn clearly and never break built-ins.

Each test builds a real (fake) installed distribution, a `<dist>.dist-info`
directory with METADATA and entry_points.txt plus a module, on sys.path, so
importlib.metadata discovers it exactly as it would a pip-installed plugin.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from recflow.features import FeatureSpec, FieldSpec
from recflow.registry import (
    MODELS,
    PluginWarning,
    Registry,
    RegistryError,
    load_plugins,
    normalize_dist,
    plugin_records,
)

REPO = Path(__file__).resolve().parents[3]

# A module holding one component of each shape the tests need.
PLUGIN_SOURCE = '''
import dataclasses

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from recflow.models import RankingModel


class GoodParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = 1.0


class Good(RankingModel):
    """A one-weight model over the first field."""

    params_schema = GoodParams

    def __init__(self, spec, params):
        super().__init__(spec)
        self.scale = params.scale
        self.w = nn.Linear(1, 1)

    @property
    def input_names(self):
        return ["price"]

    def forward(self, inputs):
        return self.w(inputs["price"].unsqueeze(1)) * self.scale


class NoSchema(Good):
    params_schema = None


class BadSchema(Good):
    params_schema = {"scale": float}


class NoForward(RankingModel):
    params_schema = GoodParams


class NotAModule:
    params_schema = GoodParams


def a_function(spec, params):
    return Good(spec, GoodParams())


a_function.params_schema = GoodParams
AN_INSTANCE = GoodParams()


@dataclasses.dataclass
class LossParams:
    alpha: float = 0.25


def focal_loss(params):
    return lambda logits, target: torch.tensor(params.alpha)


focal_loss.params_schema = LossParams
'''


def make_dist(root: Path, name: str, entry_points: dict[str, dict[str, str]],
              modules: dict[str, str]) -> None:
    """Write an installed distribution `name` 0.1 with `entry_points` and `modules` under root."""
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = []
    for group, eps in entry_points.items():
        lines += [f"[{group}]", *(f"{k} = {v}" for k, v in eps.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(install, mod): install(name, {group: {ep: target}}) puts a fake dist on sys.path;
    `mod` is a fresh module name holding PLUGIN_SOURCE's components."""
    MODELS.list()  # the real registry discovers before the fakes exist, so it never sees them
    mod = f"fake_recflow_plugin_{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{mod}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(site))

    def install(name: str, entry_points: dict[str, dict[str, str]],
                modules: dict[str, str] | None = None) -> None:
        make_dist(site, name, entry_points, modules or {})

    yield install, mod
    for name in [m for m in sys.modules if m.startswith("fake_recflow_")]:
        monkeypatch.delitem(sys.modules, name)


def fresh_models() -> Registry:
    """A models registry like MODELS: built-ins first (copied from MODELS), then plugins."""
    builtins = [c for c in MODELS if c.source == "recflow"]
    registry = Registry("models", builtins=lambda r: [r.add(c) for c in builtins],
                        plugin_group="recflow.models", loader=load_plugins)
    registry.contract = MODELS.contract  # the RankingModelProtocol contract, as MODELS has it
    return registry


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return FeatureSpec(
        fields=[
            FieldSpec("item_id", "categorical", "vocab", {}, ["item_id"], vocab_size=10),
            FieldSpec("price", "numeric", "standardize", {}, ["price"]),
        ],
        labels=["click"],
    )


def inputs() -> dict[str, torch.Tensor]:
    return {"item_id": torch.tensor([1, 2, 3]), "price": torch.tensor([0.1, -1.0, 2.0])}


def assert_builtins_work(registry: Registry, spec: FeatureSpec) -> None:
    assert {"lr", "deepfm", "dcnv2"} <= set(registry.list())
    for name in ("lr", "deepfm"):
        model = registry.create(name, spec, params={})
        assert model(inputs()).shape == (3, 1)


def discover(registry: Registry) -> str:
    """Trigger discovery; all PluginWarnings it raised, joined."""
    with pytest.warns(PluginWarning) as caught:
        registry.list()
    return "\n".join(str(w.message) for w in caught if issubclass(w.category, PluginWarning))


def test_import_error_warns_naming_entry_point_and_distribution(plugin_env, spec) -> None:
    install, mod = plugin_env
    install("acme-broken", {"recflow.models": {
        "ghost": "fake_recflow_missing_module:Model",
        "boom": "fake_recflow_boom:Model",
    }}, modules={"fake_recflow_boom": "raise RuntimeError('CUDA 13 required')\n"})
    registry = fresh_models()
    messages = discover(registry)
    assert ("entry point 'ghost = fake_recflow_missing_module:Model' (group recflow.models) of "
            "distribution 'acme-broken 0.1': import failed: ModuleNotFoundError") in messages
    assert "'boom = fake_recflow_boom:Model'" in messages
    assert "RuntimeError: CUDA 13 required" in messages
    assert_builtins_work(registry, spec)
    with pytest.raises(RegistryError, match=r"model 'boom' is not available: .*acme-broken"
                                            r".*CUDA 13 required"):
        registry.get("boom")


@pytest.mark.parametrize(("statement", "error"), [
    ("import sys\nsys.exit(0)\n", "SystemExit: 0"),
    ("raise SystemExit('plugin says bye')\n", "SystemExit: plugin says bye"),
    ("raise GeneratorExit\n", "GeneratorExit"),
    ("raise ValueError('bad config')\n", "ValueError: bad config"),
])
def test_a_plugin_exiting_or_raising_at_import_is_skipped_naming_its_distribution(
        plugin_env, spec, caplog: pytest.LogCaptureFixture, statement: str, error: str) -> None:
    """`sys.exit(0)` in a plugin's import used to end `kedro run` with status 0, having done
    nothing (and `recflow list` printed nothing): it is one more broken plugin now."""
    install, mod = plugin_env
    install("acme-exit", {"recflow.models": {"quitter": "fake_recflow_quit:Model",
                                             "sibling": f"{mod}:Good"}},
            modules={"fake_recflow_quit": statement})
    install("acme-fine", {"recflow.models": {"fine": f"{mod}:Good"}})
    registry = fresh_models()
    with caplog.at_level("WARNING", logger="recflow.plugins"):
        messages = discover(registry)  # returns: nothing escaped
    where = ("entry point 'quitter = fake_recflow_quit:Model' (group recflow.models) of "
             "distribution 'acme-exit 0.1'")
    assert f"{where}: import failed: {error}" in messages
    # the other entry point of the same distribution, other plugins and built-ins all load
    assert {"sibling", "fine"} <= set(registry.list()) and "quitter" not in registry.list()
    assert registry.get("sibling").source == "acme-exit"
    assert_builtins_work(registry, spec)
    with pytest.raises(RegistryError, match=r"model 'quitter' is not available: entry point "
                                            r".*'acme-exit 0\.1' failed to load: import failed: "
                                            + re.escape(error)):
        registry.get("quitter")
    record = next(r for r in reversed(plugin_records())  # the latest: parametrised reruns
                  if r.entry_point == "quitter = fake_recflow_quit:Model")
    assert record.distribution == "acme-exit 0.1" and record.registered_as is None
    assert error in record.problem
    logged = [r.getMessage() for r in caplog.records if r.name == "recflow.plugins"
              and r.levelname == "WARNING"]
    if error.startswith("ValueError"):
        assert not logged  # an ordinary exception: the PluginWarning alone
    else:  # an exit would otherwise be silent: a logged warning names entry point and dist
        assert any(where in m and error in m for m in logged), logged


def test_keyboard_interrupt_in_a_plugin_import_still_interrupts(plugin_env) -> None:
    install, mod = plugin_env
    install("acme-ctrlc", {"recflow.models": {"ctrlc": "fake_recflow_ctrlc:Model"}},
            modules={"fake_recflow_ctrlc": "raise KeyboardInterrupt\n"})
    with pytest.raises(KeyboardInterrupt):
        fresh_models().list()


@pytest.mark.slow  # spawns a Python process
def test_a_plugin_calling_sys_exit_does_not_end_the_process(tmp_path: Path) -> None:
    """In a fresh interpreter, as `kedro run` / `recflow list` would meet it."""
    site = tmp_path / "site"
    make_dist(site, "acme-quits", {"recflow.models": {"quits": "fake_recflow_quits:X"}},
              {"fake_recflow_quits": "import sys\nsys.exit(0)\n"})
    script = textwrap.dedent("""
        import sys
        from recflow.registry import MODELS
        names = MODELS.list()
        print("listed", len(names), "lr" in names, "quits" in names)
        sys.exit(3)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get(
        "PYTHONPATH", "")]).rstrip(os.pathsep)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 3, (done.stdout, done.stderr)  # the script ran to its own end
    assert "True False" in done.stdout
    assert "distribution 'acme-quits 0.1': import failed: SystemExit: 0" in done.stderr


def test_clash_with_builtin_registers_qualified_name_and_warns(plugin_env, spec) -> None:
    install, mod = plugin_env
    install("Acme_Models", {"recflow.models": {"lr": f"{mod}:Good"}})
    registry = fresh_models()
    messages = discover(registry)
    assert (f"entry point 'lr = {mod}:Good' (group recflow.models) of distribution "
            "'Acme_Models 0.1'") in messages
    assert "clashes with the built-in model" in messages
    assert "registered it as 'acme-models:lr'" in messages
    # the built-in keeps its name, untouched; the plugin's model is there, qualified
    assert registry.get("lr").source == "recflow"
    assert registry.get("lr").target is MODELS.get("lr").target
    plugin = registry.get("acme-models:lr")
    assert plugin.source == "acme-models" and plugin.target.__name__ == "Good"
    model = registry.create("acme-models:lr", spec, params={"scale": 2.0})
    assert model(inputs()).shape == (3, 1)
    assert_builtins_work(registry, spec)


def test_missing_or_invalid_parameter_schema(plugin_env, spec) -> None:
    install, mod = plugin_env
    install("acme-schemaless", {"recflow.models": {
        "noschema": f"{mod}:NoSchema", "badschema": f"{mod}:BadSchema"}})
    registry = fresh_models()
    messages = discover(registry)
    assert (f"entry point 'noschema = {mod}:NoSchema' (group recflow.models) of distribution "
            f"'acme-schemaless 0.1': model class '{mod}.NoSchema' has no parameter schema: set "
            "the class attribute `params_schema = <pydantic BaseModel or dataclass>`") in messages
    assert (f"model class '{mod}.BadSchema' has a `params_schema` that is not a pydantic "
            "BaseModel subclass or a dataclass") in messages
    assert "noschema" not in registry.list() and "badschema" not in registry.list()
    with pytest.raises(RegistryError, match="has no parameter schema"):
        registry.get("noschema")
    assert_builtins_work(registry, spec)


@pytest.mark.parametrize(("target", "problem"), [
    ("{mod}", "module 'fake_recflow_plugin_.*' is not a model component: a model must be a "
              "class"),
    ("{mod}:a_function", "function '.*a_function' is not a model component: a model must be a "
                         "class"),
    ("{mod}:AN_INSTANCE", "GoodParams instance .* is not a model component"),
    ("{mod}:NotAModule", "class '.*NotAModule' is not a model component: a model class must "
                         "subclass torch.nn.Module"),
    ("{mod}:NoForward", "class '.*NoForward' is not a model component: it does not implement "
                        "forward"),
])
def test_entry_point_that_is_not_a_component(plugin_env, spec, target: str,
                                             problem: str) -> None:
    install, mod = plugin_env
    install("acme-odd", {"recflow.models": {"odd": target.format(mod=mod)}})
    registry = fresh_models()
    messages = discover(registry)
    assert "entry point 'odd = " in messages and "distribution 'acme-odd 0.1'" in messages
    assert re.search(problem, messages), messages
    assert "odd" not in registry.list()
    assert_builtins_work(registry, spec)


def test_a_good_plugin_is_registered_with_its_source(plugin_env, spec) -> None:
    install, mod = plugin_env
    install("acme-good", {"recflow.models": {"good": f"{mod}:Good"}})
    registry = fresh_models()
    registry.list()
    component = registry.get("good")
    assert component.source == "acme-good"
    assert component.summary == "A one-weight model over the first field."
    with pytest.raises(RegistryError, match="unknown key.*'sclae'"):
        registry.create("good", spec, params={"sclae": 2})
    assert registry.create("good", spec, params={"scale": 3}).scale == 3.0
    record = next(r for r in plugin_records() if r.entry_point == f"good = {mod}:Good")
    assert (record.distribution, record.registered_as, record.problem) == (
        "acme-good 0.1", "good", None)


def test_two_plugins_with_the_same_new_name_are_both_qualified(plugin_env, spec) -> None:
    install, mod = plugin_env
    install("acme-a", {"recflow.models": {"twin": f"{mod}:Good"}})
    install("acme-b", {"recflow.models": {"twin": "fake_recflow_twin_b:TwinB"}},
            modules={"fake_recflow_twin_b": f"from {mod} import Good\n\n\n"
                                            "class TwinB(Good):\n    pass\n"})
    registry = fresh_models()
    messages = discover(registry)
    assert "provided by several plugins" in messages
    assert {"acme-a:twin", "acme-b:twin"} <= set(registry.list())
    assert "twin" not in registry.list()
    with pytest.raises(RegistryError, match="use one of 'acme-a:twin', 'acme-b:twin'"):
        registry.get("twin")
    assert_builtins_work(registry, spec)


def test_discovery_is_lazy_happens_once_and_reloading_is_idempotent(plugin_env) -> None:
    install, mod = plugin_env
    install("acme-lazy", {"recflow.models": {"lazy": f"{mod}:Good"}})
    registry = fresh_models()
    assert mod not in sys.modules  # nothing imported before the first lookup
    assert "lazy" in registry
    assert mod in sys.modules
    install("acme-later", {"recflow.models": {"later": f"{mod}:Good"}})
    assert "later" not in registry  # discovery ran once; lookups do not rescan
    records = load_plugins(registry)  # e.g. after pip install in a running interpreter
    assert [r.registered_as for r in records] == ["later"]  # acme-lazy is not loaded twice
    assert load_plugins(registry) == []
    assert registry.get("later").source == "acme-later"


def test_invalid_entry_point_name(plugin_env) -> None:
    install, mod = plugin_env
    install("acme-colon", {"recflow.models": {"acme:good": f"{mod}:Good"}})
    registry = fresh_models()
    assert "reserved for qualified names" in discover(registry)
    assert "acme:good" not in registry.list()


def test_other_kinds_take_classes_or_factories(plugin_env) -> None:
    install, mod = plugin_env
    install("acme-losses", {"recflow.losses": {"focal": f"{mod}:focal_loss",
                                               "notaloss": f"{mod}"}})
    losses = Registry("losses", plugin_group="recflow.losses", loader=load_plugins)
    assert (f"module '{mod}' is not a loss component: expected a class or a factory "
            "function") in discover(losses)
    assert losses.list() == ["focal"]
    loss = losses.create("focal", params={"alpha": 0.5})
    assert float(loss(None, None)) == 0.5


def test_normalize_dist() -> None:
    assert normalize_dist("Recflow_Final.MLP") == "recflow-final-mlp"


@pytest.mark.slow  # spawns a Python process
def test_real_registries_load_builtins_then_plugins_and_survive_broken_ones(
        tmp_path: Path) -> None:
    """In a fresh interpreter: the module-level registries, a clash and a broken plugin."""
    mod = f"fake_recflow_plugin_{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{mod}.py").write_text(PLUGIN_SOURCE)
    make_dist(site, "acme-mixed", {"recflow.models": {
        "good_one": f"{mod}:Good", "deepfm": f"{mod}:Good", "broken": "fake_recflow_nope:X",
    }}, {})
    script = textwrap.dedent(f"""
        import json, sys, warnings
        warnings.simplefilter("always")
        from recflow.registry import MODELS
        assert "{mod}" not in sys.modules
        names = MODELS.list()
        print(json.dumps({{"names": names, "deepfm": MODELS.get("deepfm").source,
                          "qualified": MODELS.get("acme-mixed:deepfm").source}}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get(
        "PYTHONPATH", "")]).rstrip(os.pathsep)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"lr", "fm", "deepfm", "dcnv2", "din", "esmm", "good_one",
            "acme-mixed:deepfm"} <= set(out["names"])
    assert "broken" not in out["names"]
    assert (out["deepfm"], out["qualified"]) == ("recflow", "acme-mixed")
    assert "PluginWarning" in done.stderr
    assert "'broken = fake_recflow_nope:X'" in done.stderr
    assert "distribution 'acme-mixed 0.1'" in done.stderr
    assert "registered it as 'acme-mixed:deepfm'" in done.stderr


def test_every_kind_checks_what_its_pipeline_calls() -> None:
    """The contracts the real registries check, one refusal and one acceptance per kind."""
    from recflow.models.ranking.lr import LogisticRegression
    from recflow.models.retrieval import Retriever
    from recflow.registry import ITEM_ENCODERS, LOSSES, RETRIEVAL_MODELS, TOKENIZERS
    from recflow.tokenization.quantizers import RQKMeans
    from recflow.training.distillation import DistillTerm

    for registry in (MODELS, RETRIEVAL_MODELS, TOKENIZERS, ITEM_ENCODERS, LOSSES):
        registry.list()  # the built-ins set each contract
    assert MODELS.contract(LogisticRegression) == ""
    assert "subclass torch.nn.Module" in MODELS.contract(type("NotAModule", (), {}))

    class HalfRetriever(Retriever):
        def fit(self, data):  # no recommend
            return self
    assert ("does not implement recommend(histories, k, exclude=None) of the retrieval model "
            "contract recflow.models.retrieval.RetrieverProtocol"
            in RETRIEVAL_MODELS.contract(HalfRetriever))
    assert "subclassing" in RETRIEVAL_MODELS.contract(lambda params: None)
    assert TOKENIZERS.contract(RQKMeans) == ""
    assert "ResidualTokenizer" in TOKENIZERS.contract(type("Tok", (), {}))
    assert ITEM_ENCODERS.contract(ITEM_ENCODERS.get("tfidf_svd").target) == ""
    assert "fit_transform" in ITEM_ENCODERS.contract(type("Enc", (), {"state": 1}))
    assert LOSSES.contract(LOSSES.get("kd_bce").target) == ""
    assert "DistillTerm" in LOSSES.contract(lambda params: None)
    assert "__call__" in LOSSES.contract(type("Term", (DistillTerm,), {}))


def _kinds() -> list[tuple[str, Registry]]:
    from recflow.registry import ALL

    for _, registry in ALL:
        registry.list()  # importing the built-ins sets each contract
    return list(ALL)


def test_every_kind_has_a_protocol_contract_every_builtin_meets() -> None:
    for title, registry in _kinds():
        contract = registry.contract
        assert contract is not None, title
        assert not isinstance(object(), contract.protocol), title  # runtime_checkable
        assert contract.members, title
        for component in registry:
            assert contract(component.target) == "", (title, component.name)


def test_protocol_members_are_what_the_protocol_declares() -> None:
    from typing import Protocol, runtime_checkable

    from recflow.models import RankingModelProtocol
    from recflow.registry import protocol_members
    from recflow.training.distillation import DistillTermProtocol

    assert protocol_members(RankingModelProtocol) == (
        "forward", "input_names", "loss", "predict", "score_names", "tasks")
    assert protocol_members(DistillTermProtocol) == ("__call__",)

    @runtime_checkable
    class Sized(Protocol):
        size: int

    @runtime_checkable
    class Shaped(Sized, Protocol):
        def reshape(self, n: int) -> None: ...

    assert protocol_members(Shaped) == ("reshape", "size")


def test_instances_satisfy_their_runtime_checkable_protocol(spec) -> None:
    from recflow.models import RankingModelProtocol
    from recflow.models.retrieval import RetrieverProtocol
    from recflow.registry import ITEM_ENCODERS, LOSSES, RETRIEVAL_MODELS, TOKENIZERS
    from recflow.tokenization import ItemEncoderProtocol, TokenizerProtocol
    from recflow.training.distillation import DistillTermProtocol

    assert isinstance(MODELS.create("lr", spec, params={}), RankingModelProtocol)
    assert isinstance(RETRIEVAL_MODELS.create("popularity", params={}), RetrieverProtocol)
    assert isinstance(TOKENIZERS.create("rq_kmeans", params={}), TokenizerProtocol)
    assert isinstance(ITEM_ENCODERS.create("tfidf_svd", params={"text_columns": ["title"]}),
                      ItemEncoderProtocol)
    assert isinstance(LOSSES.create("kd_bce", params={}), DistillTermProtocol)
    assert not isinstance(object(), RetrieverProtocol)


def test_the_register_decorator_checks_the_contract() -> None:
    """Built-ins go through the same check as plugins, when their decorator runs."""
    from pydantic import BaseModel

    from recflow.models.retrieval import Retriever
    from recflow.registry import RETRIEVAL_MODELS

    class NoParams(BaseModel):
        pass

    with pytest.raises(RegistryError, match=r"retrieval model 'half' from recflow cannot be "
                                            r"registered: it does not implement recommend\("):
        @RETRIEVAL_MODELS.register("half", params=NoParams)
        class Half(Retriever):
            def fit(self, data):
                return self
    assert "half" not in RETRIEVAL_MODELS.list()
    with pytest.raises(RegistryError, match="a model must be a class subclassing "
                                            "torch.nn.Module"):
        MODELS.register("a_function", params=NoParams)(lambda spec, params: None)


def test_set_contract_checks_what_was_registered_before_it() -> None:
    from pydantic import BaseModel

    from recflow.training.distillation import DistillTerm, DistillTermProtocol

    class NoParams(BaseModel):
        pass

    registry = Registry("losses")
    registry.register("bare", params=NoParams)(type("Bare", (DistillTerm,), {}))  # no contract yet
    with pytest.raises(RegistryError, match=r"loss 'bare' .* does not implement __call__\("):
        registry.set_contract(DistillTermProtocol, base=DistillTerm, stubs=("__call__",))
    assert registry.find("bare") is None


def test_a_plugin_of_another_kind_lacking_a_member_is_skipped(plugin_env) -> None:
    install, mod = plugin_env
    install("acme-tok", {"recflow.tokenizers": {"halftok": "fake_recflow_tok:HalfTok"}},
            modules={"fake_recflow_tok": (
                "from pydantic import BaseModel\n"
                "from recflow.tokenization.quantizers import ResidualTokenizer\n\n\n"
                "class HalfTok(ResidualTokenizer):\n"
                "    params_schema = BaseModel\n\n"
                "    def fit(self, x):\n"
                "        return self\n")})
    from recflow.registry import TOKENIZERS

    tokenizers = Registry("tokenizers", plugin_group="recflow.tokenizers", loader=load_plugins)
    tokenizers.contract = TOKENIZERS.contract
    messages = discover(tokenizers)
    assert ("is not a tokenizer component: it does not implement encode(x), load_state(state), "
            "reconstruct(codes, levels=None), state() of the tokenizer contract "
            "recflow.tokenization.TokenizerProtocol") in messages
    assert tokenizers.list() == []


def _doc_section(doc: str, title: str) -> str:
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^##)", doc, re.S | re.M)
    assert match, f"docs/plugins.md has no '### {title}' section"
    return match.group(1)


def test_docs_contract_tables_match_the_protocols() -> None:
    """docs/plugins.md lists, per kind, exactly the Protocol's members, marks as required
    exactly those the base class leaves to the component, and names the Protocol."""
    from recflow.registry.core import public_name

    doc = (REPO / "docs" / "plugins.md").read_text()
    for title, registry in _kinds():
        contract = registry.contract
        section = _doc_section(doc, title)
        assert f"`{public_name(contract.protocol)}`" in section, (title, "names no Protocol")
        rows = re.findall(r"^\| `(\w+)[^|]*\| ([^|]*) \|", section, re.M)
        documented = {name: required.strip() for name, required in rows if name != "__init__"}
        assert set(documented) == set(contract.members), (title, sorted(documented))
        required = {name for name, flag in documented.items() if flag == "yes"}
        assert required == set(contract.required()), (title, sorted(required))
