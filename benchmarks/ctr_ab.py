"""Before / after of each ranking hot-path change, interleaved in one process.

    python benchmarks/ctr_ab.py --model-input data/09_benchmarks/ctr/recflow_dcnv2/kedro/05_model_input

On the feature spec and train split a `bench_ctr.py` run wrote, at batch 4096, each
change is timed against the code it replaced, alternating the two (ABBA) and reporting
medians of wall and CPU time, at 1 and 2 torch threads:

* embedding: one `nn.Embedding(padding_idx=0)` per vocabulary, looked up field by field
  and stacked (before) vs the shared table with offsets (`FieldEmbedding`), forward +
  backward;
* cross layers: `x0 * (W x + b) + x` as mm, add, mul, add (before) vs addmm + addcmul;
* optimiser: Adam's per-parameter loop (`foreach=False`, torch's CPU default) vs the
  fused kernel `build_optimizer` now asks for;
* whole step: the registered dcnv2 with those three reverted (before) vs as shipped,
  through `RankingTask` (batches, loss, backward, step).

Writes `--out` (default benchmarks/results/ctr_ab.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

import ctr_kedro
from recflow.features import FeatureSpec
from recflow.models.layers import CrossNetV2, FieldEmbedding
from recflow.pipelines.ranking.params import ModelEntry
from recflow.registry import MODELS
from recflow.training.core import build_optimizer
from recflow.training.data import frame_to_tensors
from recflow.training.ranking_task import RankingTask, TrainerConfig

REPO = Path(__file__).resolve().parents[1]


class PerFieldEmbedding(nn.Module):
    """The layout before: one table per vocabulary, one lookup per field, then a stack
    (categorical and numeric fields: what Criteo-shaped data has)."""

    def __init__(self, shared: FieldEmbedding) -> None:
        super().__init__()
        weight = shared.table.weight.detach()
        dim, self.fields, start = weight.shape[1], shared.fields, 1
        self.tables = nn.ModuleList()
        for size in shared.vocab_sizes:
            rows = torch.cat([torch.zeros(1, dim), weight[start:start + size - 1]])
            self.tables.append(nn.Embedding(size, dim, padding_idx=0, _weight=rows.clone()))
            start += size - 1
        self.numeric = nn.Parameter(shared.numeric.detach().clone())
        categorical = [n for n in self.fields if n not in shared.numeric_fields]
        self.index = {n: i for i, n in enumerate(categorical)}
        self.numeric_index = {n: i for i, n in enumerate(shared.numeric_fields)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([
            inputs[n].unsqueeze(-1) * self.numeric[self.numeric_index[n]]
            if n in self.numeric_index else self.tables[self.index[n]](inputs[n])
            for n in self.fields], dim=1)


class UnfusedCross(nn.Module):
    """The cross layers before: mm, bias add, product with x0, residual add."""

    def __init__(self, cross: CrossNetV2) -> None:
        super().__init__()
        self.cross = cross

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for weight, bias in zip(self.cross.weight, self.cross.bias, strict=True):
            x = x0 * (weight(x) + bias) + x
        return x


def timed(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, dict[str, float]]:
    """Median wall and CPU ms of each callable, alternating their order every round."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            w, c = time.perf_counter(), time.process_time()
            fns[name]()
            wall[name].append((time.perf_counter() - w) * 1e3)
            cpu[name].append((time.process_time() - c) * 1e3)
    return {k: {"wall_ms": statistics.median(wall[k]), "cpu_ms": statistics.median(cpu[k])}
            for k in names}


def _backward(module: nn.Module, make: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        module(make()).sum().backward()
        module.zero_grad(set_to_none=True)
    return run


def _model(spec: FeatureSpec, before: bool) -> nn.Module:
    entry = ModelEntry.model_validate(ctr_kedro.MODELS["dcnv2"])
    torch.manual_seed(0)
    model = MODELS.create(entry.name, spec, params=entry.typed_params())
    if before:
        model.embedding = PerFieldEmbedding(model.embedding)
        model.cross = UnfusedCross(model.cross)
    return model


def _stepper(model: nn.Module, train: Any, fused: bool) -> Callable[[], None]:
    config = TrainerConfig(**ctr_kedro.TRAINER)
    task = RankingTask(model, train, train, config)
    optimizer = build_optimizer(model, **config.optimizer_args())
    if not fused:
        optimizer = torch.optim.Adam([{k: v for k, v in g.items() if k != "fused"}
                                      for g in optimizer.param_groups], foreach=False)
    batches = task.batches(torch.Generator().manual_seed(0))

    def step() -> None:
        nonlocal batches
        batch = next(batches, None)
        if batch is None:
            batches = task.batches(torch.Generator().manual_seed(1))
            batch = next(batches)
        out = task.step(batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
    return step


def measure(model_input: Path, threads: int, rounds: int) -> dict[str, Any]:
    """Every before / after pair at `threads` torch threads."""
    torch.set_num_threads(threads)
    spec = FeatureSpec.from_dict(json.loads((model_input / "feature_spec.json").read_text()))
    train = frame_to_tensors(pd.read_parquet(model_input / "train.parquet"), spec)
    batch = train.take(slice(0, 4096)).inputs
    shared = _model(spec, before=False)
    out: dict[str, Any] = {"threads": threads}
    out["embedding"] = timed({
        "before": _backward(PerFieldEmbedding(shared.embedding), lambda: batch),
        "after": _backward(shared.embedding, lambda: batch)}, rounds)
    x0 = torch.randn(4096, shared.cross.bias[0].numel(), requires_grad=True)
    out["cross"] = timed({"before": _backward(UnfusedCross(shared.cross), lambda: x0),
                          "after": _backward(shared.cross, lambda: x0)}, rounds)
    shared(batch).sum().backward()
    loop = torch.optim.Adam(shared.parameters(), lr=1e-3, foreach=False)
    fused = build_optimizer(shared, lr=1e-3)
    out["optimiser"] = timed({"before": loop.step, "after": fused.step}, rounds)
    out["step"] = timed({"before": _stepper(_model(spec, True), train, fused=False),
                         "after": _stepper(_model(spec, False), train, fused=True)}, rounds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-input", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/ctr_ab.json")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = [measure(args.model_input, t, args.rounds) for t in args.threads]
    record = {"load_before": load_before, "load_after": os.getloadavg()[0],
              "rounds": args.rounds, "batch_size": 4096, "results": results}
    args.out.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
