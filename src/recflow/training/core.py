"""One training core for every model: the epoch loop, validation, early stopping, checkpoints.

A trainable component describes only what is its own, as a `Task` (RecBole's split of jobs:
models keep forward / loss / scores, the loop lives here):

* ``module``: the `nn.Module` whose weights are trained, checkpointed and restored;
* ``batches(generator)``: one epoch's batches, shuffled with the core's generator;
* ``step(batch) -> Step``: the mean loss of a batch (and how many samples it covered);
* ``validate() -> dict``: metrics on the held-out split, one of them the monitored one.

The core owns the rest, written once: optimiser construction (`build_optimizer`), the
step loop with its tqdm bar (`run_epoch`), the epoch bookkeeping (`EpochRecorder`: history
row, monitored value optionally smoothed over the last epochs, best weights, patience, log
line, checkpoint) and checkpointing (`Checkpoints`: save, latest, load with a fingerprint
check). Everything that decides the next step (weights, optimiser moments, torch's global
RNG, the shuffling generator, the recorder's state) goes into each epoch's checkpoint, so a
run killed after epoch k and resumed ends with bit-identical weights and metrics on CPU.

Runners: `fit` trains in this process; the DDP runner (`training.distributed`) drives the
same `EpochRecorder` / `Checkpoints` / `build_optimizer` from rank 0.

Example (a least-squares task)::

    >>> import torch
    >>> class Line:
    ...     def __init__(self):
    ...         self.module = torch.nn.Linear(1, 1)
    ...         self.x = torch.linspace(-1, 1, 64).unsqueeze(1)
    ...         self.y = 3 * self.x
    ...     def batches(self, generator):
    ...         order = torch.randperm(64, generator=generator)
    ...         return (order[i:i + 16] for i in range(0, 64, 16))
    ...     def step(self, idx):
    ...         loss = ((self.module(self.x[idx]) - self.y[idx]) ** 2).mean()
    ...         return Step(loss, len(idx))
    ...     def validate(self):
    ...         with torch.no_grad():
    ...             return {"mse": float(((self.module(self.x) - self.y) ** 2).mean())}
    >>> task = Line()
    >>> result = fit(task, FitConfig(epochs=30, monitor="mse", mode="min", progress=False),
    ...              build_optimizer(task.module, lr=0.1))
    >>> result.best_value < 0.01
    True
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import torch
from pydantic import Field
from torch import nn
from tqdm import tqdm

from recflow.atomic import atomic_file
from recflow.config_types import MAX_EPOCHS, MAX_ROWS, StrictModel

logger = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"epoch_(\d+)\.pt")


class FitConfig(StrictModel):
    """How the core runs a task: epochs, early stopping, checkpoints (typed YAML)."""

    epochs: int = Field(10, ge=1, le=MAX_EPOCHS, description="Most epochs to train.")
    seed: int = 0
    monitor: str = Field("valid_auc", description="Key of the task's validation metrics that "
                         "picks the best epoch and drives early stopping.")
    mode: Literal["max", "min"] = "max"
    patience: int | None = Field(
        None, ge=1, le=MAX_EPOCHS, description="Epochs without a gain of the (smoothed) "
        "monitored metric before stopping; the best epoch's weights are then restored. "
        "None: train every epoch, keep the last weights.")
    smoothing: int = Field(
        1, ge=1, le=20, description="Compare the mean of the monitored metric over the last "
        "N epochs (a small validation set is noisy); 1: the raw value.")
    min_delta: float = Field(0.0, ge=0, description="A gain smaller than this is no gain.")
    max_steps_per_epoch: int | None = Field(None, ge=1, le=MAX_ROWS)
    progress: bool = True
    checkpoint_dir: str | None = None
    resume: bool = Field(True, description="Continue from the latest checkpoint in "
                         "`checkpoint_dir` (exact; refused if the fingerprint differs).")


class Step(NamedTuple):
    """One batch's outcome: the mean loss, the samples it covered, the gradient weight."""

    loss: torch.Tensor
    count: int
    weight: float = 1.0  # DDP: a rank's share of the global batch


class Task(Protocol):
    """What a trainable component tells the core (see the module docstring)."""

    module: nn.Module

    def batches(self, generator: torch.Generator) -> Iterable[Any]: ...

    def step(self, batch: Any) -> Step: ...

    def validate(self) -> dict[str, float]: ...


@dataclass
class FitState:
    """The recorder's state (plain types: it travels in weights-only checkpoints)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_value: float = -math.inf  # of the (smoothed) monitored metric, sign-adjusted: higher wins
    best_weights: dict[str, torch.Tensor] | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best_epoch": self.best_epoch,
                "best_value": self.best_value, "best_weights": self.best_weights,
                "stopped_early": self.stopped_early}


@dataclass
class FitResult:
    """Per-epoch history (1-based `epoch`), the best epoch and its monitored value."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_value: float  # the monitored metric (smoothed when `smoothing` > 1), nan if never finite
    stopped_early: bool
    train_seconds: float  # wall time of all epochs (train + validation), including pre-resume
    monitor: str = "valid_auc"


# ---- optimiser ---------------------------------------------------------------------------
def build_optimizer(module: nn.Module, *, lr: float, name: Literal["adam", "adamw"] = "adam",
                    weight_decay: float = 0.0, embedding_lr: float | None = None,
                    embedding_weight_decay: float | None = None) -> torch.optim.Optimizer:
    """Adam / AdamW with the embedding tables in their own group (own lr and decay).

    Embedding rows are updated sparsely and hold most parameters of a recommender, so their
    decay and step size are tuned apart from the dense layers'. A parameter tagged with an
    ``lr_scale`` attribute (`scaled_lr`) gets its own group at ``lr * lr_scale``: Adam moves
    every weight by about ``lr`` per step, too slow for a lone logit offset that must travel
    several units.
    """
    embedding_ids = {id(m.weight) for m in module.modules()
                     if isinstance(m, nn.Embedding | nn.EmbeddingBag)}
    params = [p for p in module.parameters() if p.requires_grad]
    scaled = [p for p in params if hasattr(p, "lr_scale")]
    plain = [p for p in params if not hasattr(p, "lr_scale")]
    groups = [
        {"params": [p for p in plain if id(p) in embedding_ids], "lr": embedding_lr or lr,
         "weight_decay": weight_decay if embedding_weight_decay is None
         else embedding_weight_decay},
        {"params": [p for p in plain if id(p) not in embedding_ids], "lr": lr,
         "weight_decay": weight_decay},
        *({"params": [p], "lr": lr * p.lr_scale, "weight_decay": 0.0} for p in scaled),
    ]
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    # the fused kernel (CPU and CUDA) does Adam's update in one pass per tensor: same maths,
    # ~4x faster than the default per-parameter loop on CPU (benchmarks: CTR training)
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                 for p in params)
    return cls([g for g in groups if g["params"]], fused=fused or None)


def scaled_lr(param: nn.Parameter, scale: float) -> nn.Parameter:
    """Tag `param` so `build_optimizer` steps it at ``lr * scale`` (no weight decay)."""
    param.lr_scale = float(scale)
    return param


# ---- checkpoints -------------------------------------------------------------------------
class Checkpoints:
    """Epoch checkpoints in one directory: atomic save, latest, fingerprint-checked load.

    `fingerprint` (plain data) names what must not change between a run and its resume:
    the model entry, its settings, the data / feature-spec hash. A checkpoint with another
    fingerprint is refused before anything trains, naming what differs.
    """

    def __init__(self, directory: str | Path, fingerprint: Mapping[str, Any]) -> None:
        self.directory = Path(directory)
        self.fingerprint = dict(fingerprint)

    def latest(self) -> Path | None:
        found = [(int(m.group(1)), p) for p in self.directory.glob("epoch_*.pt")
                 if (m := CHECKPOINT.fullmatch(p.name))]
        return max(found)[1] if found else None

    def save(self, epoch: int, payload: dict[str, Any]) -> Path:
        """Write atomically (tmp + fsync + rename), then drop older epochs: a crash leaves
        one valid file."""
        path = self.directory / f"epoch_{epoch:04d}.pt"
        with atomic_file(path) as f:
            torch.save({**payload, "fingerprint": self.fingerprint}, f)
        for old in self.directory.glob("epoch_*.pt"):
            if old != path and CHECKPOINT.fullmatch(old.name):
                old.unlink()
        return path

    def load(self, path: Path) -> dict[str, Any]:
        """The payload (weights only), refused if its fingerprint differs from this run's."""
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a checkpoint we cannot read is a refusal
            raise ValueError(f"cannot resume from {path}: not a readable recflow checkpoint "
                             f"({type(exc).__name__}); delete it to start over") from None
        theirs = payload.get("fingerprint") if isinstance(payload, dict) else None
        if theirs != self.fingerprint:
            theirs = theirs if isinstance(theirs, dict) else {}
            changed = sorted(k for k in self.fingerprint.keys() | theirs.keys()
                             if theirs.get(k) != self.fingerprint.get(k))
            detail = "; ".join(_difference(k, theirs.get(k), self.fingerprint.get(k))
                               for k in changed[:5])
            raise ValueError(f"cannot resume from {path}: it was written for other settings "
                             f"({detail}). Delete the directory, or set resume: false")
        return payload


def _difference(key: str, theirs: Any, ours: Any) -> str:
    if isinstance(theirs, dict) and isinstance(ours, dict):
        keys = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
        return f"{key}: {', '.join(f'{k} {theirs.get(k)!r} -> {ours.get(k)!r}' for k in keys)}"
    return f"{key}: {theirs!r} -> {ours!r}"


# ---- the epoch ---------------------------------------------------------------------------
def run_epoch(module: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Any],
              step: Any, *, steps: int | None = None, desc: str = "",
              progress: bool = True) -> tuple[float, int, float]:
    """One pass over `batches` (at most `steps`): (mean loss, samples, seconds)."""
    module.train()
    loss_sum, seen, start = 0.0, 0, time.perf_counter()
    with tqdm(total=steps, desc=desc, unit="step", leave=False,
              disable=None if progress else True) as bar:
        for batch in itertools.islice(batches, steps):
            out = step(batch)
            optimizer.zero_grad(set_to_none=True)
            (out.loss * out.weight if out.weight != 1.0 else out.loss).backward()
            optimizer.step()
            loss_sum += float(out.loss.detach()) * out.count
            seen += out.count
            bar.update()
            if not bar.disable:
                bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.4f}", refresh=False,
                                samples_s=f"{seen / (time.perf_counter() - start):.0f}")
    return loss_sum / max(seen, 1), seen, time.perf_counter() - start


class EpochRecorder:
    """The epoch bookkeeping, written once: history row, best epoch and weights (by the
    monitored metric, smoothed over `smoothing` epochs), patience, log line, checkpoint."""

    def __init__(self, config: FitConfig, checkpoints: Checkpoints | None = None,
                 name: str = "model") -> None:
        self.config = config
        self.checkpoints = checkpoints
        self.name = name
        self.state = FitState()

    def resume(self, module: nn.Module, optimizer: torch.optim.Optimizer,
               generator: torch.Generator) -> dict[str, Any] | None:
        """Restore the latest checkpoint if there is one (and `resume`); returns its payload."""
        if self.checkpoints is None or not self.config.resume:
            return None
        latest = self.checkpoints.latest()
        if latest is None:
            return None
        payload = self.checkpoints.load(latest)
        try:  # same settings, other parameters: a checkpoint from an older layout of the model
            module.load_state_dict(payload["module"])
            optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise ValueError(
                f"cannot resume from {latest}: its weights or optimiser state do not fit "
                f"{self.name}'s parameters ({first}); it was written by another version of "
                f"the model (e.g. an older recflow). Delete {latest.parent}, or set resume: "
                "false") from None
        torch.set_rng_state(payload["torch_rng"])
        generator.set_state(payload["shuffle_rng"])
        self.state = FitState(**payload["state"])
        logger.info("%s: resuming from %s (epoch %d done)", self.name, latest,
                    len(self.state.history))
        return payload

    @property
    def done(self) -> bool:
        return self.state.stopped_early

    def _score(self) -> float:
        """The sign-adjusted monitored value, averaged over the last `smoothing` epochs."""
        key = self.config.monitor
        recent = [row.get(key) for row in self.state.history[-self.config.smoothing:]]
        values = [float(v) for v in recent if v is not None and math.isfinite(float(v))]
        if not values:
            return -math.inf
        mean = sum(values) / len(values)
        return mean if self.config.mode == "max" else -mean

    def record(self, row: dict[str, Any], module: nn.Module, optimizer: torch.optim.Optimizer,
               generator: torch.Generator, extra: dict[str, Any] | None = None) -> None:
        """Append `row` (must hold `epoch` and the monitored key), update best / patience,
        log one line and write the checkpoint."""
        if self.config.monitor not in row:
            raise KeyError(f"{self.name}: validation returned {sorted(row)}, not the "
                           f"monitored metric '{self.config.monitor}'")
        state, epoch = self.state, int(row["epoch"])
        state.history.append(row)
        score = self._score()
        if state.best_epoch == 0 or score > state.best_value + self.config.min_delta:
            state.best_epoch, state.best_value = epoch, score
            if self.config.patience is not None:
                state.best_weights = {k: v.detach().clone()
                                      for k, v in module.state_dict().items()}
        elif self.config.patience is not None and epoch - state.best_epoch >= self.config.patience:
            state.stopped_early = True
        shown = {k: v for k, v in row.items() if k not in ("epoch", "seconds")}
        logger.info("%s epoch %d/%d %s %.1fs%s", self.name, epoch, self.config.epochs,
                    " ".join(f"{k}={_fmt(v)}" for k, v in shown.items()),
                    row.get("seconds", 0.0), " (best)" if state.best_epoch == epoch else "")
        if self.checkpoints is not None:
            self.checkpoints.save(epoch, {
                "module": module.state_dict(), "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(), "shuffle_rng": generator.get_state(),
                "state": state.to_dict(), **(extra or {})})

    def finish(self, module: nn.Module) -> FitResult:
        """Restore the best weights (when early stopping is on) and summarise."""
        state = self.state
        if state.stopped_early:
            logger.info("%s: early stopping, no %s gain for %d epochs", self.name,
                        self.config.monitor, self.config.patience)
        if state.best_weights is not None:
            module.load_state_dict(state.best_weights)
            logger.info("%s: restored the best weights (epoch %d)", self.name, state.best_epoch)
        best = state.best_value if self.config.mode == "max" else -state.best_value
        return FitResult(history=state.history, best_epoch=state.best_epoch,
                         best_value=best if math.isfinite(best) else float("nan"),
                         stopped_early=state.stopped_early,
                         train_seconds=sum(r.get("seconds", 0.0) for r in state.history),
                         monitor=self.config.monitor)


def _fmt(value: Any) -> str:
    return f"{value:.5g}" if isinstance(value, float) else str(value)


# ---- the local runner --------------------------------------------------------------------
def fit(task: Task, config: FitConfig, optimizer: torch.optim.Optimizer,
        checkpoints: Checkpoints | None = None, name: str = "model",
        steps: int | None = None) -> FitResult:
    """Train `task.module` in place: epochs of `task.step`, `task.validate` after each.

    `steps`: batches per epoch for the progress bar (capped by `max_steps_per_epoch`).
    With `patience`, the best epoch's weights are restored at the end; with checkpoints,
    every epoch is saved and a later call resumes from the latest one.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    if checkpoints is None and config.checkpoint_dir:
        checkpoints = Checkpoints(config.checkpoint_dir, {})
    recorder = EpochRecorder(config, checkpoints, name)
    recorder.resume(task.module, optimizer, generator)
    cap = config.max_steps_per_epoch
    total = min(steps, cap) if steps is not None and cap is not None else (steps or cap)
    for epoch in range(len(recorder.state.history) + 1, config.epochs + 1):
        if recorder.done:
            break
        start = time.perf_counter()
        loss, seen, train_s = run_epoch(task.module, optimizer, task.batches(generator),
                                        task.step, steps=total, progress=config.progress,
                                        desc=f"{name} epoch {epoch}/{config.epochs}")
        metrics = task.validate()
        row = {"epoch": epoch, "train_loss": loss, **metrics,
               "seconds": time.perf_counter() - start,
               "samples_per_s": seen / train_s if train_s > 0 else 0.0}
        recorder.record(row, task.module, optimizer, generator)
    return recorder.finish(task.module)
