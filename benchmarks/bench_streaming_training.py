"""`kedro run --pipelines=ranking_streaming` vs `--pipelines=ranking` end to end, by data size.

    nice -n 10 python benchmarks/bench_streaming_training.py --impressions 1000000 10000000
    nice -n 10 python benchmarks/bench_streaming_training.py --impressions 50000000 \\
        --modes streaming --merge

For each size, `recflow.datasets.synthetic.write_shards` writes users, items and one parquet shard
per simulated day into a throw-away Kedro project (conf/ copied from this repo, the
ranking block replaced by `--models` trained for `--epochs` epochs). Each mode is one
real `kedro run` subprocess: preprocessing, training, test scoring, statistics, report
and ONNX export with parity. `ranking` (in memory) reads the shards concatenated into
`interactions.parquet` (written with a streaming parquet writer, not timed);
`ranking_streaming` reads the shards. Peak RSS is that process's `ru_maxrss`
(`os.wait4`). samples/s is the trainer's figure for the last epoch. Results:
benchmarks/results/streaming_training.json and the `## Training on shards` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from _docs import machine_note, write_section

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results/streaming_training.json"
DOC = REPO / "docs/benchmarks.md"
SECTION = "Training on shards"
MODES = {"in_memory": "ranking", "streaming": "ranking_streaming"}
LAYERS = ("01_raw", "02_intermediate", "05_model_input", "06_models", "07_model_output",
          "08_reporting")


def _sizes(impressions: int) -> tuple[int, int]:
    """Users and items as in bench_streaming.py."""
    return max(3_000, impressions // 100), max(5_000, impressions // 200)


def make_project(root: Path, impressions: int, args: argparse.Namespace) -> dict[str, Any]:
    """A Kedro project over freshly generated shards; returns the generator's summary."""
    import pyarrow.parquet as pq

    from recflow.config_loader import replacing
    from recflow.datasets.synthetic import GeneratorConfig, write_shards

    for name in ("pyproject.toml", ".telemetry"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "conf", root / "conf", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("bench_*"))
    (root / "src").mkdir(exist_ok=True)
    for layer in LAYERS:
        (root / "data" / layer).mkdir(parents=True, exist_ok=True)
    users, items = _sizes(impressions)
    start = time.perf_counter()
    written = write_shards(GeneratorConfig(n_users=users, n_items=items,
                                           n_impressions=impressions, seed=args.seed),
                           root / "data/01_raw")
    seconds = time.perf_counter() - start
    if "in_memory" in args.modes and impressions <= args.in_memory_max:
        parts = sorted((root / "data/01_raw/interactions").glob("part-*.parquet"))
        with pq.ParquetWriter(root / "data/01_raw/interactions.parquet",
                              pq.read_schema(parts[0])) as writer:
            for part in parts:
                writer.write_table(pq.read_table(part))
    local = root / "conf/local"
    local.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((REPO / "conf/base/parameters_ranking.yml").read_text())["ranking"]
    trainer = {**base["trainer"], "epochs": args.epochs, "batch_size": args.batch_size,
               "progress": False, "shuffle_buffer": args.shuffle_buffer}
    ranking = {**base, "baseline": args.models[0], "trainer": trainer,
               "models": {name: base["models"][name] for name in args.models}}
    export = {"latency": {"batches": [1, 64], "repeats": 20, "warmup": 2, "budget_s": 0.5}}
    # the whole block: its model list replaces base's instead of merging into it
    (local / "parameters_ranking.yml").write_text(yaml.safe_dump(replacing({"ranking": ranking})))
    (local / "parameters_export.yml").write_text(yaml.safe_dump({"export": export}))
    return {"users": users, "items": items, "shards": len(written["interactions"]),
            "rows": written["rows"], "generate_seconds": seconds}


def run_mode(project: Path, mode: str) -> dict[str, Any]:
    """One `kedro run` subprocess; wall time, peak RSS and what the report says."""
    out = project / "data/08_reporting"
    for stale in out.glob("*.json"):
        stale.unlink()
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    env.pop("KEDRO_ENV", None)
    log = project / f"{mode}.log"
    start = time.perf_counter()
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "kedro", "run", "--pipelines", MODES[mode]],
                                cwd=project, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    row: dict[str, Any] = {"wall_s": wall, "peak_rss_gib": usage.ru_maxrss / 2**20}
    if code != 0:
        row["failed"] = f"exit code {code}; tail of {log.name}: " + \
            " | ".join(log.read_text().splitlines()[-5:])
        return row
    report = json.loads((out / "ranking_metrics.json").read_text())
    exported = json.loads((out / "export_report.json").read_text())
    row["test_rows"] = report["rows"]
    row["train_rows"] = report["statistics"]["splits"]["train"]["interactions"]
    row["models"] = {
        name: {"auc": m["auc"], "gauc": m["gauc"], "train_seconds": m.get("train_seconds"),
               "samples_per_second": m.get("samples_per_second"),
               "onnx_max_abs_diff": exported["models"].get(name, {}).get("max_abs_diff")}
        for name, m in report["models"].items()
    }
    return row


def run_size(impressions: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    project = workdir / f"project_{impressions}"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    print(f"[{impressions:,}] generating shards ...", flush=True)
    entry: dict[str, Any] = {"impressions": impressions, **make_project(project, impressions, args)}
    for mode in args.modes:
        if mode == "in_memory" and impressions > args.in_memory_max:
            entry[mode] = {"skipped": f"above --in-memory-max {args.in_memory_max:,} rows"}
            continue
        print(f"[{impressions:,}] kedro run --pipelines={MODES[mode]} ...", flush=True)
        entry[mode] = run_mode(project, mode)
        print(json.dumps(entry[mode]), flush=True)
        shutil.rmtree(project / "data/05_model_input", ignore_errors=True)
        (project / "data/05_model_input").mkdir()
    entry["load_average_1min_after"] = os.getloadavg()[0]
    if not args.keep_data:
        shutil.rmtree(project, ignore_errors=True)
    return entry


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"## {SECTION}", "",
        f"`python benchmarks/bench_streaming_training.py` ({report['date']}; "
        f"{report['machine']}; models {', '.join(report['models'])} (per size: see the table), "
        f"{report['epochs']} "
        f"epoch(s), batch {report['batch_size']:,}, shuffle buffer {report['shuffle_buffer']:,} rows). "
        "Each cell is one `kedro run` process on freshly generated data: preprocessing, "
        "training, test scoring, statistics, report and ONNX export with its parity check. "
        "`ranking` holds every split in memory; `ranking_streaming` streams the parquet "
        "parts (`preprocessing_streaming`, then training through the shuffle buffer, "
        "validation, scoring and statistics chunk by chunk). Peak RSS is the process's "
        "high-water mark. Raw JSON: `benchmarks/results/streaming_training.json`.", "",
        "| impressions | train rows | pipeline | wall s | peak RSS GiB | model | test AUC "
        "| train samples/s | ONNX max abs diff |",
        "|---:|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    for entry in report["sizes"]:
        for mode, pipeline_name in MODES.items():
            row = entry.get(mode)
            if row is None:
                continue
            head = f"| {entry['impressions']:,} | {{rows}} | `{pipeline_name}` |"
            if "skipped" in row or "failed" in row:
                reason = row.get("skipped") or row["failed"]
                lines.append(head.format(rows="") + f" | | | | {reason} | | |")
                continue
            for name, m in row["models"].items():
                if name == "popularity":
                    continue
                sps = m["samples_per_second"]
                diff = m["onnx_max_abs_diff"]
                lines.append(
                    head.format(rows=f"{row['train_rows']:,}")
                    + f" {row['wall_s']:.0f} | {row['peak_rss_gib']:.2f} | {name} "
                    f"| {m['auc']:.4f} | {sps:,.0f} | "
                    + (f"{diff:.1e}" if diff is not None else "") + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--impressions", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--models", nargs="+", default=["lr"],
                        help="entries of conf/base/parameters_ranking.yml")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--shuffle-buffer", type=int, default=262_144)
    parser.add_argument("--in-memory-max", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "recflow-bench-train")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--merge", action="store_true",
                        help="keep sizes already in the JSON that this run does not measure")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    report = {"date": datetime.date.today().isoformat(), "machine": machine_note(),
              "models": args.models, "epochs": args.epochs, "batch_size": args.batch_size,
              "shuffle_buffer": args.shuffle_buffer,
              "sizes": [run_size(n, args.workdir, args) for n in args.impressions]}
    if args.merge and RESULTS.exists():
        old = json.loads(RESULTS.read_text())
        done = {e["impressions"]: e for e in report["sizes"]}
        for entry in old.get("sizes", []):
            if entry["impressions"] in done:
                merged = {**entry, **done[entry["impressions"]]}
                done[entry["impressions"]] = merged
            else:
                done[entry["impressions"]] = entry
        report["sizes"] = [done[k] for k in sorted(done)]
        report["machine"] = f"{old.get('machine', '')}; then {report['machine']}"
        report["models"] = list(dict.fromkeys([*old.get("models", []), *report["models"]]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    if not args.no_doc:
        write_section(DOC, SECTION, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
