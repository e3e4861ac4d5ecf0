"""The recflow side of `bench_ctr.py`: a throw-away Kedro env and one `kedro run` per model.

The env is written by `recflow scaffold`'s own functions (the dataset declaration, catalog
and feature fields it guesses from the CSVs), into a conf source of its own under the
benchmark's output folder (`kedro run --conf-source`), beside a copy of conf/base; the
project's `conf/` is never written. The benchmark then pins what the comparison needs:
categorical vocabularies with min_count 2 (FuxiCTR's `min_categr_count: 2`; blanks are a
token of their own, as scaffold declares them and as FuxiCTR fills them), counts as
standardised log1p, and one ranking entry at FuxiCTR's DCNv2 / DeepFM configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from recflow.datasets.scaffold import build, write

ENV = "bench_ctr"
TRAINER = {"epochs": 1, "batch_size": 4096, "optimizer": "adam", "lr": 1e-3,
           "weight_decay": 0.0, "embedding_lr": 1e-3, "embedding_weight_decay": 0.0,
           "early_stopping_patience": None, "seed": 0, "eval_batch_size": 16384,
           "progress": False, "checkpoint_dir": None}
OWN_BLOCKS = ("parameters_dataset.yml", "parameters_preprocessing.yml",
              "parameters_ranking.yml", "parameters_distillation.yml")
MODELS = {
    "dcnv2": {"name": "dcnv2", "params": {"embed_dim": 16, "structure": "parallel",
                                           "cross_layers": 3, "hidden": [400, 400, 400]}},
    "deepfm": {"name": "deepfm", "params": {"embed_dim": 16, "hidden": [400, 400, 400]}},
}


def write_env(project: Path, data: Path, out: Path, model: str) -> Path:
    """A conf source at `out/.conf` whose env `bench_ctr` trains `model` only; returns it."""
    conf = out / ".conf"
    if conf.exists():
        shutil.rmtree(conf)
    shutil.copytree(project / "conf" / "base", conf / "base")
    # the blocks this env defines whole leave base, so no merge strategy can mix them
    for name in OWN_BLOCKS:
        (conf / "base" / name).unlink(missing_ok=True)
    splits = {s: data / f"{s}.csv" for s in ("train", "valid", "test")}
    plan, _ = build(None, splits, None, None, ["label"], None, None, None, ENV, project)
    plan["fields"] = {name: ({**field, "min_count": 2}  # scaffold's `missing: token` kept
                             if field["transform"] == "vocab"
                             else {"transform": "standardize", "log": True})
                      for name, field in plan["fields"].items()}
    target = write(conf, ENV, plan, force=True)
    (target / "parameters_distillation.yml").unlink()  # not run here
    (target / "globals.yml").write_text(yaml.safe_dump({"out": str(out / "kedro")}))
    ranking = {"ranking": {"baseline": model, "trainer": TRAINER,
                           "models": {model: MODELS[model]}}}
    (target / "parameters_ranking.yml").write_text(yaml.safe_dump(ranking, sort_keys=False))
    return conf


def kedro_run(project: Path, conf: Path, model: str, threads: int) -> dict[str, Any]:
    """`kedro run --pipelines=ranking` up to the model's test metrics, in a child process:
    wall seconds and peak RSS (the kernel's `ru_maxrss`) of the whole run."""
    cmd = [sys.executable, "-m", "kedro", "run", "--conf-source", str(conf), "--env", ENV,
           "--pipelines", "ranking", "--to-outputs", f"ranking.{model}.seed_runs"]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env)
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        tail = "\n".join(output.splitlines()[-30:])
        raise RuntimeError(f"kedro run failed: {' '.join(cmd[2:])}\n{tail}")
    return {"wall_seconds": wall, "peak_rss_gib": usage.ru_maxrss / 2**20, "log": output}
