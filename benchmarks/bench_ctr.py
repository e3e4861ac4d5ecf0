"""CTR training against FuxiCTR on Criteo-shaped data, through `kedro run`.

    python benchmarks/bench_ctr.py                          # 1M / 100k / 100k rows, 1 round
    python benchmarks/bench_ctr.py --train 100000 --valid 20000 --test 20000   # dev size
    benchmarks/ctr_fuxictr_setup.sh                         # once: FuxiCTR's own venv

Data: `ctr_data.py`'s seeded generator (planted main effects, FM-style pairwise crosses,
numeric x categorical slopes); its oracle AUC / logloss are written beside the CSVs
(`oracle.json`).

recflow: a throw-away Kedro env written by `recflow scaffold`'s functions into a conf
source under the output folder (`ctr_kedro.py`), then `kedro run --pipelines=ranking
--to-outputs ranking.<model>.seed_runs` in a child process: CSV read, declaration checks,
preprocessing, one epoch of the registered model, validation, test scoring, metrics.
FuxiCTR 2.3.10 (`ctr_fuxictr_run.py`, in its own venv): its FeatureProcessor reads the
same CSVs, ray transforms them, one epoch of `fit`, test evaluation. Both train DCNv2
("parallel", 3 cross layers ‖ MLP 400-400-400) and DeepFM (MLP 400-400-400) with
embedding 16, batch 4096, Adam 1e-3, no regularisation, 2 torch threads; the runs are
interleaved (recflow, FuxiCTR, then FuxiCTR, recflow for the next model, ...).

Per run: samples/s including data loading (train rows / the whole process's wall time,
start-up and test scoring included), train-loop samples/s, step-only samples/s (batch
assembly / loading excluded), peak RSS (`ru_maxrss`), test AUC / logloss, and the 1-minute
load average before and after. Once per model: sgemm GFLOP/s at the model's dense shapes
(2 threads, measured before the first and after the last run), dense FLOPs per sample, the
achieved fraction, and a profiled step breakdown (`ctr_profile.py`).

Results: `--results` (benchmarks/results/ctr.json) and the `## CTR training against
FuxiCTR` section of docs/benchmarks.md, which also renders `ctr_ab.py`'s and `ctr_zoo.py`'s
JSON when they are there (`--render-only` rewrites it after either).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

import ctr_data
import ctr_kedro
import ctr_profile
import ctr_zoo
from _docs import cpu_name, write_section

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results/ctr.json"
AB_RESULTS = REPO / "benchmarks/results/ctr_ab.json"
ZOO_RESULTS = REPO / "benchmarks/results/ctr_zoo.json"
DOC = REPO / "docs/benchmarks.md"
TITLE = "CTR training against FuxiCTR"
FUXICTR_PYTHON = Path("/work/fuxictr-venv/bin/python")


def wait_quiet(limit: float, patience_s: float) -> float:
    """Wait (up to `patience_s`) for the 1-minute load average to fall below `limit`."""
    deadline = time.monotonic() + patience_s
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        time.sleep(15)
    return os.getloadavg()[0]


def run_recflow(data: Path, out: Path, model: str, threads: int, rows: int
                ) -> dict[str, Any]:
    """One `kedro run` of `model` in a fresh output folder; its timings and metrics."""
    shutil.rmtree(out, ignore_errors=True)
    conf = ctr_kedro.write_env(REPO, data, out, model)
    cost = ctr_kedro.kedro_run(REPO, conf, model, threads)
    reports = out / "kedro" / "08_reporting" / "ranking"
    run = json.loads((reports / f"{model}_seed_runs.json").read_text())[0]
    epoch = json.loads((reports / f"{model}_history.json").read_text())["epochs"][0]
    loop = rows / epoch["samples_per_s"]  # the trainer's rate covers its batch loop only
    return {"framework": "recflow", "model": model, "train_rows": rows,
            "process_seconds": cost["wall_seconds"], "peak_rss_gib": cost["peak_rss_gib"],
            "train_loop_seconds": loop, "batch_seconds": epoch.get("batch_seconds", 0.0),
            "step_seconds": loop - epoch.get("batch_seconds", 0.0),
            "test_auc": run["auc"], "test_logloss": run["logloss"], "params": run["params"],
            "valid_auc": epoch["valid_auc"]}


def run_fuxictr(python: Path, data: Path, work: Path, model: str, threads: int
                ) -> dict[str, Any]:
    """One FuxiCTR process (preprocess from the CSVs, train, test); wall time measured here."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = work / "result.json"
    cmd = [str(python), str(REPO / "benchmarks/ctr_fuxictr_run.py"), "--data", str(data),
           "--work", str(work), "--model", model, "--threads", str(threads), "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"FuxiCTR run failed:\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    result["inner_process_seconds"] = result.pop("process_seconds")
    result["process_seconds"] = wall
    result["train_loop_seconds"] = result["fit_seconds"] - result["valid_seconds"]
    return result


def rates(run: dict[str, Any]) -> dict[str, float]:
    """samples/s including data loading, of the train loop, and of the step alone."""
    rows = run["train_rows"]
    return {"samples_s_with_loading": rows / run["process_seconds"],
            "samples_s_train_loop": rows / run["train_loop_seconds"],
            "samples_s_step": rows / run["step_seconds"]}


def machine() -> dict[str, Any]:
    """CPU, cores, the ISA flags that decide bf16 (none: fp32 only), versions."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "flags": {f: f in flags for f in wanted},
            "mkl": torch.backends.mkl.is_available()}


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Data, then the interleaved runs, then sgemm / FLOPs / profile per model."""
    sizes = {"train": args.train, "valid": args.valid, "test": args.test}
    data = args.out / "data"
    oracle = ctr_data.write(data, sizes, args.seed)
    runs: list[dict[str, Any]] = []
    sgemm_before = None
    order = 0
    for round_ in range(args.rounds):
        for model in args.models:
            pair = ["recflow", "fuxictr"] if order % 2 == 0 else ["fuxictr", "recflow"]
            order += 1
            for framework in pair:
                if framework == "fuxictr" and args.skip_fuxictr:
                    continue
                before = wait_quiet(args.quiet_load, args.wait)
                start = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                print(f"[round {round_}] {framework} {model} (load {before:.2f})", flush=True)
                if framework == "recflow":
                    run = run_recflow(data, args.out / f"recflow_{model}", model, args.threads,
                                      args.train)
                else:
                    run = run_fuxictr(args.fuxictr_python, data, args.out / f"fuxictr_{model}",
                                      model, args.threads)
                run |= {"round": round_, "started": start, "load_before": before,
                        "load_after": os.getloadavg()[0]}
                run |= rates(run)
                runs.append(run)
                print(json.dumps({k: v for k, v in run.items() if "samples" in k or "auc" in k
                                  or "load" in k}), flush=True)
                if sgemm_before is None:
                    sgemm_before = _sgemm_all(args)
    per_model = {m: _model_figures(args, m, sgemm_before, runs) for m in args.models}
    return {"date": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
            "command": " ".join(sys.argv), "machine": machine(), "sizes": sizes,
            "oracle": oracle["splits"], "planted": oracle["planted"],
            "threads": args.threads, "trainer": ctr_kedro.TRAINER,
            "models": ctr_kedro.MODELS, "runs": runs, "per_model": per_model}


def _sgemm_all(args: argparse.Namespace) -> dict[str, Any]:
    """sgemm at every model's dense shapes (a model built from the recflow run's spec)."""
    return {m: ctr_profile.sgemm(_shapes(args, m), 4096, args.threads) for m in args.models}


def _shapes(args: argparse.Namespace, model: str) -> list[tuple[int, int]]:
    model_input = _model_input(args)
    return ctr_profile.model_figures(model_input, ctr_kedro.MODELS[model])["linear_shapes"]


def _model_input(args: argparse.Namespace) -> Path:
    """The preprocessed splits of whichever recflow run is there (all runs write the same)."""
    found = sorted(args.out.glob("recflow_*/kedro/05_model_input/feature_spec.json"))
    if not found:
        raise FileNotFoundError(f"no recflow run under {args.out}: nothing to profile")
    return found[0].parent


def _model_figures(args: argparse.Namespace, model: str, sgemm_before: dict[str, Any] | None,
                   runs: list[dict[str, Any]]) -> dict[str, Any]:
    """sgemm after the runs, FLOPs per sample, achieved fractions, the profiled step."""
    sgemm_after = ctr_profile.sgemm(_shapes(args, model), 4096, args.threads)
    profile = ctr_profile.step_breakdown(_model_input(args), ctr_kedro.MODELS[model],
                                         ctr_kedro.TRAINER, steps=args.profile_steps,
                                         threads=args.threads)
    ceiling = max(sgemm_after["gflops"], (sgemm_before or {}).get(model, {}).get("gflops", 0))
    flops = profile["flops_per_sample"]["total"]
    mine = [r for r in runs if r["framework"] == "recflow" and r["model"] == model]
    step_rate = statistics.median(r["samples_s_step"] for r in mine) if mine else float("nan")
    matmul_ms = profile["ms_per_step"].get("dense matmuls", float("nan"))
    ideal_ms = flops * profile["batch_size"] / (ceiling * 1e9) * 1e3
    return {"sgemm_before": (sgemm_before or {}).get(model), "sgemm_after": sgemm_after,
            "sgemm_gflops": ceiling, "flops_per_sample": profile["flops_per_sample"],
            "achieved_gflops_step": step_rate * flops / 1e9,
            "achieved_fraction_step": step_rate * flops / (ceiling * 1e9),
            "dense_fraction_profiled": ideal_ms / matmul_ms, "profile": profile}


def _median(runs: list[dict[str, Any]], framework: str, model: str, key: str) -> float:
    values = [r[key] for r in runs if r["framework"] == framework and r["model"] == model]
    return statistics.median(values) if values else float("nan")


def markdown(result: dict[str, Any]) -> str:
    """The docs section: setup, the comparison table, ratios, ceiling and breakdown."""
    runs, m = result["runs"], result["machine"]
    loads = [r["load_before"] for r in runs] + [r["load_after"] for r in runs]
    sizes = result["sizes"]
    lines = [f"## {TITLE}", "",
             f"`{result['command']}` ({result['date']} UTC) on {m['cpu']}, {m['cores']} cores, "
             f"torch {m['torch']}, {result['threads']} torch threads; AVX2 "
             f"{'yes' if m['flags']['avx2'] else 'no'}, AVX512-BF16 / AMX "
             f"{'yes' if m['flags']['avx512_bf16'] or m['flags']['amx_bf16'] else 'no'} "
             "(so fp32 only). 1-minute load average before / after each run: "
             f"{min(loads):.2f} to {max(loads):.2f} (per run in the JSON). Raw JSON: "
             "`benchmarks/results/ctr.json`.", "",
             f"Data: `benchmarks/ctr_data.py`, seeded, {sizes['train']:,} / {sizes['valid']:,} / "
             f"{sizes['test']:,} rows of `label`, `I1..I13`, `C1..C26`; planted main effects, "
             f"{len(result['planted']['crosses'])} FM-style crosses, "
             f"{len(result['planted']['slopes'])} numeric x categorical slopes; **oracle test "
             f"AUC {result['oracle']['test']['oracle_auc']:.4f}** (logloss "
             f"{result['oracle']['test']['oracle_logloss']:.4f}).", "",
             "recflow: `kedro run --pipelines=ranking --to-outputs ranking.<model>.seed_runs` on a "
             "throw-away env (dataset declaration and fields from `recflow scaffold`'s "
             "functions, min_count 2, counts as standardised log1p); FuxiCTR 2.3.10: its "
             "FeatureProcessor on the same CSVs (min_categr_count 2, log1p + StandardScaler), "
             "ray data loader, `fit`, test evaluation. DCNv2 parallel (3 cross layers ‖ MLP "
             "400-400-400) and DeepFM (MLP 400-400-400), embedding 16, batch 4096, Adam 1e-3, "
             "no regularisation, one epoch; runs interleaved. *With loading* = train rows / the "
             "whole process's wall time (start-up, CSV read, preprocessing, epoch, validation, "
             "test scoring); *train loop* = the epoch's batch loop; *step* = the loop without "
             "batch assembly / loading.", "",
             "| model | framework | samples/s with loading | samples/s train loop | "
             "samples/s step | test AUC | test logloss | peak RSS GiB | params |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model in result["per_model"]:
        for fw in ("recflow", "fuxictr"):
            if not any(r["framework"] == fw and r["model"] == model for r in runs):
                continue
            row = [model, fw] + [f"{_median(runs, fw, model, k):,.0f}" for k in
                                 ("samples_s_with_loading", "samples_s_train_loop",
                                  "samples_s_step")]
            row += [f"{_median(runs, fw, model, 'test_auc'):.4f}",
                    f"{_median(runs, fw, model, 'test_logloss'):.4f}",
                    f"{_median(runs, fw, model, 'peak_rss_gib'):.2f}",
                    f"{int(_median(runs, fw, model, 'params')):,}"]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "recflow / FuxiCTR (medians):", ""]
    for model in result["per_model"]:
        ratio = {k: _median(runs, "recflow", model, k) / _median(runs, "fuxictr", model, k)
                 for k in ("samples_s_with_loading", "samples_s_train_loop", "samples_s_step")}
        auc = (_median(runs, "recflow", model, "test_auc")
               - _median(runs, "fuxictr", model, "test_auc"))
        fig = result["per_model"][model]
        flops, ceiling = fig["flops_per_sample"]["total"], fig["sgemm_gflops"] * 1e9
        fuxi_step = _median(runs, "fuxictr", model, "samples_s_step")
        lines.append(f"- **{model}**: {ratio['samples_s_with_loading']:.2f}x with loading, "
                     f"{ratio['samples_s_train_loop']:.2f}x train loop, "
                     f"{ratio['samples_s_step']:.2f}x step; test AUC {auc:+.4f}. FuxiCTR's "
                     f"step does {fuxi_step * flops / ceiling:.0%} of the sgemm ceiling's "
                     f"work; 1.5x its step rate would need {1.5 * fuxi_step * flops / ceiling:.0%}"
                     f" (the ceiling allows at most {ceiling / flops:,.0f} samples/s of dense "
                     "matmuls alone).")
    lines += ["", "Matmul ceiling (fp32 `torch.mm` at the model's dense shapes, forward and both "
              "backward products, same threads, measured in this run) and where a recflow step "
              "goes (torch.profiler, self time per component, ms per 4096-row step):", "",
              "| model | dense MFLOP/sample (fwd+bwd) | sgemm GFLOP/s | recflow step GFLOP/s | "
              "achieved fraction | dense matmuls at | batch assembly | embedding fwd | "
              "embedding bwd | dense matmuls | optimiser | other fwd | other bwd |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model, fig in result["per_model"].items():
        ms = fig["profile"]["ms_per_step"]
        parts = [f"{ms.get(k, 0.0):.0f}" for k in
                 ("batch assembly", "embedding forward", "embedding backward", "dense matmuls",
                  "optimiser", "other forward", "other backward")]
        lines.append(f"| {model} | {fig['flops_per_sample']['total'] / 1e6:.2f} | "
                     f"{fig['sgemm_gflops']:.0f} | {fig['achieved_gflops_step']:.0f} | "
                     f"{fig['achieved_fraction_step']:.0%} | "
                     f"{fig['dense_fraction_profiled']:.0%} of sgemm | " + " | ".join(parts) + " |")
    lines += ["", "Reading the numbers:", "",
              "- Missing tokens: the generator gives a missing `C*` value an effect of its own "
              "(as real logs do). Both sides learn it as a token: FuxiCTR fills it with "
              "`\"\"`; recflow's vocabularies are declared `missing: token` (what `recflow "
              "scaffold` writes for a categorical column with blanks). With missing mapped to "
              "the padding row instead, a fixed zero vector, recflow's DCNv2 reached test AUC "
              "0.7415 in the previous run of this benchmark.",
              "- The load average is recorded per run (before: the machine; after: it includes "
              "the run's own processes, e.g. FuxiCTR's ray data-loader workers); on a shared "
              "2-core machine a 2-thread step is slowed most in its small, parallel ops "
              "(embedding backward, optimiser, element-wise), so figures from busy windows "
              "compare only within a pair.",
              "- The matmul table is what bounds the step: *achieved fraction* = step samples/s x "
              "dense FLOPs / sgemm GFLOP/s; *dense matmuls at* = the profiled matmul time "
              "against that ceiling (over 100%: the profile had a quieter moment than the sgemm "
              "measurement)."]
    over = [f"{r['framework']} {r['model']}" for r in runs
            if r["samples_s_step"] * result["per_model"][r["model"]]["flops_per_sample"]["total"]
            > result["per_model"][r["model"]]["sgemm_gflops"] * 1e9]
    if over:
        lines.append(f"- sgemm is measured between runs on the same machine; {', '.join(over)} "
                     "stepped faster than that measurement allows, so its window was quieter: "
                     "read the ceiling as a lower bound.")
    zoo = ctr_zoo.markdown(json.loads(ZOO_RESULTS.read_text())) if ZOO_RESULTS.exists() else []
    return "\n".join(lines + ab_markdown(AB_RESULTS) + zoo) + "\n"


def ab_markdown(path: Path) -> list[str]:
    """The hot-path changes before / after (`ctr_ab.py`'s JSON), if it has been run."""
    if not path.exists():
        return []
    record = json.loads(path.read_text())
    lines = ["", f"Hot-path changes, before / after (`python benchmarks/ctr_ab.py`, "
             f"interleaved in one process, medians of {record['rounds']} rounds, wall ms per "
             f"4096-row batch; load average {record['load_before']:.2f} before, "
             f"{record['load_after']:.2f} after):", "",
             "| threads | change | before ms | after ms | speed-up |", "|---:|---|---:|---:|---:|"]
    names = {"embedding": "one shared table + index_add backward (embedding fwd+bwd)",
             "cross": "cross layers as addmm + addcmul (fwd+bwd)",
             "optimiser": "fused Adam (optimiser step)",
             "step": "whole training step (all of the above)"}
    for result in record["results"]:
        for key, label in names.items():
            before, after = result[key]["before"]["wall_ms"], result[key]["after"]["wall_ms"]
            lines.append(f"| {result['threads']} | {label} | {before:.1f} | {after:.1f} | "
                         f"{before / after:.2f}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=1_000_000)
    parser.add_argument("--valid", type=int, default=100_000)
    parser.add_argument("--test", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=list(ctr_kedro.MODELS))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "data/09_benchmarks/ctr")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--fuxictr-python", type=Path, default=FUXICTR_PYTHON)
    parser.add_argument("--skip-fuxictr", action="store_true")
    parser.add_argument("--quiet-load", type=float, default=1.5,
                        help="wait for the 1-minute load average to fall below this")
    parser.add_argument("--wait", type=float, default=300, help="seconds to wait for quiet")
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the docs section from --results (and ctr_ab.json)")
    args = parser.parse_args()
    args.out = args.out.resolve()
    if args.render_only:
        result = json.loads(args.results.read_text())
        result["markdown"] = markdown(result)
        args.results.write_text(json.dumps(result, indent=2, default=str))
        write_section(DOC, TITLE, result["markdown"])
        return
    if not args.skip_fuxictr and not args.fuxictr_python.exists():
        sys.exit(f"{args.fuxictr_python} not found: run benchmarks/ctr_fuxictr_setup.sh first")
    result = run_all(args)
    result["markdown"] = markdown(result)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2, default=str))
    if not args.no_doc:
        write_section(DOC, TITLE, result["markdown"])
    print(result["markdown"])


if __name__ == "__main__":
    main()
