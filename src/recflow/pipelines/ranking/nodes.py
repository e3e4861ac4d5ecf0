"""Ranking nodes: train one registered model, score the test split, evaluate, report.

Pure functions over DataFrames / plain payloads; the catalog does all I/O.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from recflow.features import FeatureSpec
from recflow.features.spec import LABEL_PREFIX
from recflow.models.payload import from_payload, to_payload
from recflow.pipelines.ranking.params import ModelEntry, RankingParams
from recflow.registry import MODELS
from recflow.training.data import frame_to_tensors
from recflow.training.metrics import evaluate_scores
from recflow.training.plots import calibration_figure, learning_curves_figure, roc_figure
from recflow.training.trainer import TrainerConfig, fit, predict

logger = logging.getLogger(__name__)
SCORE_PREFIX = "score_"


def _run_key(entry: ModelEntry, trainer: TrainerConfig, spec: FeatureSpec) -> str:
    """Checkpoints resume only the identical configuration on the identical features."""
    blob = json.dumps([entry.model_dump(mode="json"), trainer.model_dump(mode="json"),
                       spec.hash], sort_keys=True)
    return f"{entry.model}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def train_model(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    feature_spec: dict[str, Any],
    entry: ModelEntry,
    trainer: TrainerConfig,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit one model; returns its payload (for TorchModelDataset) and its training history."""
    spec = FeatureSpec.from_dict(feature_spec)
    config = entry.trainer_config(trainer)
    if config.checkpoint_dir:
        config = config.model_copy(
            update={"checkpoint_dir": str(Path(config.checkpoint_dir) / _run_key(entry, config, spec))}
        )
    params = entry.typed_params()
    model = MODELS.create(entry.model, spec, params=params)
    result = fit(model, frame_to_tensors(train, spec), frame_to_tensors(valid, spec), config)
    n_params = int(sum(p.numel() for p in model.parameters()))
    history = {
        "model": entry.model,
        "epochs": result.history,
        "best_epoch": result.best_epoch,
        "train_seconds": result.train_seconds,
        "params": n_params,
    }
    return to_payload(model, entry.model, params, spec), history


def score_split(
    payload: dict[str, Any], frame: pd.DataFrame, feature_spec: dict[str, Any]
) -> pd.DataFrame:
    """Keys, labels and one score column per model output, for the given split."""
    spec = FeatureSpec.from_dict(feature_spec)
    model = from_payload(payload, spec)
    scores = predict(model, frame_to_tensors(frame, spec))
    out = frame[["key_user", "key_item", *[c for c in frame if c.startswith(LABEL_PREFIX)]]]
    out = out.copy()
    for i, name in enumerate(model.score_names):
        out[SCORE_PREFIX + name] = scores[:, i].astype(np.float64)
    return out


def evaluate_model(test_scores: pd.DataFrame, history: dict[str, Any]) -> dict[str, Any]:
    """Test metrics on pCTR, plus size and training cost."""
    metrics = evaluate_scores(
        test_scores["label_click"].to_numpy(),
        test_scores["score_ctr"].to_numpy(),
        test_scores["key_user"].to_numpy(),
    )
    if "score_ctcvr" in test_scores and "label_purchase" in test_scores:
        ctcvr = evaluate_scores(
            test_scores["label_purchase"].to_numpy(),
            test_scores["score_ctcvr"].to_numpy(),
            test_scores["key_user"].to_numpy(),
        )
        metrics["ctcvr_auc"] = ctcvr["auc"]
    last = history["epochs"][-1] if history["epochs"] else {}
    metrics.update(
        params=history["params"],
        train_seconds=history["train_seconds"],
        samples_per_second=last.get("samples_per_second"),
        best_epoch=history["best_epoch"],
    )
    return metrics


def popularity_scores(train: pd.DataFrame, test: pd.DataFrame, prior: float = 20.0) -> np.ndarray:
    """The popularity baseline: each item's smoothed train CTR."""
    rate = train["label_click"].mean()
    stats = train.groupby("key_item")["label_click"].agg(["sum", "count"])
    smoothed = (stats["sum"] + prior * rate) / (stats["count"] + prior)
    return test["key_item"].map(smoothed).fillna(rate).to_numpy(np.float64)


def report_ranking(
    params: RankingParams, train: pd.DataFrame, **outputs: Any
) -> tuple[dict[str, Any], Figure, Figure, Figure]:
    """ranking_metrics.json (every model beside the baselines) and the comparison plots."""
    names = list(params.models)
    metrics = {n: outputs[f"metrics__{n}"] for n in names}
    scores = {n: outputs[f"scores__{n}"] for n in names}
    histories = {n: outputs[f"history__{n}"]["epochs"] for n in names}

    reference = scores[names[0]]
    pop = popularity_scores(train, reference)
    metrics["popularity"] = {
        **evaluate_scores(reference["label_click"].to_numpy(), pop,
                          reference["key_user"].to_numpy()),
        "params": 0, "train_seconds": 0.0,
    }
    base_auc = metrics[params.baseline]["auc"]
    for m in metrics.values():
        m["auc_lift_over_baseline"] = m["auc"] - base_auc
    report = {
        "split": "test",
        "baseline": params.baseline,
        "rows": len(reference),
        "models": metrics,
        "best": max(names, key=lambda n: metrics[n]["auc"]),
    }
    curves = {n: (s["label_click"].to_numpy(), s["score_ctr"].to_numpy()) for n, s in scores.items()}
    curves["popularity"] = (reference["label_click"].to_numpy(), pop)
    logger.info("ranking test AUC: %s", {n: round(m["auc"], 4) for n, m in metrics.items()})
    return report, roc_figure(curves), calibration_figure(curves), learning_curves_figure(histories)
