"""Preprocessing benchmark: recflow's nodes vs a plain-pandas baseline doing the same job.

    python benchmarks/bench_preprocessing.py --impressions 1000000 10000000

For each size, data is generated with `recflow.datasets.synthetic` into a temp dir, then two
workers run, each in its own fresh subprocess:

* recflow: the preprocessing node functions called directly (join_events ->
  split_by_time -> fit_feature_spec -> transform_train/valid/test) plus the
  great-expectations suite of every split via GreatExpectationsValidator;
* baseline: the same job written the obvious way in pandas: dict vocabularies
  applied with `Series.map`, a per-user `groupby` with a Python loop for the
  behaviour histories, a per-row md5 for hashed crosses, and a few pandas asserts
  instead of great-expectations.

Both read the same parquet files and use the features of conf/base/
parameters_preprocessing.yml; neither writes outputs (I/O is not measured,
except the parquet load both share). Peak memory is each worker's own
`ru_maxrss` from `os.wait4` (the high-water resident set of that process,
interpreter and imports included; unlike tracemalloc it also sees pyarrow's
allocations and costs nothing at run time).

Sizes above --baseline-max-rows (default 2M) run the baseline on a sample of
users (all their impressions, so histories stay exact) and extrapolate its time
linearly to the full size; such rows are labelled "extrapolated" and get no
memory ratio. With --check (default at sizes where the baseline runs in full),
the two workers' test-split outputs are compared column by column.

Results: benchmarks/results/preprocessing.json and the `## Preprocessing`
section of docs/benchmarks.md (other sections are left untouched).
"""

from __future__ import annotations

import argparse
import hashlib
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
RESULTS = REPO / "benchmarks/results/preprocessing.json"
DOC = REPO / "docs/benchmarks.md"
TABLES = ("interactions", "users", "items")
SPLITS = ("train", "valid", "test")


def _config() -> Any:
    import yaml

    from recflow.features import FeaturesConfig

    return FeaturesConfig.model_validate(yaml.safe_load(PARAMS.read_text())["preprocessing"])


class Timer:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self) -> None:
                self.t0 = time.perf_counter()

            def __exit__(self, *exc: object) -> None:
                timer.stages[name] = timer.stages.get(name, 0.0) + time.perf_counter() - self.t0

        return _Stage()


def _load(data: Path, timer: Timer) -> dict[str, Any]:
    import pandas as pd

    with timer("load"):
        return {name: pd.read_parquet(data / f"{name}.parquet") for name in TABLES}


# --------------------------------------------------------------------------- #
# Workers (each runs in its own subprocess)
# --------------------------------------------------------------------------- #
def worker_generate(data: Path, impressions: int, users: int, items: int, seed: int) -> dict:
    from recflow.datasets.synthetic import GeneratorConfig, generate, write_parquet

    t0 = time.perf_counter()
    tables = generate(
        GeneratorConfig(n_users=users, n_items=items, n_impressions=impressions, seed=seed)
    )
    write_parquet(tables, data)
    return {"seconds": time.perf_counter() - t0}


def worker_recflow(data: Path, check_out: Path | None) -> dict:
    import logging

    logging.disable(logging.WARNING)
    from recflow.pipelines.preprocessing import nodes
    from recflow.schemas.expectations import GreatExpectationsValidator

    params, timer = _config(), Timer()
    raw = _load(data, timer)
    with timer("join"):
        events = nodes.join_events(raw["interactions"], raw["users"], raw["items"])
    del raw
    with timer("split"):
        cutoffs = nodes.split_by_time(events, params)
    with timer("fit"):
        spec = nodes.fit_feature_spec(events, cutoffs, params)
    outputs = {}
    for split in SPLITS:
        with timer("transform"):
            frame = getattr(nodes, f"transform_{split}")(events, spec)
        with timer("validate (great-expectations)"):
            GreatExpectationsValidator(suite=f"model_input_{split}").validate(frame)
        outputs[split] = len(frame)
        if check_out is not None and split == "test":
            frame.to_parquet(check_out, index=False)
        del frame
    return {"stages": timer.stages, "rows": len(events), "split_rows": outputs}


def _baseline_histories(events: Any, item: str, event: str, length: int) -> list[list]:
    """Per user: walk the impressions in time order, keep the clicked items so far."""
    histories: list[list] = [None] * len(events)  # type: ignore[list-item]
    for _, group in events.groupby("user_id", sort=False):  # events: time order, 0..n index
        rows = group.index.to_numpy()
        ts = group["timestamp"].to_numpy()
        values = group[item].tolist()
        flags = group[event].to_numpy()
        seen: list = []
        i = 0
        while i < len(rows):
            j = i
            while j < len(rows) and ts[j] == ts[i]:
                j += 1
            recent = seen[-length:]
            padded = [None] * (length - len(recent)) + recent
            for k in range(i, j):
                histories[rows[k]] = padded
            seen.extend(values[k] for k in range(i, j) if flags[k] == 1)
            i = j
    return histories


def worker_baseline(data: Path, sample_rows: int | None, check_out: Path | None) -> dict:
    import numpy as np
    import pandas as pd

    params, timer = _config(), Timer()
    raw = _load(data, timer)
    inter = raw["interactions"]
    if sample_rows is not None and sample_rows < len(inter):
        with timer("sample"):
            users = inter["user_id"].drop_duplicates().sample(frac=1.0, random_state=0)
            counts = inter["user_id"].value_counts().reindex(users)
            keep = users[(counts.cumsum() <= sample_rows).to_numpy()]
            inter = inter[inter["user_id"].isin(keep)].reset_index(drop=True)
    rows = len(inter)
    with timer("join"):
        events = inter.merge(raw["users"], on="user_id", how="left")
        events = events.merge(raw["items"], on="item_id", how="left")
        events = events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    del raw, inter

    with timer("split"):
        ts = events["timestamp"]
        train_end = int(ts.quantile(params.split.valid_start, interpolation="higher"))
        valid_end = int(ts.quantile(params.split.test_start, interpolation="higher"))
        masks = {
            "train": ts < train_end,
            "valid": (ts >= train_end) & (ts < valid_end),
            "test": ts >= valid_end,
        }
        train = events[masks["train"]]

    fitted: dict[str, dict] = {}
    with timer("fit"):
        for name, cfg in params.fields.items():
            kind = cfg.transform
            if kind == "vocab":
                counts = train[cfg.column or name].value_counts()
                counts = counts[counts >= cfg.min_count]
                ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                ordered = ordered[: cfg.max_size] if cfg.max_size else ordered
                fitted[name] = {"map": {v: i + 2 for i, (v, _) in enumerate(ordered)}}
            elif kind in ("standardize", "quantile_bucket"):
                x = train[cfg.column or name].astype(float)
                x = np.log1p(x.clip(lower=0)) if cfg.log else x
                if kind == "standardize":
                    std = x.std(ddof=0)
                    fitted[name] = {"mean": x.mean(), "std": std if std > 1e-12 else 1.0}
                else:
                    qs = np.linspace(0, 1, cfg.num_buckets + 1)[1:-1]
                    fitted[name] = {"edges": np.unique(np.quantile(x.dropna(), qs)).tolist()}

    with timer("histories"):
        histories = {
            name: _baseline_histories(
                events, params.fields[cfg.of].column or cfg.of, cfg.event, cfg.length
            )
            for name, cfg in params.fields.items()
            if cfg.transform == "sequence"
        }

    split_rows = {}
    for split in SPLITS:
        with timer("transform"):
            part = events[masks[split]]
            out = pd.DataFrame(
                {
                    "key_user": part["user_id"],
                    "key_item": part["item_id"],
                    "key_timestamp": part["timestamp"],
                }
            )
            for name, cfg in params.fields.items():
                kind = cfg.transform
                if kind == "vocab":
                    col = part[cfg.column or name]
                    out[name] = col.map(fitted[name]["map"]).fillna(1).astype("int64")
                    out.loc[col.isna(), name] = 0
                elif kind == "standardize":
                    x = part[cfg.column or name].astype(float)
                    x = np.log1p(x.clip(lower=0)) if cfg.log else x
                    f = fitted[name]
                    z = (x.fillna(f["mean"]) - f["mean"]) / f["std"]
                    out[name] = (z.clip(-cfg.clip, cfg.clip) if cfg.clip else z).astype("float32")
                elif kind == "quantile_bucket":
                    x = part[cfg.column or name].astype(float)
                    x = np.log1p(x.clip(lower=0)) if cfg.log else x
                    bins = [-np.inf, *fitted[name]["edges"], np.inf]
                    ids = pd.cut(x, bins, right=False, labels=False) + 1
                    out[name] = ids.fillna(0).astype("int64")
                elif kind == "hash_cross":
                    key = part[cfg.columns[0]].astype(str)
                    for column in cfg.columns[1:]:
                        key = key + "\x1f" + part[column].astype(str)
                    out[name] = key.map(
                        lambda s, n=cfg.num_buckets: int(hashlib.md5(s.encode()).hexdigest(), 16)
                        % n
                        + 1
                    )
                elif kind == "sequence":
                    vocab = fitted[cfg.of]["map"]
                    matrix = pd.DataFrame(
                        [histories[name][i] for i in part.index],
                        index=part.index,
                        columns=[f"{name}__{i:03d}" for i in range(cfg.length)],
                    )
                    for column in matrix.columns:  # padding (None) became NaN in the frame
                        mapped = matrix[column].map(vocab).fillna(1).astype("int64")
                        out[column] = mapped.where(matrix[column].notna(), 0)
            for label in params.labels:
                out[f"label_{label}"] = part[label].astype("int64")
        with timer("validate (pandas asserts)"):
            assert len(out) > 0 and not out.isna().any().any()
            for name, cfg in params.fields.items():
                if cfg.transform == "vocab":
                    assert out[name].between(0, len(fitted[name]["map"]) + 1).all()
            assert out[[c for c in out if c.startswith("label_")]].isin([0, 1]).all().all()
            assert 0.001 <= out["label_click"].mean() <= 0.999
            assert (out["label_click"] >= out["label_purchase"]).all()
            low = {"train": -np.inf, "valid": train_end, "test": valid_end}[split]
            high = {"train": train_end, "valid": valid_end, "test": np.inf}[split]
            assert ((out["key_timestamp"] >= low) & (out["key_timestamp"] < high)).all()
        split_rows[split] = len(out)
        if check_out is not None and split == "test":
            out.reset_index(drop=True).to_parquet(check_out, index=False)
    return {"stages": timer.stages, "rows": rows, "split_rows": split_rows}


# --------------------------------------------------------------------------- #
# Parent: spawn workers, measure, compare, report
# --------------------------------------------------------------------------- #
def _spawn(args: list[str], result: Path) -> dict:
    """Run a worker subprocess; return its JSON result plus wall time and peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--worker", *args, "--result", str(result)])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed with exit code {proc.returncode}")
    out = json.loads(result.read_text())
    out["process_seconds"] = wall
    out["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux: KiB
    return out


def _compare(recflow_file: Path, baseline_file: Path) -> dict:
    import pandas as pd

    params = _config()
    ours, theirs = pd.read_parquet(recflow_file), pd.read_parquet(baseline_file)
    hashed = [n for n, c in params.fields.items() if c.transform == "hash_cross"]
    columns = [c for c in ours.columns if c not in hashed]
    mismatched = []
    for column in columns:
        a, b = ours[column].to_numpy(), theirs[column].to_numpy()
        same = (
            abs(a.astype(float) - b.astype(float)).max() <= 1e-5
            if a.dtype.kind == "f"
            else (a == b).all()
        )
        if not same:
            mismatched.append(column)
    return {
        "rows": len(ours),
        "compared_columns": len(columns),
        "not_compared": hashed,  # different (deliberately) hash functions
        "mismatched": mismatched,
        "equal": len(ours) == len(theirs) and not mismatched,
    }


def run_size(impressions: int, workdir: Path, args: argparse.Namespace) -> dict:
    users, items = max(3_000, impressions // 100), max(5_000, impressions // 200)
    data = workdir / f"data_{impressions}"
    data.mkdir(parents=True, exist_ok=True)
    print(f"[{impressions:,}] generating ({users:,} users, {items:,} items) ...", flush=True)
    gen = _spawn(
        ["generate", "--data", str(data), "--impressions", str(impressions),
         "--users", str(users), "--items", str(items)],
        workdir / "gen.json",
    )  # fmt: skip
    sampled = impressions > args.baseline_max_rows
    check = args.check if args.check is not None else not sampled
    check_files = {w: workdir / f"{w}_test_{impressions}.parquet" for w in ("recflow", "baseline")}

    print(f"[{impressions:,}] recflow ...", flush=True)
    extra = ["--check-out", str(check_files["recflow"])] if check else []
    ours = _spawn(["recflow", "--data", str(data), *extra], workdir / "recflow.json")
    print(f"[{impressions:,}] baseline{' (sampled)' if sampled else ''} ...", flush=True)
    extra = ["--check-out", str(check_files["baseline"])] if check and not sampled else []
    if sampled:
        extra += ["--sample-rows", str(args.baseline_max_rows)]
    theirs = _spawn(["baseline", "--data", str(data), *extra], workdir / "baseline.json")

    def summary(result: dict, full_rows: int) -> dict:
        measured = sum(result["stages"].values())
        scale = full_rows / result["rows"]
        seconds = measured * scale
        return {
            "seconds": seconds,
            "measured_seconds": measured,
            "measured_rows": result["rows"],
            "extrapolated": scale != 1.0,
            "rows_per_s": full_rows / seconds,
            "peak_rss_mib": result["peak_rss_mib"],
            "process_seconds": result["process_seconds"],
            "stages": result["stages"],
            "split_rows": result["split_rows"],
        }

    entry = {
        "impressions": impressions,
        "load_average_1min_after": os.getloadavg()[0],
        "users": users,
        "items": items,
        "generate_seconds": gen["seconds"],
        "recflow": summary(ours, impressions),
        "baseline": summary(theirs, impressions),
    }
    r, b = entry["recflow"], entry["baseline"]
    entry["ratios"] = {
        "speedup_vs_baseline": b["seconds"] / r["seconds"],
        "speedup_excluding_validation": (
            sum(v for k, v in b["stages"].items() if not k.startswith("validate"))
            * (impressions / b["measured_rows"])
            / sum(v for k, v in r["stages"].items() if not k.startswith("validate"))
        ),
        "peak_rss_vs_baseline": None if b["extrapolated"] else r["peak_rss_mib"] / b["peak_rss_mib"],
    }
    entry["check"] = _compare(check_files["recflow"], check_files["baseline"]) if check else None
    if not args.keep_data:
        shutil.rmtree(data, ignore_errors=True)
        for f in check_files.values():
            f.unlink(missing_ok=True)
    print(json.dumps({k: entry[k] for k in ("impressions", "ratios", "check")}, indent=1))
    return entry


def _machine() -> dict:
    import numpy
    import pandas

    import recflow

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pandas": pandas.__version__,
        "numpy": numpy.__version__,
        "recflow": recflow.__version__,
    }


def _fmt_s(x: float) -> str:
    return f"{x:,.1f}" if x >= 10 else f"{x:,.2f}"


def markdown(report: dict) -> str:
    lines = [
        "## Preprocessing",
        "",
        "`python benchmarks/bench_preprocessing.py --impressions "
        + " ".join(str(r["impressions"]) for r in report["runs"])
        + "` on "
        + f"{report['machine']['cpus']} CPU cores, Python {report['machine']['python']}, "
        + f"pandas {report['machine']['pandas']}"
        + f" ({report['created']}). Raw JSON: `benchmarks/results/preprocessing.json`.",
        "",
        *_load_note(report),
        "recflow = the preprocessing node functions (join, split, fit, transform x3) plus the "
        "great-expectations suite of each split; baseline = the same features in plain pandas "
        "(dict `map` vocabularies, per-user `groupby` loop for histories, per-row md5 crosses, "
        "pandas asserts instead of great-expectations). Both start from the same parquet "
        "files; outputs are not written. Time = sum of stages (load included); peak RSS = "
        "the worker process's `ru_maxrss` (interpreter and imports included). "
        "Ratios are baseline / recflow time from the same run.",
        "",
        "| impressions | recflow s | baseline s | speed-up | speed-up w/o validation "
        "| recflow rows/s | baseline rows/s | recflow peak RSS | baseline peak RSS "
        "| RSS ratio | outputs equal |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in report["runs"]:
        r, b, q = run["recflow"], run["baseline"], run["ratios"]
        star = " *" if b["extrapolated"] else ""
        ratio = q["peak_rss_vs_baseline"]
        rss_ratio = "-" if ratio is None else f"{ratio:.2f}"
        check = run["check"]
        equal = (
            "n/a (sampled)"
            if check is None
            else ("yes" if check["equal"] else f"NO: {check['mismatched']}")
        )
        lines.append(
            f"| {run['impressions']:,} | {_fmt_s(r['seconds'])} | {_fmt_s(b['seconds'])}{star} "
            f"| {q['speedup_vs_baseline']:.1f}x | {q['speedup_excluding_validation']:.1f}x "
            f"| {r['rows_per_s']:,.0f} | {b['rows_per_s']:,.0f}{star} "
            f"| {r['peak_rss_mib'] / 1024:.2f} GiB "
            f"| {b['peak_rss_mib'] / 1024:.2f} GiB{' (sample)' if b['extrapolated'] else ''} "
            f"| {rss_ratio} "
            f"| {equal} |"
        )
    sampled = [r for r in report["runs"] if r["baseline"]["extrapolated"]]
    if sampled:
        lines.append("")
        for run in sampled:
            b = run["baseline"]
            lines.append(
                f"\\* {run['impressions']:,}: the baseline ran on a sample of "
                f"{b['measured_rows']:,} impressions (whole users) in "
                f"{_fmt_s(b['measured_seconds'])} s and its time is **extrapolated linearly** to "
                f"the full size; its peak RSS is that of the sample, so no memory ratio is given."
            )
    order = ["load", "sample", "join", "split", "fit", "histories", "transform"]
    for worker, note in (("recflow", ""), ("baseline", ", as measured (sampled rows for *)")):
        stages = sorted({k for run in report["runs"] for k in run[worker]["stages"]})
        stages = [s for s in order if s in stages] + [s for s in stages if s not in order]
        lines += [
            "",
            f"{worker} stage breakdown (seconds{note}):",
            "",
            "| impressions | " + " | ".join(stages) + " |",
            "|---:|" + "---:|" * len(stages),
        ]
        for run in report["runs"]:
            st = run[worker]["stages"]
            star = " *" if run[worker]["extrapolated"] else ""
            lines.append(
                f"| {run['impressions']:,}{star} | "
                + " | ".join(_fmt_s(st[s]) if s in st else "-" for s in stages)
                + " |"
            )
    return "\n".join(lines) + "\n"


def _load_note(report: dict) -> list[str]:
    loads = [r.get("load_average_1min_after") for r in report["runs"]]
    if any(v is None for v in loads):
        return []
    cpus = report["machine"]["cpus"]
    if max(loads) <= 0.5 * cpus:
        return []
    return [
        f"Note: the machine was shared during this run (1-min load average up to "
        f"{max(loads):.1f} on {cpus} cores), so absolute times are inflated and noisy; "
        f"the ratios compare two workers of the same run.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impressions", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--baseline-max-rows", type=int, default=2_000_000,
                        help="above this, the baseline runs on a user sample and is extrapolated")  # fmt: skip
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=None,
                        help="compare test-split outputs (default: when the baseline is full size)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--render", action="store_true",
                        help="only re-render --doc from the existing --json")  # fmt: skip
    # worker mode (internal)
    parser.add_argument("--worker", choices=["generate", "recflow", "baseline"])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--result", type=Path)
    parser.add_argument("--users", type=int)
    parser.add_argument("--items", type=int)
    parser.add_argument("--sample-rows", type=int)
    parser.add_argument("--check-out", type=Path)
    args = parser.parse_args(argv)

    if args.worker:
        if args.worker == "generate":
            out = worker_generate(
                args.data, args.impressions[0], args.users, args.items, args.seed
            )
        elif args.worker == "recflow":
            out = worker_recflow(args.data, args.check_out)
        else:
            out = worker_baseline(args.data, args.sample_rows, args.check_out)
        args.result.write_text(json.dumps(out))
        return 0

    if args.render:
        write_section(args.doc, "Preprocessing", markdown(json.loads(args.json.read_text())))
        return 0

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recflow-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        runs = [run_size(n, workdir, args) for n in args.impressions]
    finally:
        if args.workdir is None and not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "benchmark": "preprocessing",
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": _machine(),
        "params_file": str(PARAMS.relative_to(REPO)),
        "baseline_max_rows": args.baseline_max_rows,
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    section = markdown(report)
    write_section(args.doc, "Preprocessing", section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
