"""The same log as CSV or parquet through `kedro run --pipelines=preprocessing`: wall, peak RSS.

    python benchmarks/bench_byod_formats.py --impressions 2000000 --rounds 2 \
        --baseline-ref e976c0e        # also the parquet path of an earlier commit

Issue 11's bar: a CSV log must not need more memory than the parquet path. One throw-away
Kedro project (conf/ copied from this repo) holds the embedded generator's tables at
`--impressions` rows; the log is written once as parquet and once as CSV, and a `csvlog`
env swaps the log's catalog entry for a `pandas.CSVDataset` (what `recflow scaffold`
writes). Each run is a `kedro run` subprocess (peak RSS = its `ru_maxrss`, `os.wait4`);
formats alternate order each round; the 1-minute load average is recorded before each.
With `--baseline-ref REF`, the parquet log also runs through the code and conf/ of that
commit (a `git worktree`, on PYTHONPATH) in a second project: "the parquet path before".
Every run's feature spec must be identical (same data, formats and code). Results:
benchmarks/results/byod_formats.json and the `## Bring-your-own-data: CSV vs parquet`
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _docs import machine_note, write_section

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results/byod_formats.json"
DOC = REPO / "docs/benchmarks.md"
SECTION = "Bring-your-own-data: CSV vs parquet"
ENVS = {"parquet": None, "csv": "csvlog"}


def make_project(root: Path, impressions: int, seed: int, source: Path = REPO) -> None:
    from recflow.datasets.synthetic import GeneratorConfig, generate, write_parquet

    for name in ("pyproject.toml", ".telemetry"):
        if (source / name).exists():
            shutil.copy(source / name, root / name)
    shutil.copytree(source / "conf", root / "conf", dirs_exist_ok=True)
    (root / "src").mkdir(exist_ok=True)
    raw = root / "data/01_raw"
    raw.mkdir(parents=True, exist_ok=True)
    tables = generate(GeneratorConfig(n_users=max(3_000, impressions // 100),
                                      n_items=max(5_000, impressions // 200),
                                      n_impressions=impressions, seed=seed))
    write_parquet(tables, raw)
    tables.interactions.to_csv(raw / "interactions.csv", index=False)
    env = root / "conf/csvlog"
    env.mkdir(exist_ok=True)
    (env / "catalog.yml").write_text(
        "raw_interactions:\n  type: pandas.CSVDataset\n"
        "  filepath: data/01_raw/interactions.csv\n"
        "  validator: recflow.schemas.raw.PurchaseImpliesClick\n")
    (env / "globals.yml").write_text("out: data/csvlog\n")


def run_one(project: Path, fmt: str, src: Path | None = None) -> dict[str, Any]:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    env.pop("KEDRO_ENV", None)
    if src is not None:  # an earlier commit's package ahead of the installed one
        env["PYTHONPATH"] = str(src / "src")
    args = [sys.executable, "-m", "kedro", "run", "--pipelines", "preprocessing"]
    if ENVS.get(fmt):
        args += ["--env", ENVS[fmt]]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with open(project / f"{fmt}.log", "w") as sink:
        proc = subprocess.Popen(args, cwd=project, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{fmt} run failed; see {project / f'{fmt}.log'}")
    out = project / "data" / (ENVS.get(fmt) or "")
    spec = json.loads((out / "05_model_input/feature_spec.json").read_text())
    return {"format": fmt, "wall_s": time.perf_counter() - start, "load_before": load,
            "peak_rss_gib": usage.ru_maxrss / 2**20, "spec_hash": spec["hash"]}


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [f"## {SECTION}", "",
             f"`{report['command']}` ({report['created']}; {report['machine']}; load before "
             f"the runs {min(report['loads']):.2f} to {max(report['loads']):.2f}). The embedded "
             f"generator's log at {report['impressions']:,} impressions "
             f"({report['csv_mib']:,.0f} MiB as CSV, {report['parquet_mib']:,.0f} MiB as "
             "parquet), `kedro run --pipelines=preprocessing` end to end (validation, "
             "canonical tables, split, fit, transforms, great-expectations, writes). Medians "
             f"of {report['rounds']} rounds.", "",
             "| log file | wall s | peak RSS GiB |", "|---|---:|---:|"]
    lines += [f"| {fmt} | {s[fmt]['wall_s']:.1f} | {s[fmt]['peak_rss_gib']:.2f} |" for fmt in s]
    lines += ["", f"CSV / parquet: **{s['csv']['peak_rss_gib'] / s['parquet']['peak_rss_gib']:.2f}x"
              f" the peak RSS**, {s['csv']['wall_s'] / s['parquet']['wall_s']:.2f}x the wall "
              "time; identical feature specs (tested by hash)."]
    before = next((fmt for fmt in s if fmt.startswith("parquet (")), None)
    if before:
        lines += ["", f"CSV now / parquet before ({before}): **"
                  f"{s['csv']['peak_rss_gib'] / s[before]['peak_rss_gib']:.2f}x the peak RSS**, "
                  f"{s['csv']['wall_s'] / s[before]['wall_s']:.2f}x the wall time (the "
                  "declared path also writes the canonical tables to 03_primary)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impressions", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-ref", help="git ref whose parquet path is run as well")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="recflow-formats-"))
    try:
        (work / "now").mkdir()
        make_project(work / "now", args.impressions, args.seed)
        raw = work / "now/data/01_raw"
        cells = {fmt: (work / "now", None) for fmt in ENVS}
        if args.baseline_ref:
            tree = work / "tree"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree),
                            args.baseline_ref], check=True, capture_output=True)
            (work / "before").mkdir()
            make_project(work / "before", args.impressions, args.seed, source=tree)
            cells[f"parquet ({args.baseline_ref})"] = (work / "before", tree)
        runs = []
        for r in range(args.rounds):
            for fmt in (cells if r % 2 == 0 else reversed(list(cells))):
                project, src = cells[fmt]
                runs.append(run_one(project, fmt.split(" ")[0], src) | {"format": fmt,
                                                                        "round": r})
                print(json.dumps(runs[-1]), flush=True)
        if len({run["spec_hash"] for run in runs}) != 1:
            raise AssertionError("CSV and parquet runs fitted different feature specs")
        summary = {fmt: {k: statistics.median(r[k] for r in runs if r["format"] == fmt)
                         for k in ("wall_s", "peak_rss_gib")} for fmt in cells}
        report = {"command": "python benchmarks/bench_byod_formats.py " + " ".join(
                      argv if argv is not None else sys.argv[1:]),
                  "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                  "machine": machine_note(), "impressions": args.impressions,
                  "rounds": args.rounds, "loads": [r["load_before"] for r in runs],
                  "csv_mib": (raw / "interactions.csv").stat().st_size / 2**20,
                  "parquet_mib": (raw / "interactions.parquet").stat().st_size / 2**20,
                  "runs": runs, "summary": summary}
    finally:
        if args.baseline_ref:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(work / "tree")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    if not args.no_doc:
        write_section(DOC, SECTION, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
