"""Distillation nodes: teacher(s) -> cached logits -> student with and without distillation -> report.

Pure functions over DataFrames / plain payloads; the catalog does all I/O. The teacher is
a bundle `{"members": [payload, ...], "tasks": [...]}` (one payload, or several whose logits
are averaged); every student is an ordinary model payload, exportable like any ranking model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from recflow.datasets import TorchModelDataset
from recflow.export.params import ExportParams
from recflow.export.ranking import export_ranking
from recflow.features import FeatureSpec
from recflow.features.spec import LABEL_PREFIX
from recflow.metrics.ranking import evaluate_scores
from recflow.models.base import RankingModel
from recflow.models.payload import from_payload, to_payload
from recflow.pipelines.distillation.params import DistillationParams, validate
from recflow.registry import MODELS
from recflow.training.data import TensorBatch, frame_to_tensors
from recflow.training.distillation import (
    DistillationObjective,
    distillation_summary,
    objective_from_config,
    shared_tasks,
    teacher_logits,
    with_teacher_labels,
)
from recflow.training.entry import ModelEntry
from recflow.training.trainer import fit, predict

logger = logging.getLogger(__name__)
LOGIT_PREFIX = "teacher_logit_"
ROW_KEYS = ("key_user", "key_item")
#: keys of each row of distillation_report.json that the report guarantees (a test pins them)
CONTRACT_KEYS = ("auc", "logloss", "gauc", "calibration", "params", "onnx_p50_ms")


def _params(params: DistillationParams | dict[str, Any]) -> DistillationParams:
    return params if isinstance(params, DistillationParams) else validate(params)


def _n_params(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _history(model_name: str, result: Any, model: torch.nn.Module) -> dict[str, Any]:
    return {"model": model_name, "epochs": result.history, "best_epoch": result.best_epoch,
            "train_seconds": result.train_seconds, "params": _n_params(model)}


def _train(entry: ModelEntry, params: DistillationParams, spec: FeatureSpec,
           train: TensorBatch, valid: TensorBatch) -> tuple[RankingModel, dict[str, Any]]:
    model = MODELS.create(entry.name, spec, params=entry.typed_params())
    result = fit(model, train, valid, entry.trainer_config(params.trainer))
    return model, _history(entry.name, result, model)


def _members(bundle: dict[str, Any], spec: FeatureSpec) -> list[RankingModel]:
    return [from_payload(p, spec) for p in bundle["members"]]


def _load_checkpoint(path: str) -> dict[str, Any]:
    if not Path(path).exists():
        raise FileNotFoundError(
            f"parameters_distillation.yml: teacher checkpoint '{path}' does not exist; train it "
            "(kedro run --pipelines=ranking) or use `name:` to train the teacher here")
    return TorchModelDataset(filepath=path).load()


def _student(params: DistillationParams, spec: FeatureSpec) -> RankingModel:
    return MODELS.create(params.student.name, spec, params=params.student.typed_params())


# ---- teacher ---------------------------------------------------------------------------
def build_teacher(train: pd.DataFrame, valid: pd.DataFrame, feature_spec: dict[str, Any],
                  params: DistillationParams) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (or load) each teacher member: (bundle, history)."""
    params = _params(params)
    spec = FeatureSpec.from_dict(feature_spec)
    tr, va = frame_to_tensors(train, spec), frame_to_tensors(valid, spec)
    payloads, histories = [], []
    for member in params.teacher.members:
        if member.checkpoint is not None:
            payload = _load_checkpoint(member.checkpoint)
            from_payload(payload, spec)  # refuses a payload trained on another feature spec
            payloads.append(payload)
            histories.append({"checkpoint": member.checkpoint, "model": payload["model"]})
            continue
        entry = member.entry()
        model, history = _train(entry, params, spec, tr, va)
        payloads.append(to_payload(model, entry.name, entry.typed_params(), spec))
        histories.append(history)
    return _bundle(payloads, spec, params), {"members": histories}


def _bundle(payloads: list[dict[str, Any]], spec: FeatureSpec,
            params: DistillationParams) -> dict[str, Any]:
    models = [from_payload(p, spec) for p in payloads]
    tasks = shared_tasks(models, _student(params, spec))
    return {"members": payloads, "tasks": tasks, "feature_spec_hash": spec.hash,
            "params": sum(_n_params(m) for m in models)}


def cache_teacher_logits(teacher: dict[str, Any], train: pd.DataFrame,
                         feature_spec: dict[str, Any]) -> pd.DataFrame:
    """The teacher's raw logits on the train split, once (offline distillation)."""
    spec = FeatureSpec.from_dict(feature_spec)
    logits = teacher_logits(_members(teacher, spec), frame_to_tensors(train, spec),
                            teacher["tasks"])
    out = train[[k for k in ROW_KEYS if k in train]].reset_index(drop=True).copy()
    for i, task in enumerate(teacher["tasks"]):
        out[LOGIT_PREFIX + task] = logits[:, i].astype(np.float32)
    return out


def _cached_logits(cache: pd.DataFrame, train: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    tasks = [c[len(LOGIT_PREFIX):] for c in cache if c.startswith(LOGIT_PREFIX)]
    same = len(cache) == len(train) and all(
        np.array_equal(cache[k].to_numpy(), train[k].to_numpy())
        for k in ROW_KEYS if k in train)
    if not same:
        raise ValueError("distillation_teacher_logits does not line up with model_input_train "
                         "(rows or keys differ); re-run the distillation pipeline from the "
                         "teacher (the train split changed since the logits were cached)")
    return cache[[LOGIT_PREFIX + t for t in tasks]].to_numpy(np.float32), tasks


# ---- students --------------------------------------------------------------------------
def train_student_kd(train: pd.DataFrame, valid: pd.DataFrame, feature_spec: dict[str, Any],
                     teacher_logits_cache: pd.DataFrame, params: DistillationParams
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Offline: the student on hard labels + the cached teacher logits."""
    params = _params(params)
    spec = FeatureSpec.from_dict(feature_spec)
    logits, tasks = _cached_logits(teacher_logits_cache, train)
    student = _student(params, spec)
    missing = [t for t in tasks if t not in student.tasks]
    if missing:
        raise ValueError(f"cached teacher heads {missing} are not student tasks {student.tasks}")
    objective = DistillationObjective(student, objective_from_config(params.losses), tasks)
    tr = with_teacher_labels(frame_to_tensors(train, spec), logits, tasks)
    result = fit(objective, tr, frame_to_tensors(valid, spec),
                 params.student.trainer_config(params.trainer))
    history = {**_history(params.student.name, result, student), "mode": "offline"}
    return to_payload(student, params.student.name, params.student.typed_params(), spec), history


def train_online(train: pd.DataFrame, valid: pd.DataFrame, feature_spec: dict[str, Any],
                 params: DistillationParams
                 ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Online: teacher member(s) (fresh, or warm from a checkpoint) and student in one loop.

    Returns (student payload, student history, teacher bundle, teacher history).
    """
    params = _params(params)
    spec = FeatureSpec.from_dict(feature_spec)
    teachers, entries = _online_teachers(params, spec)
    student = _student(params, spec)
    tasks = shared_tasks(teachers, student)
    objective = DistillationObjective(student, objective_from_config(params.losses), tasks,
                                      teachers=teachers)
    result = fit(objective, frame_to_tensors(train, spec), frame_to_tensors(valid, spec),
                 params.student.trainer_config(params.trainer))
    history = {**_history(params.student.name, result, student), "mode": "online"}
    payloads = [to_payload(t, name, MODELS.get(name).validate_params(p) if isinstance(p, dict)
                           else p, spec) for t, (name, p) in zip(teachers, entries, strict=True)]
    teacher_history = {"members": [{"model": n, "trained": "online, with the student"}
                                   for n, _ in entries]}
    return (to_payload(student, params.student.name, params.student.typed_params(), spec),
            history, _bundle(payloads, spec, params), teacher_history)


def _online_teachers(params: DistillationParams, spec: FeatureSpec
                     ) -> tuple[list[RankingModel], list[tuple[str, Any]]]:
    """Each member fresh from its entry, or warm from its checkpoint; with (name, params)."""
    teachers, entries = [], []
    for member in params.teacher.members:
        if member.checkpoint is not None:
            payload = _load_checkpoint(member.checkpoint)
            teachers.append(from_payload(payload, spec).train())
            entries.append((payload["model"], payload["params"]))
        else:
            entry = member.entry()
            teachers.append(MODELS.create(entry.name, spec, params=entry.typed_params()))
            entries.append((entry.name, entry.typed_params()))
    return teachers, entries


def train_student_plain(train: pd.DataFrame, valid: pd.DataFrame, feature_spec: dict[str, Any],
                        params: DistillationParams) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ablation: the same student, same trainer and seed, on labels alone."""
    params = _params(params)
    spec = FeatureSpec.from_dict(feature_spec)
    model, history = _train(params.student, params, spec, frame_to_tensors(train, spec),
                            frame_to_tensors(valid, spec))
    return to_payload(model, params.student.name, params.student.typed_params(), spec), history


# ---- evaluation ------------------------------------------------------------------------
def _metrics(test: pd.DataFrame, p_ctr: np.ndarray) -> dict[str, Any]:
    users = test["key_user"].to_numpy() if "key_user" in test else None
    return evaluate_scores(test[LABEL_PREFIX + "click"].to_numpy(), p_ctr, users)


def _latency(payload: dict[str, Any], feature_spec: dict[str, Any], test: pd.DataFrame,
             metrics: dict[str, Any], export: ExportParams | dict[str, Any] | None,
             batches: list[int], name: str) -> tuple[Any, dict[str, Any]]:
    """Export as the export pipeline does (parity-checked), fp32, ORT latency."""
    base = export if isinstance(export, ExportParams) else ExportParams.model_validate(export or {})
    latency = base.latency.model_copy(update={"batches": list(batches)})
    params = base.model_copy(update={"quantize": False, "latency": latency})
    out = export_ranking(payload, feature_spec, test, metrics, params, name=name)
    return out.onnx, out.summary


def _row(metrics: dict[str, Any], n_params: int, summaries: list[dict[str, Any]],
         batches: list[int], history: dict[str, Any]) -> dict[str, Any]:
    row = {k: metrics[k] for k in ("auc", "logloss", "gauc", "calibration", "ece", "n")}
    row["params"] = n_params
    for b in batches:  # members of an ensemble run one after another: latencies add up
        values = [s.get(f"p50_ms_b{b}") for s in summaries]
        row[f"onnx_p50_ms_b{b}"] = float(sum(values)) if all(v is not None for v in values) \
            else None
    row["onnx_p50_ms"] = row.get("onnx_p50_ms_b1")
    row["max_abs_diff_onnx"] = max(s["max_abs_diff"] for s in summaries)
    row["train_seconds"] = history.get("train_seconds")
    return row


def evaluate_student(payload: dict[str, Any], history: dict[str, Any], test: pd.DataFrame,
                     feature_spec: dict[str, Any], export: ExportParams,
                     params: DistillationParams, name: str = "student"
                     ) -> tuple[Any, dict[str, Any]]:
    """(student ONNX graph, report row): test metrics, size, ORT p50 per batch size."""
    params = _params(params)
    spec = FeatureSpec.from_dict(feature_spec)
    model = from_payload(payload, spec)
    metrics = _metrics(test, predict(model, frame_to_tensors(test, spec))[:, 0])
    proto, summary = _latency(payload, feature_spec, test, metrics, export,
                              params.latency_batches, name)
    row = _row(metrics, _n_params(model), [summary], params.latency_batches, history)
    row["model"] = payload["model"]
    return proto, row


def evaluate_teacher(teacher: dict[str, Any], history: dict[str, Any], test: pd.DataFrame,
                     feature_spec: dict[str, Any], export: ExportParams,
                     params: DistillationParams) -> dict[str, Any]:
    """Report row of the teacher (an ensemble scores sigmoid of the mean logit)."""
    params = _params(params)
    spec = FeatureSpec.from_dict(feature_spec)
    models = _members(teacher, spec)
    logits = teacher_logits(models, frame_to_tensors(test, spec), ["click"])
    metrics = _metrics(test, 1.0 / (1.0 + np.exp(-logits[:, 0].astype(np.float64))))
    summaries = [_latency(p, feature_spec, test, metrics, export, params.latency_batches,
                          f"teacher_{i}")[1] for i, p in enumerate(teacher["members"])]
    seconds = [h.get("train_seconds") for h in history.get("members", [])]
    row = _row(metrics, teacher["params"], summaries, params.latency_batches,
               {"train_seconds": sum(seconds) if seconds and None not in seconds else None})
    row["model"] = "+".join(p["model"] for p in teacher["members"])
    return row


def baseline_row(train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame,
                 feature_spec: dict[str, Any], params: DistillationParams) -> dict[str, Any]:
    """The reference model (LR) trained and scored here; {} when `baseline` is null."""
    params = _params(params)
    if params.baseline is None:
        return {}
    spec = FeatureSpec.from_dict(feature_spec)
    model, history = _train(params.baseline, params, spec, frame_to_tensors(train, spec),
                            frame_to_tensors(valid, spec))
    metrics = _metrics(test, predict(model, frame_to_tensors(test, spec))[:, 0])
    return {**{k: metrics[k] for k in ("auc", "logloss", "gauc", "calibration")},
            "params": _n_params(model), "model": params.baseline.name,
            "train_seconds": history["train_seconds"]}


def report_distillation(teacher: dict[str, Any], student_kd: dict[str, Any],
                        student_plain: dict[str, Any], baseline: dict[str, Any],
                        params: DistillationParams) -> dict[str, Any]:
    """distillation_report.json: the three rows, the baseline, and the verdict."""
    params = _params(params)
    report: dict[str, Any] = {
        "split": "test",
        "mode": params.mode,
        "losses": [e.model_dump() for e in params.losses],
        "teacher": teacher,
        "student_kd": student_kd,
        "student_plain": student_plain,
    }
    if baseline:
        report["baseline"] = baseline
    summary = distillation_summary(teacher, student_kd, student_plain, baseline)
    report["summary"] = summary
    logger.info("distillation test AUC: teacher %.4f, student_kd %.4f, student_plain %.4f%s",
                teacher["auc"], student_kd["auc"], student_plain["auc"],
                f", {baseline['model']} {baseline['auc']:.4f}" if baseline else "")
    return report
