"""kedro-viz end to end: run `ranking` on tiny data, `kedro viz build`, open it in Chromium.

Needs Debian's `chromium` (apt-get install chromium chromium-driver) and the `playwright`
package of the dev extra, which drives the system browser (no `playwright install`).
Skipped only when /usr/bin/chromium is absent. The screenshot of the ranking DAG is saved
to docs/img/ranking_dag.png, which docs/viz.md shows.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from recflow.config_loader import replacing
from tests.conftest import REPO, make_project, run_kedro

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO / "docs" / "img" / "ranking_dag.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
MODELS = ("lr", "din")
UI_STATE = {"theme": "light", "showFeatureHints": False, "isPrettyName": False,
            "visible": {"miniMap": False, "sidebar": True, "code": False, "graph": True,
                        "slicing": True, "traceback": False}}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="Debian chromium not installed (apt-get install -y chromium)"),
]


def _viz_build_module():
    spec = importlib.util.spec_from_file_location("viz_build", REPO / "scripts" / "viz_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def viz_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project that ran `ranking` (so plots exist for previews), built with kedro-viz."""
    project = make_project(tmp_path_factory.mktemp("viz") / "project",
                           n_users=150, n_items=200, n_impressions=4000)
    local = project / "conf" / "local"
    local.mkdir(parents=True, exist_ok=True)
    trainer = {"epochs": 1, "batch_size": 512, "progress": False, "seed": 0}
    small = {"embed_dim": 4, "hidden": [8]}
    ranking = {"baseline": "lr", "trainer": trainer, "models": {
        "lr": {"name": "lr"},
        "din": {"name": "din", "params": {**small, "sequence_field": "hist_subcategory",
                                            "candidate_field": "subcategory"}},
    }}
    export = {"quantize": False, "latency": {"batches": [1], "repeats": 2, "warmup": 0,
                                             "budget_s": 0.1, "threads": 1}}
    (local / "parameters_ranking.yml").write_text(yaml.safe_dump(replacing({"ranking": ranking})))
    if (REPO / "conf" / "base" / "parameters_export.yml").exists():
        (local / "parameters_export.yml").write_text(yaml.safe_dump({"export": export}))
    run_kedro(project, "ranking")
    return _viz_build_module().build(project)


@pytest.fixture(scope="module")
def server(viz_site: Path) -> Iterator[str]:
    """`python -m http.server` on an ephemeral loopback port, serving the static site."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
         "-d", str(viz_site)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port 41234 (...)"
        port = int(line.split(" port ")[1].split()[0])
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/main", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="pip install -e '.[dev]' (playwright drives chromium)")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


class _Page:
    """A page that records console errors, page errors and off-machine requests."""

    def __init__(self, browser, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1600, "height": 1000},
                                           device_scale_factor=1)
        # kedro-viz's saved UI state: light theme, no feature tour, no minimap over the graph
        self.context.add_init_script(
            "if (!localStorage.getItem('KedroViz')) localStorage.setItem('KedroViz', "
            f"JSON.stringify({json.dumps(UI_STATE)}));")
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.external: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

        def guard(route) -> None:
            if route.request.url.startswith(base):
                route.continue_()
            else:  # nothing may leave the machine; recorded, then answered locally
                self.external.append(route.request.url)
                route.fulfill(status=204, body="")

        self.page.route("**/*", guard)

    def open(self, url: str) -> None:
        self.page.goto(url, wait_until="networkidle")
        self.page.wait_for_selector("svg .pipeline-node", timeout=30_000)
        self.page.wait_for_timeout(1500)  # layout + zoom-to-fit transitions
        close = self.page.locator(".feature-hints__close")
        if close.count() and close.first.is_visible():  # the tour, should it still show
            close.first.click()

    def node_labels(self) -> list[str]:
        return [t.strip() for t in self.page.locator("svg .pipeline-node text").all_text_contents()]


def test_ranking_dag_renders_without_console_errors(browser, server: str) -> None:
    page = _Page(browser, server)
    try:
        page.open(f"{server}/?pid=ranking&expandAllPipelines=true")
        labels = page.node_labels()
        # every model entry's namespaced nodes and datasets, and the shared report
        assert labels.count("train") >= len(MODELS), labels
        for name in MODELS:
            for dataset in (f"ranking.{name}.model", f"ranking.{name}.metrics"):
                assert dataset in labels, (dataset, labels)
        for expected in ("report_ranking", "ranking_metrics", "ranking_roc_plot",
                         "fit_feature_spec", "model_input_train"):
            assert expected in labels, (expected, labels)
        assert not page.errors, page.errors
        assert not page.external, f"requests leaving the machine: {page.external}"
    finally:
        page.context.close()


def test_ranking_dag_collapses_per_model_and_previews_plots(browser, server: str) -> None:
    page = _Page(browser, server)
    try:
        page.open(f"{server}/?pid=ranking")
        labels = page.node_labels()
        # one collapsed modular pipeline, `ranking`, holding one per YAML model entry
        assert "ranking" in labels, labels
        assert "train" not in labels, "namespaces should start collapsed"
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.page.screenshot(path=str(SCREENSHOT))

        page.page.locator("svg .pipeline-node", has_text="ranking_roc_plot").first.click()
        preview = page.page.locator(".pipeline-metadata img, .pipeline-metadata__plot img")
        preview.first.wait_for(state="visible", timeout=15_000)
        assert not page.errors, page.errors
        assert not page.external, f"requests leaving the machine: {page.external}"
    finally:
        page.context.close()


def test_viz_build_is_offline(viz_site: Path) -> None:
    index = (viz_site / "index.html").read_text()
    assert "fonts.googleapis.com" not in index
    assert (viz_site / "api" / "metadata").exists()
