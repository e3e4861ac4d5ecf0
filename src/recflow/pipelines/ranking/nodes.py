"""Ranking nodes: train one registered model, score the test split, evaluate, report.

Pure functions over DataFrames / plain payloads; the catalog does all I/O. A split may
also arrive as `ParquetParts` (the `ranking_streaming` pipeline): training streams it
through a shuffle buffer, scoring and statistics read it chunk by chunk, so no node
holds more than the scores and per-item counts of a split that does not fit in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from recflow.datasets.sharded import ParquetParts
from recflow.evaluation.aggregate import format_mean_std
from recflow.evaluation.ranking import (
    popularity_row,
    ranking_report,
    rare_item_metrics,
)
from recflow.features import FeatureSpec
from recflow.features.spec import LABEL_PREFIX
from recflow.metrics.ranking import evaluate_scores
from recflow.models.payload import from_payload, to_payload
from recflow.pipelines.ranking.params import ModelEntry, RankingParams
from recflow.registry import MODELS
from recflow.reporting.plots import calibration_figure, learning_curves_figure, roc_figure
from recflow.training.data import frame_to_tensors
from recflow.training.parquet_shards import train_input
from recflow.training.trainer import TrainerConfig, fit, predict

logger = logging.getLogger(__name__)
SCORE_PREFIX = "score_"
SCORE_CHUNK_ROWS = 262_144  # rows of a sharded split scored at a time
Split = pd.DataFrame | ParquetParts


def _run_key(entry: ModelEntry, trainer: TrainerConfig, spec: FeatureSpec) -> str:
    """Checkpoints resume only the identical configuration on the identical features."""
    blob = json.dumps([entry.model_dump(mode="json"), trainer.model_dump(mode="json"),
                       spec.hash], sort_keys=True)
    return f"{entry.name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def _fit_one(
    entry: ModelEntry, spec: FeatureSpec, config: TrainerConfig, train: Any, valid: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One seeded run: weight init and batch order both follow `config.seed`."""
    if config.checkpoint_dir:
        config = config.model_copy(
            update={"checkpoint_dir": str(Path(config.checkpoint_dir) / _run_key(entry, config, spec))}
        )
    params = entry.typed_params()
    devices = list(range(torch.cuda.device_count()))
    with torch.random.fork_rng(devices=devices):  # seed init without touching global RNG
        torch.manual_seed(config.seed)
        model = MODELS.create(entry.name, spec, params=params)
        result = fit(model, train, valid, config)
    history = {
        "model": entry.name,
        "seed": config.seed,
        "epochs": result.history,
        "best_epoch": result.best_epoch,
        "train_seconds": result.train_seconds,
        "params": int(sum(p.numel() for p in model.parameters())),
    }
    return to_payload(model, entry.name, params, spec), history


def check_trainable(entry: ModelEntry, spec: FeatureSpec) -> None:
    """Refuse, by name, a model whose inputs or tasks this dataset cannot provide
    (DIN without a behaviour sequence, ESMM without a purchase label), before training."""
    try:
        model = MODELS.create(entry.name, spec, params=entry.typed_params())
    except (KeyError, ValueError) as exc:
        sequences = [f.name for f in spec.by_kind("sequence")]
        hint = "" if sequences else (
            " The feature spec has no behaviour sequence: sequences need the user and time "
            "roles (dataset.events.user / .time) and a `sequence` field in "
            "parameters_preprocessing.yml.")
        raise ValueError(f"ranking model '{entry.name}' cannot train on this dataset: "
                         f"{exc}.{hint} Remove the entry from ranking.models or give the "
                         "data what it needs.") from None
    missing = [t for t in model.tasks if t not in spec.labels]
    if missing:
        raise ValueError(f"ranking model '{entry.name}' predicts {list(model.tasks)}, but the "
                         f"dataset's labels are {spec.labels}: declare {missing} under "
                         "dataset.events.labels and preprocessing.labels, or remove the entry")


def train_model(
    train: Split,
    valid: Split,
    feature_spec: dict[str, Any],
    entry: ModelEntry,
    trainer: TrainerConfig,
    seeds: list[int] | None,
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Fit one model once per seed: (first seed's payload, its history, every seed's payload).

    `ranking.seeds` (default: the trainer seed, once) repeats training; only the first
    seed's model is saved and exported, so downstream nodes see what one seed gives.
    `history["runs"]` keeps each run's seed, epochs and cost for `evaluate_seeds`.
    Sharded splits (`ParquetParts`) stream: train through `trainer.shuffle_buffer`,
    valid in order.
    """
    spec = FeatureSpec.from_dict(feature_spec)
    check_trainable(entry, spec)
    base = entry.trainer_config(trainer)
    tensors = (train_input(train, spec, base.shuffle_buffer),
               train_input(valid, spec, base.shuffle_buffer))
    fitted = [_fit_one(entry, spec, base.model_copy(update={"seed": seed}), *tensors)
              for seed in seeds or [base.seed]]
    payload, history = fitted[0]
    return payload, {**history, "runs": [h for _, h in fitted]}, [p for p, _ in fitted]


def score_seeds(seed_models: list[dict[str, Any]], test: Split, feature_spec: dict[str, Any]
                ) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Test scores of every seed's model: (the first seed's, the exported one; all of them)."""
    scores = [score_split(payload, test, feature_spec) for payload in seed_models]
    return scores[0], scores


def evaluate_seeds(
    seed_scores: list[pd.DataFrame], history: dict[str, Any], item_stats: pd.DataFrame,
    params: RankingParams,
) -> list[dict[str, Any]]:
    """`evaluate_model` of every seed's run: [{seed, auc, logloss, gauc, ...}, ...]."""
    runs = []
    for scores, run in zip(seed_scores, history["runs"], strict=True):
        runs.append({"seed": run["seed"], **evaluate_model(scores, run, item_stats, params)})
        logger.info("%s seed %d: test auc=%.5f", run["model"], run["seed"], runs[-1]["auc"])
    return runs


def score_split(
    payload: dict[str, Any], frame: Split, feature_spec: dict[str, Any]
) -> pd.DataFrame:
    """Keys, labels and one score column per model output, for the given split."""
    spec = FeatureSpec.from_dict(feature_spec)
    model = from_payload(payload, spec)
    if isinstance(frame, ParquetParts):
        columns = [*_keys(frame),
                   *(c for f in spec.fields if f.name in model.input_names
                     for c in f.output_columns()),
                   *(c for c in frame.columns if c.startswith(LABEL_PREFIX))]
        chunks = frame.iter_frames(columns, rows=SCORE_CHUNK_ROWS)
        return pd.concat([_scored(model, spec, chunk) for chunk in chunks], ignore_index=True)
    return _scored(model, spec, frame)


def _scored(model: Any, spec: FeatureSpec, frame: pd.DataFrame) -> pd.DataFrame:
    scores = predict(model, frame_to_tensors(frame, spec))
    out = frame[[*_keys(frame), *[c for c in frame if c.startswith(LABEL_PREFIX)]]]
    out = out.copy()
    for i, name in enumerate(model.score_names):
        out[SCORE_PREFIX + name] = scores[:, i].astype(np.float64)
    return out


def _keys(frame: Split) -> list[str]:
    """The row keys a split has (a CTR log may have no user or item key)."""
    return [k for k in ("key_user", "key_item") if k in frame.columns]


def evaluate_model(test_scores: pd.DataFrame, history: dict[str, Any],
                   item_stats: pd.DataFrame, params: RankingParams) -> dict[str, Any]:
    """Test metrics on pCTR (overall and on rare items), plus size and training cost."""
    users = test_scores["key_user"].to_numpy() if "key_user" in test_scores else None
    metrics = evaluate_scores(
        test_scores["label_click"].to_numpy(), test_scores["score_ctr"].to_numpy(), users)
    metrics.update(rare_item_metrics(test_scores, item_stats, params.rare_item_impressions))
    if "score_ctcvr" in test_scores and "label_purchase" in test_scores:
        ctcvr = evaluate_scores(
            test_scores["label_purchase"].to_numpy(), test_scores["score_ctcvr"].to_numpy(),
            users)
        metrics["ctcvr_auc"] = ctcvr["auc"]
    last = history["epochs"][-1] if history["epochs"] else {}
    metrics.update(
        params=history["params"],
        train_seconds=history["train_seconds"],
        samples_per_second=last.get("samples_per_s"),  # the trainer's history key
        best_epoch=history["best_epoch"],
    )
    return metrics


def report_ranking(
    params: RankingParams, item_stats: pd.DataFrame, train: Split, valid: Split, test: Split,
    feature_spec: dict[str, Any], **outputs: Any
) -> tuple[dict[str, Any], Figure, Figure, Figure]:
    """ranking_metrics.json (every model beside the baselines) and the comparison plots.

    Each model's top-level metrics are its first seed's (the exported model); `seeds`
    beside them holds every run and mean ± std (`recflow.evaluation.mean_std`).
    """
    names = list(params.models)
    metrics = {n: outputs[f"metrics__{n}"] for n in names}
    scores = {n: outputs[f"scores__{n}"] for n in names}
    curves = {n: (s["label_click"].to_numpy(), s["score_ctr"].to_numpy()) for n, s in scores.items()}
    reference = scores[names[0]]
    if "key_item" in reference:  # the popularity baseline needs an item key
        metrics["popularity"], pop = popularity_row(reference, item_stats,
                                                    params.rare_item_impressions)
        curves["popularity"] = (reference["label_click"].to_numpy(), pop)
    report = ranking_report(metrics, {n: outputs[f"seed_runs__{n}"] for n in names},
                            baseline=params.baseline, seeds=params.seeds,
                            feature_spec=feature_spec, rows=len(reference),
                            splits={"train": train, "valid": valid, "test": test})
    logger.info("ranking test AUC: %s", {
        n: format_mean_std(m["seeds"], "auc") if "seeds" in m else f"{m['auc']:.4f}"
        for n, m in metrics.items()})
    histories = {n: outputs[f"history__{n}"]["epochs"] for n in names}
    return report, roc_figure(curves), calibration_figure(curves), learning_curves_figure(histories)
