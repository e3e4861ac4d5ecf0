"""Export & serving benchmark: torch eager vs onnxruntime fp32 vs int8, and the HTTP service.

    python benchmarks/bench_export.py                 # train the default models first (temp project)
    python benchmarks/bench_export.py --project .     # use a project's trained models

Per model (the entries of `ranking.models`):

1. the export node itself (`recflow.pipelines.export.nodes.export_model_int8`):
   torch.onnx export, parity on the whole test split, onnxruntime optimisation,
   dynamic int8 quantisation and its AUC cost, and the latency table: p50/p99 per
   call at batch 1/64/1024 of torch eager, onnxruntime fp32 and onnxruntime int8,
   all pinned to the same number of intra-op threads (`--threads`, default 1);
2. the serving path end to end: `Scorer.score` on raw test records (validation +
   transforms + onnxruntime) at the same batch sizes, timed in interleaved pairs with
   the bare onnxruntime session on the very feeds the scorer builds for those records
   (`scorer.feeds`): the ratio is the scorer's whole overhead over the model.

The HTTP service is measured by `benchmarks/bench_serving_http.py` (`--keep-bundles DIR`
leaves the bundles here for it).

Without --project, a temp project is made from conf/ and the embedded raw data
and `kedro run --pipelines=ranking` trains the default models (`--epochs` caps the
epochs to keep it short). Results: benchmarks/results/export.json and the
`## Export and serving` section of docs/benchmarks.md (other sections untouched).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _docs import cpu_name, write_section

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results/export.json"
DOC = REPO / "docs/benchmarks.md"
SECTION = "Export and serving"
VARIANTS = ("torch", "ort_fp32", "ort_int8")


# ---- a trained project ---------------------------------------------------------------------
def train_project(workdir: Path, epochs: int | None) -> Path:
    """Copy conf/ + the embedded raw data and run `ranking` in-process (as `kedro run` would)."""
    import yaml
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = workdir / "project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    for name in ("pyproject.toml", ".telemetry"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "conf", project / "conf")
    (project / "src").mkdir()
    raw = project / "data/01_raw"
    raw.mkdir(parents=True)
    for table in ("interactions", "users", "items"):
        shutil.copy(REPO / f"data/01_raw/{table}.parquet", raw / f"{table}.parquet")
    ranking = yaml.safe_load((REPO / "conf/base/parameters_ranking.yml").read_text())
    ranking["ranking"]["trainer"].update(progress=False, checkpoint_dir=None)
    if epochs is not None:
        ranking["ranking"]["trainer"]["epochs"] = epochs
    local = project / "conf/local"
    local.mkdir(parents=True, exist_ok=True)
    (local / "parameters_ranking.yml").write_text(yaml.safe_dump(ranking))
    # if the export tail is wired into `ranking`, keep its own latency pass short
    (local / "parameters_export.yml").write_text(yaml.safe_dump(
        {"export": {"latency": {"batches": [1], "repeats": 5, "warmup": 1}}}))

    cwd = os.getcwd()
    os.chdir(project)
    os.environ.pop("KEDRO_ENV", None)
    try:
        bootstrap_project(project)
        started = time.perf_counter()
        with KedroSession.create(project_path=project) as session:
            session.run(pipeline_name="ranking")
        print(f"trained in {time.perf_counter() - started:.0f} s: {project}", flush=True)
    finally:
        os.chdir(cwd)
    return project


def model_names(project: Path) -> list[str]:
    import yaml

    names: list[str] = []
    for env in ("base", "local"):
        path = project / f"conf/{env}/parameters_ranking.yml"
        if path.exists():
            names = list((yaml.safe_load(path.read_text()) or {}).get("ranking", {})
                         .get("models", {})) or names
    return [n for n in names if (project / f"data/06_models/ranking/{n}.pt").exists()]


def raw_test_records(project: Path, spec: Any) -> Any:
    """Raw joined columns of the test split with histories as lists: what clients send."""
    import pandas as pd
    import yaml

    from recflow.datasets.declaration import load_declaration
    from recflow.datasets.prepare import join_tables, prepare_log, prepare_side
    from recflow.features.records import raw_records

    params = yaml.safe_load((project / "conf/base/parameters_dataset.yml").read_text())
    decl = load_declaration(params)
    raw = {n: pd.read_parquet(project / f"data/01_raw/{n}.parquet")
           for n in ("interactions", "users", "items")}
    events = join_tables(prepare_log(decl, {"raw_interactions": raw["interactions"]}), decl,
                         {"users": prepare_side(decl, "users", raw["users"]),
                          "items": prepare_side(decl, "items", raw["items"])})
    return raw_records(events, spec)


# ---- per model -----------------------------------------------------------------------------
def bench_model(project: Path, name: str, records: Any, bundles: Path,
                args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd
    import torch

    from recflow.datasets.onnx_model import ServingBundleDataset
    from recflow.export.params import ExportParams
    from recflow.pipelines.export import nodes
    from recflow.serving import Scorer
    from recflow.serving.schema import OUTPUT_NAME

    spec_dict = json.loads((project / "data/05_model_input/feature_spec.json").read_text())
    test = pd.read_parquet(project / "data/05_model_input/test.parquet")
    payload = torch.load(project / f"data/06_models/ranking/{name}.pt", weights_only=True)
    metrics_path = project / f"data/08_reporting/ranking/{name}_metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    params = ExportParams.model_validate({"latency": {
        "batches": args.batches, "repeats": args.repeats, "warmup": args.warmup,
        "threads": args.threads, "budget_s": args.budget_s}})
    _, _, bundle, summary = nodes.export_model_int8(payload, spec_dict, test, metrics, params,
                                                    name=name)
    ServingBundleDataset(str(bundles / name)).save(bundle)

    scorer = Scorer.from_bundle(bundles / name, threads=args.threads)
    needed = records[list(scorer.raw_schema)]
    served, bare = {}, {}
    for batch in args.batches:
        rows = needed.iloc[np.arange(batch) % len(needed)].to_dict("records")
        feeds = scorer.feeds(rows)
        served[str(batch)], bare[str(batch)] = timed_pair(
            lambda r=rows: scorer.score(r),
            lambda f=feeds: scorer.session.run([OUTPUT_NAME], f), args)
    print(f"{name}: max|onnx-torch| {summary['max_abs_diff']:.1e} on {summary['rows']} rows, "
          f"int8 AUC delta {summary['quantized_auc_delta']:+.5f}", flush=True)
    keep = ("model", "rows", "max_abs_diff", "max_abs_diff_unoptimized", "opset",
            "graph_optimization", "auc_fp32", "auc_int8", "quantized_auc_delta",
            "quantized_max_abs_diff", "onnx_bytes", "onnx_int8_bytes", "latency")
    return {**{k: summary.get(k) for k in keep}, "scorer": served, "ort_same_feeds": bare}


def timed_pair(first: Any, second: Any, args: argparse.Namespace
               ) -> tuple[dict[str, float], dict[str, float]]:
    """p50/p99 ms of two calls timed alternately (same load for both), within the budget."""
    for _ in range(args.warmup):
        first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    deadline = time.perf_counter() + args.budget_s
    for _ in range(args.repeats):
        for call, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            call()
            out.append((time.perf_counter() - start) * 1e3)
        if time.perf_counter() > deadline:
            break
    return tuple({"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)),
                  "calls": len(t)} for t in times)


# ---- report --------------------------------------------------------------------------------
def markdown(results: dict[str, Any]) -> str:
    batches = results["batches"]
    lines = [f"## {SECTION}", "",
             f"`python benchmarks/bench_export.py` on {results['machine']['cpu']} "
             f"({results['machine']['cores']} cores), {results['threads']} intra-op thread(s) "
             f"for torch and onnxruntime alike; {results['rows']} test rows; "
             f"{results.get('load', 'load not recorded')}. p50 / p99 ms per call.", "",
             "| model | max abs diff | int8 AUC delta | "
             + " | ".join(f"{v} b{b}" for b in batches for v in VARIANTS) + " |",
             "|---|---|---|" + "---|" * (len(batches) * len(VARIANTS))]
    for name, r in results["models"].items():
        cells = []
        for b in batches:
            for v in VARIANTS:
                s = r["latency"].get(v, {}).get(str(b))
                cells.append(f"{s['p50_ms']:.3f} / {s['p99_ms']:.3f}" if s else "-")
        lines.append(f"| {name} | {r['max_abs_diff']:.1e} | {r['quantized_auc_delta']:+.4f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Raw records end to end: `Scorer.score` (request checks + transforms + "
              "onnxruntime fp32) beside the bare onnxruntime session on the feeds the scorer "
              "builds for the same records, timed in alternating pairs. p50 / p99 ms; ratio of "
              "the p50s.", "",
              "| model | " + " | ".join(f"scorer b{b} | bare b{b} | ratio b{b}" for b in batches)
              + " |", "|---|" + "---|---|---|" * len(batches)]
    for name, r in results["models"].items():
        cells = []
        for b in batches:
            s, o = r["scorer"][str(b)], r["ort_same_feeds"][str(b)]
            cells += [f"{s['p50_ms']:.3f} / {s['p99_ms']:.3f}", f"{o['p50_ms']:.3f} / "
                      f"{o['p99_ms']:.3f}", f"{s['p50_ms'] / o['p50_ms']:.2f}x"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "The HTTP service: `benchmarks/bench_serving_http.py` (section *HTTP serving*).",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, help="a project with trained ranking models")
    parser.add_argument("--workdir", type=Path, help="where to train when no --project")
    parser.add_argument("--epochs", type=int, default=2, help="epochs when training here")
    parser.add_argument("--models", nargs="*", help="subset of the trained entries")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--budget-s", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep-bundles", type=Path, help="write the bundles here (kept)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)

    from recflow.features import FeatureSpec

    tmp = None
    if args.project is None:
        tmp = Path(tempfile.mkdtemp(prefix="recflow-bench-export-")) if args.workdir is None \
            else args.workdir
        project = train_project(tmp, args.epochs)
    else:
        project = args.project.resolve()
    names = args.models or model_names(project)
    if not names:
        sys.stderr.write(f"no trained ranking models under {project}/data/06_models/ranking; "
                         "run `kedro run --pipelines=ranking` or omit --project\n")
        return 1
    spec = FeatureSpec.from_dict(json.loads(
        (project / "data/05_model_input/feature_spec.json").read_text()))
    records = raw_test_records(project, spec)
    bundles = args.keep_bundles or Path(tempfile.mkdtemp(prefix="recflow-bundles-"))
    load_before = os.getloadavg()[0]
    try:
        models = {n: bench_model(project, n, records, bundles, args) for n in names}
    finally:
        if args.keep_bundles is None:
            shutil.rmtree(bundles, ignore_errors=True)
        if tmp is not None and args.workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    import onnxruntime
    import torch

    results = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__},
        "threads": args.threads, "batches": args.batches, "rows": len(records),
        "load": f"load average {load_before:.2f} before the first model, "
                f"{os.getloadavg()[0]:.2f} after the last",
        "models": models,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    section = markdown(results)
    write_section(args.doc, SECTION, section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
