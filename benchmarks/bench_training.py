"""Training throughput and peak memory per ranking model on generated data.

    python benchmarks/bench_training.py --impressions 1000000 --batch-size 4096

Each model runs in its own subprocess (so peak RSS is its own): a fixed number of
optimizer steps over pre-built column tensors, timing batch slicing (data loading)
separately from forward/backward/step. Results go to benchmarks/results/training.json
and a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def prepare(impressions: int, workdir: Path) -> Path:
    """Generate data and run the preprocessing node functions once; returns the data dir."""
    import yaml

    from recflow.datasets.synthetic import GeneratorConfig, generate
    from recflow.features import FeaturesConfig
    from recflow.pipelines.preprocessing import nodes

    out = workdir / f"model_input_{impressions}"
    if (out / "train.parquet").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    n_users, n_items = max(3000, impressions // 60), max(5000, impressions // 40)
    tables = generate(GeneratorConfig(n_users=n_users, n_items=n_items,
                                      n_impressions=impressions))
    conf = Path(__file__).resolve().parents[1] / "conf/base/parameters_preprocessing.yml"
    params = FeaturesConfig.model_validate(yaml.safe_load(conf.read_text())["preprocessing"])
    events = nodes.join_events(tables.interactions, tables.users, tables.items)
    spec = nodes.fit_feature_spec(events, nodes.split_by_time(events, params), params)
    nodes.transform_train(events, spec).to_parquet(out / "train.parquet")
    (out / "feature_spec.json").write_text(json.dumps(spec))
    return out


def worker(model_name: str, data: Path, batch_size: int, steps: int) -> dict:
    import pandas as pd
    import torch

    from recflow.features import FeatureSpec
    from recflow.registry import MODELS
    from recflow.training.core import build_optimizer
    from recflow.training.data import frame_to_tensors, iterate_batches
    from recflow.training.trainer import TrainerConfig

    spec = FeatureSpec.from_dict(json.loads((data / "feature_spec.json").read_text()))
    batch = frame_to_tensors(pd.read_parquet(data / "train.parquet"), spec)
    model = MODELS.create(model_name, spec, params={})
    batch = batch.select(model.input_names)
    optimizer = build_optimizer(model, **TrainerConfig().optimizer_args())
    generator = torch.Generator().manual_seed(0)
    batches = iterate_batches(batch, batch_size, shuffle=True, generator=generator)
    load_s = compute_s = 0.0
    for step in range(steps + 3):  # 3 warm-up steps are not timed
        t0 = time.perf_counter()
        mb = next(batches, None)
        if mb is None:
            batches = iterate_batches(batch, batch_size, shuffle=True, generator=generator)
            mb = next(batches)
        t1 = time.perf_counter()
        loss = model.loss(model(mb.inputs), mb.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        t2 = time.perf_counter()
        if step >= 3:
            load_s, compute_s = load_s + t1 - t0, compute_s + t2 - t1
    total = load_s + compute_s
    return {
        "model": model_name,
        "params": int(sum(p.numel() for p in model.parameters())),
        "samples_per_s": steps * batch_size / total,
        "data_loading_share": load_s / total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--impressions", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "recflow-bench")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.batch_size, args.steps)))
        return 0

    from recflow.registry import MODELS

    data = prepare(args.impressions, args.workdir)
    rows = []
    for name in args.models or MODELS.list():
        out = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--data", str(data),
             "--batch-size", str(args.batch_size), "--steps", str(args.steps)],
            check=True, capture_output=True, text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{name}: {rows[-1]['samples_per_s']:.0f} samples/s", file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    result = {"impressions": args.impressions, "batch_size": args.batch_size,
              "steps": args.steps, "models": rows}
    (RESULTS / "training.json").write_text(json.dumps(result, indent=2))
    print("| model | params | samples/s | data-loading share | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params']:,} | {r['samples_per_s']:,.0f} | "
              f"{r['data_loading_share']:.1%} | {r['peak_rss_mb']:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
