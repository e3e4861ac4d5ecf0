"""Knowledge distillation: registered losses and a training wrapper that keeps `fit` unchanged.

Losses (registered in `LOSSES`, built with `LOSSES.create(name, params={...})`):

- ``kd_bce``: ``(1−λ)·hard + λ·T²·mean_h BCE(σ(z_t,h/T), σ(z_s,h/T))`` where ``hard`` is the
  student's own loss (plain BCE for single-task models, so the classic formula
  ``(1−λ)·BCE(y, σ(z_s)) + …`` holds exactly) and ``h`` runs over the heads (tasks) teacher and
  student share: one term per head for multi-task teachers such as ESMM.
- ``logit_mse``: ``weight · mean_h (z_s,h − z_t,h)²``, a soft term only.
- ``hard_label``: ``weight · student.loss`` (to compose a custom mix).

A composite objective is the sum of its terms (``objective_from_config``); e.g. ``kd_bce``
(which already carries the hard-label part) plus a small ``logit_mse``.

Functions without a registry entry: `listwise_kl` (retrieval teachers: KL between teacher and
student softmax over the teacher's top-K) and `intermediate_match` (SLMRec:
``(1 − cos(h_s, h_t)) + ||h_s − h_t||²`` after an optional projection).

Teacher logits reach the loss as labels named ``teacher_<task>`` (see `TEACHER_PREFIX`), so
cached (offline) scores flow through `TensorBatch` like any label. `DistillationObjective`
wraps a student (and, online, a teacher trained alongside with its logits detached) as a
`RankingModel`, so `recflow.training.trainer.fit` trains it as it trains any model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from recflow.models.base import RankingModel
from recflow.registry import LOSSES
from recflow.registry.entry import ComponentEntry
from recflow.training.data import TensorBatch, iterate_batches

#: label key prefix under which a teacher's logit for a task travels in a batch
TEACHER_PREFIX = "teacher_"

HardLoss = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


# ---- plain functions (hand-checkable) --------------------------------------------------
def soft_bce(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
             temperature: float = 1.0) -> torch.Tensor:
    """T² · mean BCE(σ(z_t/T), σ(z_s/T)); the T² keeps gradient scale independent of T."""
    t = float(temperature)
    target = torch.sigmoid(teacher_logits.detach() / t)
    return t * t * F.binary_cross_entropy_with_logits(student_logits / t, target)


def kd_bce(student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor,
           alpha: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """(1−λ)·BCE(y, σ(z_s)) + λ·T²·BCE(σ(z_t/T), σ(z_s/T)), mean over elements."""
    hard = F.binary_cross_entropy_with_logits(student_logits, labels.float())
    return (1 - alpha) * hard + alpha * soft_bce(student_logits, teacher_logits, temperature)


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """mean (z_s − z_t)² with the teacher detached."""
    return F.mse_loss(student_logits, teacher_logits.detach())


def listwise_kl(student_scores: torch.Tensor, teacher_scores: torch.Tensor, k: int | None = None,
                temperature: float = 1.0) -> torch.Tensor:
    """KL(p_t || p_s) of the softmaxes over each row's teacher top-K candidates, batch mean.

    `student_scores`, `teacher_scores`: (B, N) scores of the same N candidates. With `k` the
    candidates are restricted to the teacher's K highest per row (both softmaxes renormalised
    over them); T² scaling as in Hinton et al.
    """
    t = float(temperature)
    teacher_scores = teacher_scores.detach()
    if k is not None and k < teacher_scores.shape[1]:
        top = teacher_scores.topk(k, dim=1).indices
        teacher_scores = teacher_scores.gather(1, top)
        student_scores = student_scores.gather(1, top)
    log_p_t = F.log_softmax(teacher_scores / t, dim=1)
    log_p_s = F.log_softmax(student_scores / t, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    return t * t * kl.mean()


def intermediate_match(h_student: torch.Tensor, h_teacher: torch.Tensor,
                       projection: nn.Module | None = None) -> torch.Tensor:
    """(1 − cos(h_s, h_t)) + ||h_s − h_t||², batch mean; `projection` maps h_s to h_t's width."""
    h_s = projection(h_student) if projection is not None else h_student
    h_t = h_teacher.detach()
    if h_s.shape != h_t.shape:
        raise ValueError(f"intermediate_match: student states {tuple(h_s.shape)} do not match "
                         f"teacher states {tuple(h_t.shape)}; pass a projection")
    cos = F.cosine_similarity(h_s, h_t, dim=-1)
    return ((1 - cos) + (h_s - h_t).pow(2).sum(dim=-1)).mean()


# ---- registered, composable terms ------------------------------------------------------
class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KDBCEParams(_Params):
    alpha: float = Field(0.5, ge=0, le=1, description="λ: weight of the soft-label term.")
    temperature: float = Field(1.0, gt=0, description="T: softens both sigmoids; scaled by T².")


class WeightParams(_Params):
    weight: float = Field(1.0, ge=0)


@runtime_checkable
class DistillTermProtocol(Protocol):
    """What `DistillationObjective.loss` calls on each registered loss term."""

    def __call__(self, student: torch.Tensor, labels: dict[str, torch.Tensor],
                 teacher: torch.Tensor | None, heads: Sequence[int],
                 hard: HardLoss) -> torch.Tensor:
        """Scalar term from student logits, labels, teacher logits (None: no teacher), the
        student heads the teacher columns match, and the student's own (hard-label) loss."""


class DistillTerm:
    """One term of the objective: (student logits, labels, teacher logits, heads, hard loss)."""

    params: BaseModel

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    def __call__(self, student: torch.Tensor, labels: dict[str, torch.Tensor],
                 teacher: torch.Tensor | None, heads: Sequence[int],
                 hard: HardLoss) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def _pairs(student: torch.Tensor, teacher: torch.Tensor | None,
               heads: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if teacher is None:
            raise ValueError("a distillation term needs teacher logits (labels 'teacher_<task>')")
        idx = torch.as_tensor(list(heads), dtype=torch.long, device=student.device)
        return student.index_select(1, idx), teacher


LOSSES.set_contract(DistillTermProtocol, base=DistillTerm, stubs=("__call__",))


@LOSSES.register("kd_bce", params=KDBCEParams)
class KDBCE(DistillTerm):
    """(1−λ)·student hard loss + λ·T²·BCE(σ(z_t/T), σ(z_s/T)) averaged over shared heads."""

    def __call__(self, student, labels, teacher, heads, hard):
        p = self.params
        z_s, z_t = self._pairs(student, teacher, heads)
        soft = soft_bce(z_s, z_t, p.temperature)
        if p.alpha >= 1:
            return soft
        return (1 - p.alpha) * hard(student, labels) + p.alpha * soft


@LOSSES.register("logit_mse", params=WeightParams)
class LogitMSE(DistillTerm):
    """weight · mean (z_s − z_t)² over shared heads (teacher detached)."""

    def __call__(self, student, labels, teacher, heads, hard):
        z_s, z_t = self._pairs(student, teacher, heads)
        return self.params.weight * logit_mse(z_s, z_t)


@LOSSES.register("hard_label", params=WeightParams)
class HardLabel(DistillTerm):
    """weight · the student's own supervised loss (BCE; ESMM's CTR+CTCVR)."""

    def __call__(self, student, labels, teacher, heads, hard):
        return self.params.weight * hard(student, labels)


class LossEntry(ComponentEntry):
    """One YAML term: a registered loss name and its params."""

    registry = LOSSES
    source = "parameters_distillation.yml"


def objective_from_config(entries: Sequence[LossEntry | dict[str, Any]],
                          where: str = "distillation.losses") -> list[DistillTerm]:
    """Build the terms; errors name the YAML key and the registered losses."""
    terms = []
    for i, raw in enumerate(entries):
        entry = raw if isinstance(raw, LossEntry) else LossEntry.model_validate(raw)
        terms.append(entry.create(where=f"{where}[{i}].params"))
    return terms


# ---- teacher logits ------------------------------------------------------------------------
def teacher_logits(models: Sequence[RankingModel], batch: TensorBatch,
                   tasks: Sequence[str], batch_size: int = 16384) -> np.ndarray:
    """Mean raw logits (N, len(tasks)) of one or more teachers (an ensemble) in eval mode."""
    out = []
    for model in models:
        cols = [list(model.tasks).index(t) for t in tasks]
        was = model.training
        model.eval()
        sub = batch.select(model.input_names)
        with torch.inference_mode():
            parts = [model(mb.inputs)[:, cols].float() for mb in iterate_batches(sub, batch_size)]
        model.train(was)
        out.append(torch.cat(parts) if parts else torch.zeros(0, len(cols)))
    return torch.stack(out).mean(0).numpy()


def shared_tasks(teachers: Sequence[RankingModel], student: RankingModel) -> list[str]:
    """Tasks every teacher and the student predict, in the student's order (the KD heads)."""
    tasks = [t for t in student.tasks if all(t in m.tasks for m in teachers)]
    if not tasks:
        raise ValueError(f"student tasks {list(student.tasks)} share no head with teacher tasks "
                         f"{[list(m.tasks) for m in teachers]}")
    return tasks


def with_teacher_labels(batch: TensorBatch, logits: np.ndarray,
                        tasks: Sequence[str]) -> TensorBatch:
    """`batch` with labels teacher_<task> holding the cached teacher logits."""
    if len(logits) != len(batch):
        raise ValueError(f"{len(logits)} cached teacher logits for {len(batch)} rows")
    labels = dict(batch.labels)
    for i, task in enumerate(tasks):
        labels[TEACHER_PREFIX + task] = torch.from_numpy(np.array(logits[:, i], np.float32))
    return TensorBatch(batch.inputs, labels, batch.users)


# ---- the training wrapper ----------------------------------------------------------------
class DistillationObjective(RankingModel):
    """A student trained on Σ terms; `fit` sees an ordinary RankingModel.

    Offline: teacher logits come in as labels `teacher_<task>`. Online (`teachers` given):
    the teachers run on the same batch, are trained on their own loss, and the student
    learns from their logits detached. `forward` and `predict` are the student's, so
    validation and early stopping track the student.
    """

    def __init__(self, student: RankingModel, terms: Sequence[DistillTerm],
                 tasks: Sequence[str], teachers: Sequence[RankingModel] = ()) -> None:
        super().__init__(student.spec)
        self.student = student
        self.teachers = nn.ModuleList(teachers)
        self.terms = list(terms)
        self.kd_tasks = list(tasks)
        self.heads = [list(student.tasks).index(t) for t in tasks]
        self.tasks = student.tasks
        self._online: list[torch.Tensor] | None = None

    @property
    def input_names(self) -> list[str]:
        names = list(self.student.input_names)
        for t in self.teachers:
            names += [n for n in t.input_names if n not in names]
        return [n for n in self.spec.names if n in names]

    @property
    def score_names(self) -> list[str]:
        return self.student.score_names

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self._online = None
        if len(self.teachers) and self.training:
            self._online = [t(inputs) for t in self.teachers]  # full logits, for their own loss
        return self.student(inputs)

    def loss(self, logits: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        total = logits.new_zeros(())
        if self._online is not None:
            own = [t.loss(z, labels) for t, z in zip(self.teachers, self._online, strict=True)]
            total = total + torch.stack(own).sum()
            teacher = torch.stack([
                z[:, [list(t.tasks).index(k) for k in self.kd_tasks]]
                for t, z in zip(self.teachers, self._online, strict=True)
            ]).mean(0).detach()
            self._online = None
        elif all(TEACHER_PREFIX + t in labels for t in self.kd_tasks):
            teacher = torch.stack([labels[TEACHER_PREFIX + t] for t in self.kd_tasks], dim=1)
        else:
            teacher = None
        for term in self.terms:
            total = total + term(logits, labels, teacher, self.heads, self.student.loss)
        return total

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return self.student.predict(logits)


def distillation_summary(teacher: dict[str, Any], student_kd: dict[str, Any],
                         student_plain: dict[str, Any], baseline: dict[str, Any] | None
                         ) -> dict[str, Any]:
    """The verdict of a distillation run from its metric rows (`auc`, `params` each).

    `target_met`: the KD student has at most 10% of the teacher's parameters, keeps at
    least 95% of the teacher's AUC lift over the baseline, and beats the plain student.
    """
    summary: dict[str, Any] = {
        "param_ratio": student_kd["params"] / teacher["params"] if teacher["params"] else None,
        "kd_minus_plain_auc": student_kd["auc"] - student_plain["auc"],
    }
    if baseline:
        lift = teacher["auc"] - baseline["auc"]
        for key, row in (("student_kd", student_kd), ("student_plain", student_plain)):
            summary[f"{key}_lift_retained"] = ((row["auc"] - baseline["auc"]) / lift
                                               if lift > 0 else None)
    kd_ret = summary.get("student_kd_lift_retained")
    summary["target_met"] = bool(
        summary["param_ratio"] is not None and summary["param_ratio"] <= 0.10
        and kd_ret is not None and kd_ret >= 0.95 and summary["kd_minus_plain_auc"] > 0)
    return summary
