"""Where a ranking training step goes, and the machine's matmul ceiling, for `bench_ctr.py`.

* `step_breakdown`: torch.profiler over steps of recflow's own `RankingTask` (the batches,
  loss and optimiser the `kedro run` used), reading the split the pipeline wrote. Each op's
  self time is charged to a component: batch assembly (the batch iterator), embedding
  forward / backward (ops under the embedding modules, `Embedding*Backward`, the lookup's
  backward), dense matmuls (mm / addmm / bmm, forward and backward), the optimiser step,
  and the rest (element-wise ops, the loss, autograd bookkeeping).
* `sgemm`: fp32 `torch.mm` GFLOP/s at the dense layer shapes, forward and both backward
  products, at a given thread count.
* `dense_flops`: FLOPs per sample of a model's matmuls (forward + backward).
* `step_time`: ms of one forward + backward on random inputs of a feature spec's shapes.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from recflow.features import FeatureSpec
from recflow.models.layers import FieldEmbedding
from recflow.pipelines.ranking.params import ModelEntry
from recflow.registry import MODELS
from recflow.training.core import build_optimizer
from recflow.training.data import frame_to_tensors
from recflow.training.ranking_task import RankingTask, TrainerConfig

MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"}
PHASES = ("batch", "forward", "backward", "optimizer")


def linear_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """(in, out) of every dense matmul: Linear layers (cross-layer weights included)."""
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def dense_flops(model: nn.Module) -> dict[str, float]:
    """Matmul FLOPs per sample: forward 2·in·out per layer, plus what a block that multiplies
    by input-dependent or per-field matrices reports as `matmul_flops()` (MLCC's crossing);
    backward twice that (grad of each operand: the weight or the other input, and the input;
    the input grad of the first layers feeds the embeddings)."""
    forward = sum(2 * i * o for i, o in linear_shapes(model))
    forward += sum(m.matmul_flops() for m in model.modules() if hasattr(m, "matmul_flops"))
    return {"forward": forward, "backward": 2 * forward, "total": 3 * forward}


def sgemm(shapes: list[tuple[int, int]], batch: int, threads: int, seconds: float = 1.0
          ) -> dict[str, Any]:
    """fp32 GFLOP/s of the forward (B×in·in×out) and backward (B×out·out×in, in×B·B×out)
    products of each distinct shape, and the rate of a step made of `shapes`: its FLOPs over
    the time each shape's FLOPs take at that shape's rate."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rates = {}
        for i, o in sorted(set(shapes)):
            x, w, g = torch.randn(batch, i), torch.randn(i, o), torch.randn(batch, o)
            products = [(x, w), (g, w.t()), (x.t(), g)]
            for a, b in products:  # warm-up
                torch.mm(a, b)
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                for a, b in products:
                    torch.mm(a, b)
                done += 1
            rates[(i, o)] = done * 3 * 2 * batch * i * o / (time.perf_counter() - start) / 1e9
        flops = {s: shapes.count(s) * 6 * s[0] * s[1] for s in rates}
        step = sum(flops.values()) / sum(f / rates[s] for s, f in flops.items())
        return {"threads": threads, "batch": batch, "gflops": step,
                "per_shape_gflops": {f"{i}x{o}": r for (i, o), r in rates.items()}}
    finally:
        torch.set_num_threads(previous)


def model_figures(model_input: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Dense shapes, FLOPs per sample and parameters of `entry` on the preprocessed spec."""
    spec = FeatureSpec.from_dict(json.loads((model_input / "feature_spec.json").read_text()))
    model_entry = ModelEntry.model_validate(entry)
    model = MODELS.create(model_entry.name, spec, params=model_entry.typed_params())
    embedding = sum(p.numel() for m in model.modules() if isinstance(m, FieldEmbedding)
                    for p in m.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"linear_shapes": linear_shapes(model), "flops_per_sample": dense_flops(model),
            "params": total, "params_outside_embeddings": total - embedding}


def _scoped(module: nn.Module, name: str) -> None:
    """Profile everything a module's forward runs under `name` (pre / post hooks)."""
    scopes: list[Any] = []

    def enter(*_: Any) -> None:
        scopes.append(record_function(name))
        scopes[-1].__enter__()

    def leave(*_: Any) -> None:
        scopes.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave)


def _component(event: Any) -> str:
    """The component an op's self time belongs to, from its name and enclosing scopes."""
    scopes, parent = [], event.cpu_parent
    while parent is not None:
        scopes.append(parent.name)
        parent = parent.cpu_parent
    phase = next((p for p in scopes if p in PHASES), "other")
    if phase in ("batch", "optimizer"):
        return {"batch": "batch assembly", "optimizer": "optimiser"}[phase]
    if event.name in MATMUL:
        return "dense matmuls"
    if phase == "forward" and "embedding" in scopes:
        return "embedding forward"
    if phase == "backward" and any("Embedding" in s or "IndexSelect" in s or "Lookup" in s
                                   for s in [event.name, *scopes]):
        return "embedding backward"
    return f"other {phase}" if phase in ("forward", "backward") else "other"


def step_breakdown(model_input: Path, entry: dict[str, Any], trainer: dict[str, Any],
                   steps: int = 6, warmup: int = 2, threads: int = 2) -> dict[str, Any]:
    """ms per step by component over `steps` profiled training steps (after `warmup`)."""
    torch.set_num_threads(threads)
    spec = FeatureSpec.from_dict(json.loads((model_input / "feature_spec.json").read_text()))
    train = frame_to_tensors(pd.read_parquet(model_input / "train.parquet"), spec)
    model_entry = ModelEntry.model_validate(entry)
    config = TrainerConfig(**trainer)
    torch.manual_seed(config.seed)
    model = MODELS.create(model_entry.name, spec, params=model_entry.typed_params())
    for module in model.modules():
        if isinstance(module, FieldEmbedding):
            _scoped(module, "embedding")
    task = RankingTask(model, train, train, config)
    optimizer = build_optimizer(model, **config.optimizer_args())
    batches = task.batches(torch.Generator().manual_seed(0))

    def one_step() -> None:
        with record_function("batch"):
            batch = next(batches)
        with record_function("forward"):
            out = task.step(batch)
        optimizer.zero_grad(set_to_none=True)
        with record_function("backward"):
            out.loss.backward()
        with record_function("optimizer"):
            optimizer.step()

    model.train()
    for _ in range(warmup):
        one_step()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            one_step()
    wall = (time.perf_counter() - start) / steps
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.name not in PHASES and event.name != "embedding":
            totals[_component(event)] += event.self_cpu_time_total / 1e3 / steps
    return {"steps": steps, "threads": threads, "batch_size": config.batch_size,
            "wall_ms_per_step": wall * 1e3,
            "ms_per_step": dict(sorted(totals.items(), key=lambda kv: -kv[1])),
            "flops_per_sample": dense_flops(model),
            "params": sum(p.numel() for p in model.parameters()),
            "linear_shapes": linear_shapes(model)}
