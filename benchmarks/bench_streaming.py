"""Streaming vs in-memory (vs Spark) preprocessing: rows/s and peak RSS by data size.

    nice -n 10 python benchmarks/bench_streaming.py --impressions 1000000 10000000
    nice -n 10 python benchmarks/bench_streaming.py --impressions 50000000 --modes streaming

For each size, `recflow.datasets.synthetic.write_shards` writes users, items and one parquet
shard per simulated day (60 days) into a temp dir; then each mode runs in its own
subprocess and writes its outputs (train/valid/test parquet), so I/O is measured:

* in-memory: all shards read and concatenated, then the `preprocessing` node
  functions (join, split, fit, transform x3), one parquet file per split;
* streaming: `recflow.features.out_of_core` (split pass, fit pass, transform pass),
  `model_input_{split}/part-NNNNN.parquet`;
* spark: `recflow.features.spark` on a local[2] session (JVM start reported apart).

Peak RSS is each worker's `ru_maxrss` from `os.wait4` (imports included). The
in-memory mode is skipped above --in-memory-max rows (its peak grows ~linearly,
~1.1 GiB per million impressions, so 50M does not fit on a 24 GiB machine); the
report says so instead of a number. No great-expectations validation here (see
bench_preprocessing.py for that). Results: benchmarks/results/streaming.json and
the `## Streaming and Spark preprocessing` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _docs import write_section

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "conf/base/parameters_preprocessing.yml"
RESULTS = REPO / "benchmarks/results/streaming.json"
DOC = REPO / "docs/benchmarks.md"
SECTION = "Streaming and Spark preprocessing"
SPLITS = ("train", "valid", "test")
MODES = ("in_memory", "streaming", "spark")


def _config() -> Any:
    import yaml

    from recflow.features import FeaturesConfig

    return FeaturesConfig.model_validate(yaml.safe_load(PARAMS.read_text())["preprocessing"])


def _sizes(impressions: int) -> tuple[int, int]:
    return max(3_000, impressions // 100), max(5_000, impressions // 200)


# --------------------------------------------------------------------------- workers
def worker_generate(data: Path, impressions: int, seed: int) -> dict:
    from recflow.datasets.synthetic import GeneratorConfig, write_shards

    users, items = _sizes(impressions)
    t0 = time.perf_counter()
    written = write_shards(GeneratorConfig(n_users=users, n_items=items,
                                           n_impressions=impressions, seed=seed), data)
    return {"seconds": time.perf_counter() - t0, "shards": len(written["interactions"]),
            "rows": written["rows"]}


def worker_in_memory(data: Path, out: Path) -> dict:
    import pandas as pd

    from recflow.pipelines.preprocessing import nodes

    params, stages = _config(), {}
    t = time.perf_counter()
    log = pd.concat([pd.read_parquet(p) for p in sorted((data / "interactions").glob("*"))],
                    ignore_index=True)
    users, items = pd.read_parquet(data / "users.parquet"), pd.read_parquet(data / "items.parquet")
    stages["load"], t = time.perf_counter() - t, time.perf_counter()
    events = nodes.join_events(log, users, items)
    del log
    cutoffs = nodes.split_by_time(events, params)
    stages["join+split"], t = time.perf_counter() - t, time.perf_counter()
    spec = nodes.fit_feature_spec(events, cutoffs, params)
    stages["fit"], t = time.perf_counter() - t, time.perf_counter()
    for split in SPLITS:
        nodes.transform_split(events, spec, split).to_parquet(out / f"{split}.parquet")
    stages["transform+write"] = time.perf_counter() - t
    return {"rows": len(events), "stages": stages}


def worker_streaming(data: Path, out: Path) -> dict:
    from functools import partial

    import pandas as pd

    from recflow.features.out_of_core import fit_spec_streaming, shard_cutoffs, transform_shards
    from recflow.pipelines.preprocessing.nodes import join_events

    params, stages = _config(), {}
    files = sorted((data / "interactions").glob("*.parquet"))
    shards = {p.stem: partial(pd.read_parquet, p) for p in files}
    stamps = {p.stem: partial(pd.read_parquet, p, columns=["timestamp"]) for p in files}
    join = partial(join_events, users=pd.read_parquet(data / "users.parquet"),
                   items=pd.read_parquet(data / "items.parquet"))
    t = time.perf_counter()
    cutoffs, stats = shard_cutoffs(stamps, params)
    stages["split pass"], t = time.perf_counter() - t, time.perf_counter()
    spec = fit_spec_streaming(shards, join, cutoffs, stats, params)
    stages["fit pass"], t = time.perf_counter() - t, time.perf_counter()
    parts = dict.fromkeys(SPLITS, 0)
    for chunk in transform_shards(shards, join, spec):
        for split, frame in chunk.items():
            if len(frame):
                target = out / f"model_input_{split}"
                target.mkdir(exist_ok=True)
                frame.to_parquet(target / f"part-{parts[split]:05d}.parquet", index=False)
                parts[split] += 1
    stages["transform+write pass"] = time.perf_counter() - t
    return {"rows": stats["rows"], "stages": stages, "shards": len(files)}


def worker_spark(data: Path, out: Path) -> dict:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from recflow.features import spark as sp

    params, stages = _config(), {}
    t = time.perf_counter()
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "4")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.driver.memory", "4g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    stages["session start"], t = time.perf_counter() - t, time.perf_counter()
    read = spark.read.parquet
    events = sp.join_events(read(str(data / "interactions")), read(str(data / "users.parquet")),
                            read(str(data / "items.parquet"))).cache()
    cutoffs = sp.split_cutoffs(events, params)
    stages["join+split"], t = time.perf_counter() - t, time.perf_counter()
    spec = sp.fit_spec(events, cutoffs, params)
    stages["fit"], t = time.perf_counter() - t, time.perf_counter()
    for split, frame in sp.transform(events, spec).items():
        frame.write.mode("overwrite").parquet(str(out / f"model_input_{split}"))
    stages["transform+write"] = time.perf_counter() - t
    rows = sum(cutoffs["rows"].values())
    spark.stop()
    return {"rows": rows, "stages": stages}


# --------------------------------------------------------------------------- driver
def _spawn(args: list[str], result: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--worker", *args, "--result", str(result)])
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        return {"failed": f"exit code {code}", "peak_rss_mib": usage.ru_maxrss / 1024}
    out = json.loads(result.read_text())
    out["process_seconds"] = time.perf_counter() - t0
    out["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux: KiB (the Spark JVM is a child)
    return out


def run_size(impressions: int, workdir: Path, args: argparse.Namespace) -> dict:
    data = workdir / f"data_{impressions}"
    print(f"[{impressions:,}] generating shards ...", flush=True)
    gen = _spawn(["generate", "--data", str(data), "--impressions", str(impressions)],
                 workdir / "gen.json")
    entry: dict[str, Any] = {"impressions": impressions, "users": _sizes(impressions)[0],
                             "items": _sizes(impressions)[1], "generate": gen}
    for mode in args.modes:
        if mode == "in_memory" and impressions > args.in_memory_max:
            entry[mode] = {"skipped": f"above --in-memory-max {args.in_memory_max:,} rows"}
            continue
        if mode == "spark" and impressions > args.spark_max:
            entry[mode] = {"skipped": f"above --spark-max {args.spark_max:,} rows"}
            continue
        out = workdir / f"out_{mode}_{impressions}"
        out.mkdir(parents=True, exist_ok=True)
        print(f"[{impressions:,}] {mode} ...", flush=True)
        result = _spawn([mode, "--data", str(data), "--out", str(out)], workdir / f"{mode}.json")
        if "failed" not in result:
            work = sum(v for k, v in result["stages"].items() if k != "session start")
            result["seconds"] = work
            result["rows_per_s"] = result["rows"] / work
        entry[mode] = result
        shutil.rmtree(out, ignore_errors=True)
        print(json.dumps({k: v for k, v in result.items() if k != "stages"}), flush=True)
    entry["load_average_1min_after"] = os.getloadavg()[0]
    if not args.keep_data:
        shutil.rmtree(data, ignore_errors=True)
    return entry


def _gib(mib: float) -> str:
    return f"{mib / 1024:.2f} GiB"


def markdown(report: dict) -> str:
    lines = [
        f"## {SECTION}", "",
        f"`{report['command']}` on {report['machine']['cpus']} CPU cores (shared with other "
        f"jobs: timings are upper bounds), Python {report['machine']['python']} "
        f"({report['date']}). Raw JSON: `benchmarks/results/streaming.json`.",
        "",
        "Data: `recflow.datasets.synthetic.write_shards`, one parquet shard per day (60 shards). Every mode "
        "writes its train/valid/test outputs. Peak RSS = the worker's `ru_maxrss` (imports "
        "included). Spark: local[2] (spark.driver.memory 4g), time without JVM start-up; its "
        "peak RSS is the Python driver's only (the JVM is not a waited-for child).",
        "",
        "`load` is the 1-minute load average after the size's runs: 1M ran beside other "
        "jobs at a load of ~12 on 2 cores, hence slower than 10M.",
        "",
        "| impressions | mode | seconds | rows/s | peak RSS | load | note |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for e in report["sizes"]:
        for mode in MODES:
            r = e.get(mode)
            if r is None:
                continue
            if "skipped" in r or "failed" in r:
                note = r.get("skipped") or f"failed ({r['failed']})"
                measured = [(x["impressions"], x[mode]["peak_rss_mib"]) for x in report["sizes"]
                            if "seconds" in (x.get(mode) or {})]
                if mode == "in_memory" and measured:
                    n, peak = max(measured)
                    note += (f"; not run: {n:,}-row peak x {e['impressions'] / n:g} = "
                             f"~{_gib(peak * e['impressions'] / n)} (linear estimate)")
                peak = _gib(r["peak_rss_mib"]) if "failed" in r else "-"
                lines.append(f"| {e['impressions']:,} | {mode} | - | - | {peak} | - | {note} |")
                continue
            note = (f"+{r['stages']['session start']:.0f} s session start"
                    if "session start" in r["stages"] else "")
            lines.append(f"| {e['impressions']:,} | {mode} | {r['seconds']:.1f} | "
                         f"{r['rows_per_s']:,.0f} | {_gib(r['peak_rss_mib'])} | "
                         f"{e.get('load_average_1min_after', 0):.1f} | {note} |")
    lines += ["", "Stages (seconds):", ""]
    for e in report["sizes"]:
        for mode in MODES:
            r = e.get(mode) or {}
            if "stages" in r:
                stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
                lines.append(f"- {e['impressions']:,} {mode}: {stages}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impressions", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--in-memory-max", type=int, default=10_000_000)
    parser.add_argument("--spark-max", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--merge", action="store_true",
                        help="add these sizes/modes to the existing JSON instead of replacing it")
    parser.add_argument("--worker", choices=["generate", *MODES])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--result", type=Path)
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the docs section from the existing JSON")
    args = parser.parse_args(argv)

    if args.render:
        write_section(args.doc, SECTION, markdown(json.loads(args.json.read_text())))
        return 0
    if args.worker:
        import logging

        logging.disable(logging.WARNING)
        if args.worker == "generate":
            result = worker_generate(args.data, args.impressions[0], args.seed)
        else:
            result = globals()[f"worker_{args.worker}"](args.data, args.out)
        args.result.write_text(json.dumps(result))
        return 0

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_streaming_"))
    sizes = [run_size(n, workdir, args) for n in args.impressions]
    report = {
        "command": "python benchmarks/bench_streaming.py " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "sizes": sizes,
    }
    if args.merge and args.json.exists():
        old = json.loads(args.json.read_text())
        keep = {e["impressions"]: e for e in old["sizes"]}
        for e in sizes:
            keep[e["impressions"]] = {**keep.get(e["impressions"], {}), **e}
        report["sizes"] = [keep[k] for k in sorted(keep)]
        report["command"] = old["command"] + "; " + report["command"]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    write_section(args.doc, SECTION, markdown(report))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
