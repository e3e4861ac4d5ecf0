"""Checks on an exported graph: parity against torch, and latency against torch eager."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from recflow.export.runtime import run
from recflow.models.base import RankingModel
from recflow.serving.schema import OUTPUT_NAME
from recflow.serving.scorer import Scorer


class ParityError(AssertionError):
    """onnxruntime and torch disagree beyond the tolerance: the export is not faithful."""


def torch_scores(model: RankingModel, feeds: dict[str, np.ndarray],
                 batch_size: int = 16384) -> np.ndarray:
    """`predict(forward(x))` in eval mode over all rows of `feeds`, chunked."""
    model.eval()
    n = len(next(iter(feeds.values())))
    out = []
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            inputs = {k: torch.from_numpy(np.require(v[i:i + batch_size], requirements=["C", "W"]))
                      for k, v in feeds.items()}
            out.append(model.predict(model(inputs)).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.score_names)), np.float32)


def parity(model: RankingModel, sess: ort.InferenceSession, feeds: dict[str, np.ndarray], *,
           tolerance: float, name: str = "model", batch_size: int = 8192,
           expected: np.ndarray | None = None) -> dict[str, Any]:
    """Max |onnxruntime − torch| over every row and output; raises ParityError above `tolerance`.

    `expected` skips recomputing the torch scores when the caller has them.
    """
    want = torch_scores(model, feeds) if expected is None else expected
    got = run(sess, feeds, batch_size)
    return compare(got, want, tolerance=tolerance, name=name)


def compare(got: np.ndarray, want: np.ndarray, *, tolerance: float, name: str = "model",
            what: str = "scores", rows_label: str = "test rows") -> dict[str, Any]:
    """Max |got − want| (onnxruntime vs torch) over every element; ParityError above `tolerance`.

    Arrays are (rows, ...); the error names the worst row and position and both values.
    """
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise ParityError(f"model '{name}': onnxruntime returned {what} of shape {got.shape}, "
                          f"torch {want.shape}")
    got2 = got.reshape(len(got), -1) if got.ndim != 2 else got
    want2 = want.reshape(len(want), -1) if want.ndim != 2 else want
    rows = int(want.shape[0])
    diff = np.abs(got2.astype(np.float64) - want2.astype(np.float64))
    worst = np.unravel_index(int(np.nanargmax(np.where(np.isfinite(diff), diff, np.inf))),
                             diff.shape) if diff.size else (0, 0)
    max_diff = float(diff[worst]) if diff.size else 0.0
    result = {"max_abs_diff": max_diff, "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
              "rows": rows, "tolerance": tolerance}
    if not np.isfinite(max_diff) or max_diff > tolerance:
        r, c = (int(i) for i in worst)
        raise ParityError(
            f"model '{name}': onnxruntime {what} differ from torch by {max_diff:.3g} "
            f"(> export.parity_tolerance {tolerance:g}) on {rows} {rows_label}; worst at row {r}, "
            f"output {c}: torch {want2[r, c]:.8f} vs onnxruntime {got2[r, c]:.8f}. The exported "
            "graph is not faithful; no ONNX file was written")
    return result


def input_example_scores(model: RankingModel, graph: bytes, feature_spec: dict[str, Any], *,
                         tolerance: float, name: str = "model") -> list[list[float]] | None:
    """Score the spec's input example (raw records) as the service will, checked against torch.

    The raw route end to end: request validation, the compiled transforms, the exported
    graph. The scores go into the bundle's manifest, where `recflow serve --check` expects
    them back (None when the spec has no example, e.g. from streaming preprocessing).
    """
    example = feature_spec.get("input_example")
    if not example:
        return None
    scorer = Scorer(graph, feature_spec)
    got = scorer.score(example)
    compare(got, torch_scores(model, scorer.feeds(example)), tolerance=tolerance, name=name,
            rows_label="input-example records")
    return got.tolist()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def take_rows(feeds: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first `n` rows, cycling when there are fewer (latency needs exact batch sizes)."""
    total = len(next(iter(feeds.values())))
    index = np.arange(n) % max(total, 1)
    return {k: np.ascontiguousarray(v[index]) for k, v in feeds.items()}


def _time(call: Callable[[], Any], repeats: int, warmup: int,
          budget_s: float | None = None) -> dict[str, float]:
    """Per-call wall times; stops early (after at least 5 calls) once `budget_s` is spent."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    deadline = None if budget_s is None else time.perf_counter() + budget_s
    for i in range(repeats):
        start = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - start) / 1e6)
        if deadline is not None and i >= 4 and time.perf_counter() > deadline:
            break
    values = np.asarray(times)
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "mean_ms": float(values.mean()), "repeats": len(values)}


def latency_table(model: RankingModel, sessions: dict[str, ort.InferenceSession],
                  feeds: dict[str, np.ndarray], batches: Sequence[int], *, repeats: int = 200,
                  warmup: int = 20, threads: int | None = 1, budget_s: float | None = None
                  ) -> dict[str, dict[str, Any]]:
    """p50/p99 ms per call of torch eager and each onnxruntime session, per batch size.

    Returns {variant: {str(batch): {"p50_ms", "p99_ms", "mean_ms", "repeats"}}} with
    variant "torch" first, then the `sessions` keys (e.g. "ort_fp32", "ort_int8").
    The sessions should be built with the same `threads`; torch is pinned to it here.
    `budget_s` caps the timed seconds per (variant, batch) (at least 5 calls each).
    """
    table: dict[str, dict[str, Any]] = {"torch": {}, **{k: {} for k in sessions}}
    model.eval()
    with torch_threads(threads), torch.inference_mode():
        for batch in batches:
            rows = take_rows(feeds, batch)
            tensors = {k: torch.from_numpy(v) for k, v in rows.items()}
            table["torch"][str(batch)] = _time(lambda t=tensors: model.predict(model(t)),
                                               repeats, warmup, budget_s)
            for variant, sess in sessions.items():
                table[variant][str(batch)] = _time(
                    lambda s=sess, r=rows: s.run([OUTPUT_NAME], r), repeats, warmup, budget_s)
    return table
