"""The training core: recorder (smoothing, patience, best weights), checkpoints, exact resume."""

from __future__ import annotations

import doctest
import logging

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from recflow.models.retrieval import RETRIEVAL_MODELS
from recflow.models.retrieval.base import EvalSet, RetrievalData
from recflow.training import core
from recflow.training.core import Checkpoints, FitConfig, Step, build_optimizer, fit


def test_the_module_example_runs():
    logging.disable(logging.INFO)  # a handler on stdout (set by an earlier Kedro run) would
    try:                           # print the epoch log lines into the doctest's output
        assert doctest.testmod(core).failed == 0
    finally:
        logging.disable(logging.NOTSET)


class Scripted:
    """A linear model whose validation metric follows a script, to test the bookkeeping."""

    def __init__(self, script: list[float]) -> None:
        torch.manual_seed(0)
        self.module = torch.nn.Linear(2, 1)
        self.script, self.epoch, self.snapshots = script, 0, {}
        self.x = torch.randn(32, 2)

    def batches(self, generator):
        return iter([torch.randperm(32, generator=generator)[:8] for _ in range(2)])

    def step(self, idx):
        return Step(self.module(self.x[idx]).pow(2).mean(), len(idx))

    def validate(self):
        self.epoch += 1
        self.snapshots[self.epoch] = {k: v.clone() for k, v in self.module.state_dict().items()}
        return {"valid_metric": self.script[self.epoch - 1]}


def _fit(task, **config):
    config = FitConfig(monitor="valid_metric", progress=False, **config)
    return fit(task, config, build_optimizer(task.module, lr=0.1))


def test_early_stopping_restores_the_best_weights():
    task = Scripted([0.1, 0.3, 0.2, 0.25, 0.1, 0.9])
    result = _fit(task, epochs=6, patience=2)
    assert result.stopped_early and result.best_epoch == 2 and len(result.history) == 4
    assert result.best_value == pytest.approx(0.3)
    for key, value in task.module.state_dict().items():
        assert torch.equal(value, task.snapshots[2][key])


def test_smoothing_compares_the_mean_of_the_last_epochs():
    # raw best: epoch 2 (a lucky spike); over 2 epochs the mean is best at epoch 4
    script = [0.10, 0.40, 0.12, 0.35, 0.34, 0.10, 0.10]
    raw = _fit(Scripted(script), epochs=7, patience=3)
    smooth = _fit(Scripted(script), epochs=7, patience=3, smoothing=2)
    assert raw.best_epoch == 2
    assert smooth.best_epoch == 5 and smooth.best_value == pytest.approx((0.35 + 0.34) / 2)


def test_min_mode_and_min_delta():
    result = _fit(Scripted([1.0, 0.5, 0.49, 0.3]), epochs=4, mode="min", min_delta=0.05)
    assert result.best_epoch == 4 and not result.stopped_early
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]


def test_a_metric_that_is_not_computed_is_named():
    task = Scripted([0.1])
    with pytest.raises(KeyError, match="not the monitored metric 'valid_ndcg@10'"):
        fit(task, FitConfig(monitor="valid_ndcg@10", epochs=1, progress=False),
            build_optimizer(task.module, lr=0.1))


def test_bad_settings_are_refused():
    with pytest.raises(ValidationError, match="patience"):
        FitConfig(patience=0)
    with pytest.raises(ValidationError, match="smoothing"):
        FitConfig(smoothing=0)


def test_a_checkpoint_for_other_settings_is_refused_naming_them(tmp_path):
    Checkpoints(tmp_path, {"entry": {"model": "sasrec", "lr": 0.001}}).save(1, {"x": 1})
    theirs = Checkpoints(tmp_path, {"entry": {"model": "two_tower", "lr": 0.001}})
    with pytest.raises(ValueError, match=r"model 'sasrec' -> 'two_tower'"):
        theirs.load(theirs.latest())
    (tmp_path / "epoch_0001.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable recflow checkpoint"):
        theirs.load(theirs.latest())


# ---- a retrieval model through the core ----------------------------------------------------
def _cyclic(seed: int, checkpoints: Checkpoints | None = None, patience: int | None = None):
    """Users walk a cycle of 12 items; validation = the next item after their history."""
    rng = np.random.default_rng(0)
    seqs = [(rng.integers(0, 12) + np.arange(10)) % 12 + 1 for _ in range(40)]
    valid = EvalSet([s[:-1] for s in seqs], [{int(s[-1])} for s in seqs], set(), 12,
                    seen=[s[:-1] for s in seqs])
    return RetrievalData(n_items=12, train_sequences=[s[:-1] for s in seqs], seed=seed,
                         valid=valid, checkpoints=checkpoints,
                         fit=FitConfig(monitor="valid_ndcg@10", patience=patience,
                                       progress=False))


SMALL = {"max_len": 6, "embed_dim": 16, "heads": 1, "layers": 1, "batch_size": 40,
         "lr": 0.01, "dropout": 0.1}


class Interrupt(Exception):
    pass


def test_retrieval_resume_after_a_crash_mid_epoch_is_exact(tmp_path, monkeypatch):
    full = RETRIEVAL_MODELS.create("sasrec", params={**SMALL, "epochs": 4}).fit(_cyclic(3))

    ckpt = Checkpoints(tmp_path, {"entry": "sasrec-small"})
    crashing = RETRIEVAL_MODELS.create("sasrec", params={**SMALL, "epochs": 4})
    calls = {"n": 0}
    real_run_epoch = core.run_epoch

    def run_epoch_crashing_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # a crash in the middle of epoch 3: one step, then the kill
            batches = iter(args[2])
            next(batches)
            raise Interrupt
        return real_run_epoch(*args, **kwargs)

    monkeypatch.setattr(core, "run_epoch", run_epoch_crashing_in_epoch_3)
    with pytest.raises(Interrupt):
        crashing.fit(_cyclic(3, ckpt))
    monkeypatch.setattr(core, "run_epoch", real_run_epoch)
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_0002.pt"]

    resumed = RETRIEVAL_MODELS.create("sasrec", params={**SMALL, "epochs": 4}).fit(
        _cyclic(3, ckpt))
    strip = [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")}
             for row in full.fit_result.history]
    assert strip == [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")}
                     for row in resumed.fit_result.history]
    for key, value in full.module.state_dict().items():
        assert torch.equal(value, resumed.module.state_dict()[key])


def test_retrieval_early_stopping_keeps_the_best_validation_weights():
    model = RETRIEVAL_MODELS.create("sasrec", params={**SMALL, "epochs": 30, "lr": 0.05})
    model.fit(_cyclic(0, patience=2))
    result = model.fit_result
    best = max(row["valid_ndcg@10"] for row in result.history)
    assert result.best_value == pytest.approx(best)
    data = _cyclic(0)
    from recflow.models.retrieval.base import validation_metrics

    assert validation_metrics(model, data)["valid_ndcg@10"] == pytest.approx(best)


def test_top_k_beyond_the_catalogue_pads_with_no_item():
    from recflow.models.retrieval.base import top_k

    def scores(histories):
        return torch.arange(4, dtype=torch.float64).expand(len(histories), -1).clone()

    out = top_k(scores, [np.array([1]), np.array([2])], 6, exclude=[np.array([4, 3]),
                                                                    np.array([])])
    assert out.tolist() == [[2, 1, 0, 0, 0, 0], [4, 3, 2, 1, 0, 0]]


def test_a_scaled_parameter_steps_at_its_own_rate():
    """`scaled_lr`: its own group at lr * scale without decay; one Adam step moves it by
    about that much (Adam's first step is lr * sign(grad))."""
    module = torch.nn.Linear(3, 1)
    module.offset = core.scaled_lr(torch.nn.Parameter(torch.zeros(1)), 20.0)
    optimizer = build_optimizer(module, name="adamw", lr=1e-3, weight_decay=0.1)
    scaled = [g for g in optimizer.param_groups if any(p is module.offset for p in g["params"])]
    assert len(scaled) == 1 and scaled[0]["lr"] == pytest.approx(0.02)
    assert scaled[0]["weight_decay"] == 0.0 and len(scaled[0]["params"]) == 1
    (module(torch.ones(2, 3)).sum() + module.offset.sum()).backward()
    before = module.weight.detach().clone()
    optimizer.step()
    assert float(module.offset) == pytest.approx(-0.02, rel=1e-3)
    assert float((module.weight.detach() - before).abs().max()) == pytest.approx(1e-3, rel=0.1)


def test_a_checkpoint_of_another_parameter_layout_is_refused_by_name(tmp_path):
    """Same settings, other parameters (an older layout of the model): one named error, not
    torch's size-mismatch traceback from deep inside the resume."""
    old = torch.nn.Linear(3, 1)
    Checkpoints(tmp_path, {}).save(1, {"module": old.state_dict(),
                                       "optimizer": build_optimizer(old, lr=0.1).state_dict()})
    wider = torch.nn.Linear(4, 1)
    recorder = core.EpochRecorder(FitConfig(progress=False), Checkpoints(tmp_path, {}), "din")
    with pytest.raises(ValueError, match=r"epoch_0001.pt: its weights or optimiser state do "
                                         r"not fit din's parameters .*set resume: false"):
        recorder.resume(wider, build_optimizer(wider, lr=0.1), torch.Generator())
    regrouped = torch.nn.Linear(3, 1)  # same weights, the optimiser's groups differ
    regrouped.bias = core.scaled_lr(regrouped.bias, 10.0)
    with pytest.raises(ValueError, match="do not fit din's parameters"):
        recorder.resume(regrouped, build_optimizer(regrouped, lr=0.1), torch.Generator())
