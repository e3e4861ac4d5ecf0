"""The FuxiCTR side of `bench_ctr.py`, run by FuxiCTR's own venv (see ctr_fuxictr_setup.sh).

    /work/fuxictr-venv/bin/python benchmarks/ctr_fuxictr_run.py --data DIR --work DIR \
        --model dcnv2 --out result.json

What FuxiCTR's `run_expid.py` does, at the benchmark's configuration: `FeatureProcessor` +
`build_dataset` read the same train / valid / test CSVs (polars; ray transforms them to
parquet), `RankDataLoader` (ray data, shuffled, batch 4096) feeds one epoch of `fit`
(validation at the epoch's end, best weights reloaded), then the test split is evaluated.

Features as recflow's env declares them: C1..C26 categorical with `min_categr_count: 2`;
I1..I13 numeric, `log1p` (after FuxiCTR's `fill_na: 0`) then `StandardScaler`, embedded
as `x·v` by FuxiCTR's numeric embedding.

The pip package ships FuxiCTR's layers and `BaseModel` but not its model zoo, so DCNv2
("parallel": CrossNetV2 ‖ MLP_Block, `fc` on their concatenation) and DeepFM (FM +
MLP_Block with a 1-unit output) are assembled here from those layers the way the zoo's
models are (reczoo/FuxiCTR model_zoo/DCNv2, model_zoo/DeepFM/DeepFM_torch).

Timings: `train_step` is wrapped to time the step alone (forward, loss, backward, gradient
clipping, optimiser); the rest of the epoch's loop is batch loading.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch
from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor, build_dataset
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.layers import CrossNetV2, FactorizationMachine, FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything
from torch import nn

NUMERIC = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]


class LogProcessor(FeatureProcessor):
    """FuxiCTR's processor with a `log1p` preprocess step (its documented extension point)."""

    def log1p(self, col: str) -> pl.Expr:
        return pl.col(col).log1p()


class DCNv2(BaseModel):
    """DCNv2 "parallel" from FuxiCTR's layers, as model_zoo/DCNv2 builds it."""

    def __init__(self, feature_map: FeatureMap, hidden: list[int], cross_layers: int,
                 embedding_dim: int, **kwargs: Any) -> None:
        super().__init__(feature_map, model_id="DCNv2", **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        input_dim = feature_map.sum_emb_out_dim()
        self.crossnet = CrossNetV2(input_dim, cross_layers)
        self.parallel_dnn = MLP_Block(input_dim=input_dim, output_dim=None, hidden_units=hidden,
                                      hidden_activations="ReLU", output_activation=None,
                                      dropout_rates=0, batch_norm=False)
        self.fc = nn.Linear(input_dim + hidden[-1], 1)
        self.compile(kwargs["optimizer"], kwargs["loss"], kwargs["learning_rate"])
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.embedding_layer(self.get_inputs(inputs), flatten_emb=True)
        out = self.fc(torch.cat([self.crossnet(x), self.parallel_dnn(x)], dim=-1))
        return {"y_pred": self.output_activation(out)}


class DeepFM(BaseModel):
    """DeepFM from FuxiCTR's layers, as model_zoo/DeepFM/DeepFM_torch builds it."""

    def __init__(self, feature_map: FeatureMap, hidden: list[int], embedding_dim: int,
                 **kwargs: Any) -> None:
        super().__init__(feature_map, model_id="DeepFM", **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.fm = FactorizationMachine(feature_map)
        self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1,
                             hidden_units=hidden, hidden_activations="ReLU",
                             output_activation=None, dropout_rates=0, batch_norm=False)
        self.compile(kwargs["optimizer"], kwargs["loss"], kwargs["learning_rate"])
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.get_inputs(inputs)
        emb = self.embedding_layer(x)
        out = self.fm(x, emb) + self.mlp(emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(out)}


def _params(data: Path, work: Path, seed: int) -> dict[str, Any]:
    """FuxiCTR's experiment parameters (what a model_config + dataset_config YAML would hold)."""
    return {
        "dataset_id": "ctr", "data_root": str(work / "data"), "data_format": "csv",
        "train_data": str(data / "train.csv"), "valid_data": str(data / "valid.csv"),
        "test_data": str(data / "test.csv"), "min_categr_count": 2,
        "feature_cols": [
            {"name": NUMERIC, "active": True, "dtype": "float", "type": "numeric",
             "fill_na": 0, "preprocess": "log1p", "normalizer": "StandardScaler"},
            {"name": CATEGORICAL, "active": True, "dtype": "str", "type": "categorical"}],
        "label_col": {"name": "label", "dtype": "float"},
        "model_root": str(work / "checkpoints"), "optimizer": "adam", "embedding_dim": 16,
        "loss": "binary_crossentropy", "learning_rate": 1e-3, "batch_size": 4096,
        "epochs": 1, "shuffle": True, "seed": seed, "monitor": "AUC",
        "monitor_mode": "max", "metrics": ["logloss", "AUC"], "verbose": 0,
        "embedding_regularizer": 0, "net_regularizer": 0, "early_stop_patience": 2,
    }


def _timed_steps(model: BaseModel) -> dict[str, float]:
    """Wrap `model.train_step` to add up its seconds and count its samples, and
    `model.evaluate` to add up the validation's seconds inside `fit`."""
    clock = {"seconds": 0.0, "samples": 0, "valid_seconds": 0.0}
    step, evaluate = model.train_step, model.evaluate

    def timed_eval(*args: Any, **kwargs: Any) -> dict[str, float]:
        start = time.perf_counter()
        logs = evaluate(*args, **kwargs)
        clock["valid_seconds"] += time.perf_counter() - start
        return logs

    def timed(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        start = time.perf_counter()
        loss = step(batch)
        clock["seconds"] += time.perf_counter() - start
        clock["samples"] += len(batch["label"])
        return loss

    model.train_step, model.evaluate = timed, timed_eval
    return clock


def run(data: Path, work: Path, model_name: str, seed: int) -> dict[str, Any]:
    """Preprocess, train one epoch, evaluate test; timings, metrics, parameters."""
    start = time.perf_counter()
    params = _params(data, work, seed)
    seed_everything(seed=seed)
    processor = LogProcessor(**params)
    params["train_data"], params["valid_data"], params["test_data"] = build_dataset(
        processor, **params)
    feature_map = FeatureMap(params["dataset_id"], processor.data_dir)
    feature_map.load(os.path.join(processor.data_dir, "feature_map.json"), params)
    prep = time.perf_counter()
    if model_name == "dcnv2":
        model = DCNv2(feature_map, [400, 400, 400], 3, **params)
    else:
        model = DeepFM(feature_map, [400, 400, 400], **params)
    os.makedirs(model.model_dir, exist_ok=True)  # where fit keeps the best weights
    params["data_format"] = "parquet"
    train_gen, valid_gen = RankDataLoader(feature_map, stage="train", **params)
    clock = _timed_steps(model)
    fit_start = time.perf_counter()
    model.fit(train_gen, validation_data=valid_gen, **params)
    fit_end = time.perf_counter()
    test_gen = RankDataLoader(feature_map, stage="test", **params)
    model.evaluate = type(model).evaluate.__get__(model)  # the test is not validation
    test = model.evaluate(test_gen, metrics=["AUC", "logloss"])
    end = time.perf_counter()
    return {"framework": "fuxictr", "model": model_name, "seed": seed,
            "params": sum(p.numel() for p in model.parameters()),
            "train_rows": clock["samples"], "step_seconds": clock["seconds"],
            "preprocess_seconds": prep - start, "fit_seconds": fit_end - fit_start,
            "valid_seconds": clock["valid_seconds"],
            "test_seconds": end - fit_end, "process_seconds": end - start,
            "test_auc": float(test["AUC"]), "test_logloss": float(test["logloss"]),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", choices=["dcnv2", "deepfm"], required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    result = run(args.data, args.work, args.model, args.seed)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
