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
   FeatureSpec transforms + onnxruntime) at the same batch sizes.

Then the HTTP service (`python -m recflow.serving BUNDLE` in its own process)
under a bounded closed-loop load: C client threads, each on one keep-alive
connection, send requests of B raw records back to back for T seconds; reported:
requests/s, records/s, p50/p99 request latency, errors.

Without --project, a temp project is made from conf/ and the embedded raw data
and `kedro run --pipelines=ranking` trains the default models (`--epochs` caps the
epochs to keep it short). Results: benchmarks/results/export.json and the
`## Export and serving` section of docs/benchmarks.md (other sections untouched).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
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

    from recflow.features.records import raw_records
    from recflow.pipelines.preprocessing.nodes import join_events

    raw = {n: pd.read_parquet(project / f"data/01_raw/{n}.parquet")
           for n in ("interactions", "users", "items")}
    return raw_records(join_events(raw["interactions"], raw["users"], raw["items"]), spec)


# ---- per model -----------------------------------------------------------------------------
def bench_model(project: Path, name: str, records: Any, bundles: Path,
                args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd
    import torch

    from recflow.datasets.onnx_model import ServingBundleDataset
    from recflow.export.checks import _time
    from recflow.export.params import ExportParams
    from recflow.pipelines.export import nodes
    from recflow.serving import Scorer

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
    served = {}
    for batch in args.batches:
        rows = needed.iloc[np.arange(batch) % len(needed)].to_dict("records")
        served[str(batch)] = _time(lambda r=rows: scorer.score(r), args.repeats, args.warmup,
                                   args.budget_s)
    print(f"{name}: max|onnx-torch| {summary['max_abs_diff']:.1e} on {summary['rows']} rows, "
          f"int8 AUC delta {summary['quantized_auc_delta']:+.5f}", flush=True)
    keep = ("model", "rows", "max_abs_diff", "max_abs_diff_unoptimized", "opset",
            "graph_optimization", "auc_fp32", "auc_int8", "quantized_auc_delta",
            "quantized_max_abs_diff", "onnx_bytes", "onnx_int8_bytes", "latency")
    return {**{k: summary.get(k) for k in keep}, "scorer": served}


# ---- the service under load ---------------------------------------------------------------
def start_service(bundle: Path, threads: int | None) -> tuple[subprocess.Popen, str, int]:
    cmd = [sys.executable, "-m", "recflow.serving", str(bundle), "--port", "0",
           "--max-batch", "4096", "--log-level", "WARNING"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.search(r"http://([\d.]+):(\d+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"service did not start: {line!r}")
    return process, match.group(1), int(match.group(2))


def load_test(host: str, port: int, body: bytes, clients: int, seconds: float) -> dict[str, Any]:
    """Closed loop: `clients` threads, one keep-alive connection each, for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        while time.perf_counter() < stop:
            start = time.perf_counter()
            try:
                conn.request("POST", "/score", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[i] += 1
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
                continue
            latencies[i].append((time.perf_counter() - start) * 1e3)
        conn.close()

    started = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    all_ms = np.concatenate([np.asarray(x) for x in latencies]) if any(latencies) else np.zeros(1)
    return {"requests": int(all_ms.size), "seconds": round(elapsed, 2),
            "rps": all_ms.size / elapsed, "p50_ms": float(np.percentile(all_ms, 50)),
            "p99_ms": float(np.percentile(all_ms, 99)), "errors": int(sum(errors))}


def bench_service(bundle: Path, records: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    from recflow.serving import Scorer

    needed = records[list(Scorer.from_bundle(bundle).raw_schema)]
    process, host, port = start_service(bundle, args.threads)
    rows = []
    try:
        for batch in args.service_batches:
            sample = needed.iloc[np.arange(batch) % len(needed)]
            body = json.dumps({"records": json.loads(sample.to_json(orient="records"))}).encode()
            for clients in args.clients:
                result = load_test(host, port, body, clients, args.seconds)
                result.update(batch=batch, clients=clients,
                              records_per_s=result["rps"] * batch)
                rows.append(result)
                print(f"service b={batch} c={clients}: {result['rps']:.0f} req/s, "
                      f"p99 {result['p99_ms']:.1f} ms, errors {result['errors']}", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=10)
    return rows


# ---- report --------------------------------------------------------------------------------
def markdown(results: dict[str, Any]) -> str:
    batches = results["batches"]
    lines = [f"## {SECTION}", "",
             f"`python benchmarks/bench_export.py` on {results['machine']['cpu']} "
             f"({results['machine']['cores']} cores), {results['threads']} intra-op thread(s) "
             f"for torch and onnxruntime alike; {results['rows']} test rows. "
             "p50 / p99 ms per call.", "",
             "| model | max abs diff | int8 AUC delta | "
             + " | ".join(f"{v} b{b}" for b in batches for v in (*VARIANTS, "scorer")) + " |",
             "|---|---|---|" + "---|" * (len(batches) * (len(VARIANTS) + 1))]
    for name, r in results["models"].items():
        cells = []
        for b in batches:
            for v in VARIANTS:
                s = r["latency"].get(v, {}).get(str(b))
                cells.append(f"{s['p50_ms']:.3f} / {s['p99_ms']:.3f}" if s else "-")
            s = r["scorer"][str(b)]
            cells.append(f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f}")
        lines.append(f"| {name} | {r['max_abs_diff']:.1e} | {r['quantized_auc_delta']:+.4f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "`scorer` = `Scorer.score` on raw records (validation + FeatureSpec transforms "
              "+ onnxruntime fp32).", ""]
    if results.get("service"):
        lines += [f"HTTP service (`python -m recflow.serving`, model `{results['service_model']}`), "
                  f"closed loop, {results['service_seconds']} s per row:", "",
                  "| records/request | clients | requests/s | records/s | p50 ms | p99 ms | errors |",
                  "|---|---|---|---|---|---|---|"]
        for s in results["service"]:
            lines.append(f"| {s['batch']} | {s['clients']} | {s['rps']:.0f} | "
                         f"{s['records_per_s']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                         f"{s['errors']} |")
        lines.append("")
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
    parser.add_argument("--service-model", help="entry served in the load test (default: din)")
    parser.add_argument("--service-batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=5.0)
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
    bundles = Path(tempfile.mkdtemp(prefix="recflow-bundles-"))
    try:
        models = {n: bench_model(project, n, records, bundles, args) for n in names}
        service_model = args.service_model or ("din" if "din" in models else names[0])
        service = bench_service(bundles / service_model, records, args)
    finally:
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
        "models": models, "service_model": service_model, "service_seconds": args.seconds,
        "service": service,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    section = markdown(results)
    write_section(args.doc, SECTION, section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
