"""`recflow benchmark GRID.yml`: datasets × protocols × models × seeds, one table.

Each grid cell runs the real Kedro pipeline in its own process (so peak memory is
per model, as the kernel counts it) under a throw-away Kedro env that layers the
cell's overrides (split strategy, seeds, output folder) on the dataset's env, in a
conf source of its own beside the cell's outputs (`kedro run --conf-source`), so the
project's `conf/` is never written:

    <output>/.conf/<dataset>_<protocol>/      (removed afterwards)
        base/                                 a copy of conf/base
        bench_<grid>_<dataset>_<protocol>/
            globals.yml        out: <output>/<dataset>/<protocol>
            parameters.yml     the dataset env's merged parameter blocks, overridden,
                               each marked `_replace: true` (recflow.config_loader)
            ...                the dataset env's other files (its catalog), copied

A grid file (validated; unknown keys fail):

    pipeline: retrieval            # or ranking
    datasets: {embedded: base, movielens: movielens}   # label -> Kedro env
    protocols: [temporal, leave_one_out]
    seeds: [0, 1, 2]
    models: [popularity, sasrec]   # entries of the pipeline's YAML; default: all
    output: data/09_benchmarks/retrieval

Writes ``<output>/benchmark.json`` (every run of every cell) and
``<output>/benchmark.md`` (metric mean ± sample std, train seconds, throughput,
peak RSS, parameters, wall time).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from recflow.evaluation.aggregate import format_mean_std, mean_std

PIPELINES: dict[str, dict[str, Any]] = {
    # prerequisites: (pipeline, --to-outputs) runs before the per-model runs
    # every model input a per-model run reads (its namespace's nodes only run)
    "ranking": {"prepare": [("ranking", "ranking_item_stats,model_input_valid,model_input_test")],
                "block": "ranking",
                "split_key": ("preprocessing", "split"),
                "metrics": "08_reporting/ranking/{name}_seed_runs.json",
                "namespace": "ranking.{name}",
                "to_outputs": "ranking.{name}.seed_runs",
                "quality": ["auc", "auc_rare_items", "logloss", "gauc"],
                "throughput": "samples_per_second"},
    "retrieval": {"prepare": [("preprocessing", "split_cutoffs"), ("semantic_ids", None)],
                  "block": "retrieval", "split_key": ("retrieval", "split"),
                  "metrics": "08_reporting/retrieval/{name}_metrics.json",
                  "namespace": "retrieval.{name}",
                  "to_outputs": "retrieval.{name}.metrics",
                  "quality": ["recall@10", "ndcg@10", "recall@10_cold"],
                  "throughput": "users_per_second"},
}


class BenchmarkGrid(BaseModel):
    """The grid file; see the module docstring."""

    model_config = ConfigDict(extra="forbid")

    pipeline: Literal["ranking", "retrieval"]
    datasets: dict[str, str] = Field(min_length=1, description="label -> Kedro env")
    protocols: list[Literal["temporal", "leave_one_out", "random"]] = Field(min_length=1)
    seeds: list[int] = Field([0], min_length=1)
    models: list[str] | None = None
    output: str = "data/09_benchmarks"


def load_grid(path: Path) -> BenchmarkGrid:
    try:
        return BenchmarkGrid.model_validate(yaml.safe_load(path.read_text()) or {})
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"benchmark grid file not found: {path}") from exc


def cell_parameters(base: dict[str, Any], grid: BenchmarkGrid, protocol: str) -> dict[str, Any]:
    """The dataset env's parameters with the cell's split, seeds and model subset."""
    spec = PIPELINES[grid.pipeline]
    params = json.loads(json.dumps(base))  # a deep, plain copy
    block = params.get(spec["block"])
    if not block or "models" not in block:
        raise KeyError(f"parameters: no `{spec['block']}.models` block in this env")
    if grid.models:
        unknown = sorted(set(grid.models) - set(block["models"]))
        if unknown:
            raise KeyError(f"benchmark grid: models {unknown} are not entries of "
                           f"{spec['block']}.models ({sorted(block['models'])})")
        block["models"] = {k: v for k, v in block["models"].items() if k in grid.models}
        if block.get("baseline") not in block["models"]:
            block["baseline"] = next(iter(block["models"]))
    block["seeds"] = list(grid.seeds)
    owner, key = spec["split_key"]
    split = dict(params.setdefault(owner, {}).get(key) or {})
    params[owner][key] = {"strategy": protocol} | (
        {k: v for k, v in split.items() if k in ("valid_start", "test_start")}
        if protocol == "temporal" else {})
    return params


def _merged_config(project: Path, env: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from recflow.config_loader import DeltaConfigLoader

    loader = DeltaConfigLoader(conf_source=str(project / "conf"), env=None if env == "base"
                               else env, base_env="base", default_run_env="base",
                               config_patterns={"globals": ["globals*", "globals*/**"]},
                               merge_strategy={"parameters": "soft"})  # as settings.py
    return dict(loader["parameters"]), dict(loader["globals"])


def rebase_outputs(params: Any, old_out: str, new_out: str) -> Any:
    """Paths under the env's output root (`${globals:out}`, already resolved when the env's
    parameters were merged, e.g. checkpoint_dir) moved under the cell's root: a cell must
    not resume from, or overwrite, the env's own checkpoints."""
    if isinstance(params, dict):
        return {k: rebase_outputs(v, old_out, new_out) for k, v in params.items()}
    if isinstance(params, list):
        return [rebase_outputs(v, old_out, new_out) for v in params]
    if old_out and isinstance(params, str) and (params == old_out
                                                or params.startswith(old_out.rstrip("/") + "/")):
        return new_out + params[len(old_out.rstrip("/")):]
    return params


def _write_conf(project: Path, conf: Path, name: str, env: str, params: dict[str, Any],
                globals_: dict[str, Any], out: Path) -> Path:
    """A conf source at `conf`: conf/base copied, plus the cell's env `name`."""
    from recflow.config_loader import replacing

    if conf.exists():
        shutil.rmtree(conf)
    shutil.copytree(project / "conf" / "base", conf / "base")
    target = conf / name
    target.mkdir(parents=True)
    if env != "base":
        for src in (project / "conf" / env).glob("*"):
            if src.is_file() and not src.name.startswith(("parameters", "globals")):
                shutil.copy(src, target / src.name)
    (target / "globals.yml").write_text(yaml.safe_dump({**globals_, "out": str(out)}))
    # merged already: each block replaces base's instead of merging into it again
    (target / "parameters.yml").write_text(yaml.safe_dump(replacing(params), sort_keys=False))
    return target


def _kedro(project: Path, conf: Path, env: str, pipeline: str, *extra: str
           ) -> dict[str, float]:
    """Run `kedro run` in a child process; its wall time and peak RSS (kernel accounting)."""
    cmd = [sys.executable, "-m", "kedro", "run", "--conf-source", str(conf), "--env", env,
           "--pipelines", pipeline, *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"})
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = "\n".join(output.splitlines()[-25:])
        raise RuntimeError(f"benchmark step failed: {' '.join(cmd[2:])}\n{tail}")
    return {"wall_seconds": round(time.perf_counter() - start, 2),
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3)}  # ru_maxrss is KiB on Linux


def _progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def run_grid(grid: BenchmarkGrid, project: Path, name: str = "grid",
             log: Callable[[str], None] = _progress) -> dict[str, Any]:
    """Run every cell; returns the JSON-able result (also written under `grid.output`)."""
    spec = PIPELINES[grid.pipeline]
    output = (project / grid.output).resolve()
    rows: list[dict[str, Any]] = []
    for label, env in grid.datasets.items():
        base_params, globals_ = _merged_config(project, env)
        for protocol in grid.protocols:
            env_name = f"bench_{name}_{label}_{protocol}"
            out = output / label / protocol
            params = rebase_outputs(cell_parameters(base_params, grid, protocol),
                                    str(globals_.get("out", "")), str(out))
            conf = output / ".conf" / f"{label}_{protocol}"
            _write_conf(project, conf, env_name, env, params, globals_, out)
            try:
                for prep, to_outputs in spec["prepare"]:
                    extra = ("--to-outputs", to_outputs) if to_outputs else ()
                    log(f"[{label}/{protocol}] {prep}")
                    _kedro(project, conf, env_name, prep, *extra)
                for model in params[spec["block"]]["models"]:
                    log(f"[{label}/{protocol}] {model} × {len(grid.seeds)} seed(s)")
                    cost = _kedro(project, conf, env_name, grid.pipeline,
                                  "--namespaces", spec["namespace"].format(name=model),
                                  "--to-outputs", spec["to_outputs"].format(name=model))
                    metrics = json.loads((out / spec["metrics"].format(name=model)).read_text())
                    rows.append({"dataset": label, "protocol": protocol, "model": model,
                                 **cost, "metrics": metrics})
                    _write_result(grid, rows, output)  # a long grid keeps its finished rows
            finally:
                shutil.rmtree(conf, ignore_errors=True)
    return _write_result(grid, rows, output)


def _write_result(grid: BenchmarkGrid, rows: list[dict[str, Any]], output: Path
                  ) -> dict[str, Any]:
    result = {"pipeline": grid.pipeline, "seeds": grid.seeds, "rows": rows,
              "markdown": markdown_table(grid.pipeline, rows)}
    output.mkdir(parents=True, exist_ok=True)
    (output / "benchmark.json").write_text(json.dumps(result, indent=2, default=str))
    (output / "benchmark.md").write_text(result["markdown"])
    return result


def _summary(metrics: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
    """{mean, std, n} of a model's runs: ranking saves the runs, retrieval their summary."""
    if isinstance(metrics, list):
        return mean_std(metrics)
    return metrics["seeds"]


def markdown_table(pipeline: str, rows: list[dict[str, Any]]) -> str:
    spec = PIPELINES[pipeline]
    head = ["dataset", "protocol", "model", *spec["quality"], "train s", spec["throughput"],
            "peak RSS GiB", "params", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        summary = _summary(row["metrics"])
        cells = [row["dataset"], row["protocol"], row["model"]]
        for key in spec["quality"]:
            cells.append(format_mean_std(summary, key).removesuffix(f" (n={summary['n']})")
                         if summary["mean"].get(key) is not None else "–")
        mean = summary["mean"]
        cells += [f"{mean.get('train_seconds', float('nan')):.1f}",
                  f"{mean.get(spec['throughput'], float('nan')):,.0f}",
                  f"{row['peak_rss_gib']:.2f}", f"{int(mean.get('params', 0)):,}",
                  f"{row['wall_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="recflow benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", type=Path, help="grid YAML, e.g. benchmarks/grids/retrieval.yml")
    parser.add_argument("--project", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    grid = load_grid(args.grid)
    result = run_grid(grid, args.project.resolve(), name=args.grid.stem)
    sys.stdout.write(result["markdown"])
    return 0
