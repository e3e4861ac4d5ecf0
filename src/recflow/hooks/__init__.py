"""Kedro hooks recflow registers in `settings.HOOKS`, one module per concern.

* `runs`: all-or-nothing outputs (`AtomicRunHooks`, the run journal) and the active
  config loader (`ConfigCaptureHooks`);
* `hints`: a missing raw input named with what to run or declare (`MissingInputsHook`);
* `spark`: the SparkSession of `--env spark` (`SparkHooks`);
* `tracking`: metrics, plots and bundles to MLflow while a run is active
  (`MlflowArtifactsHook`).
"""

from recflow.hooks.hints import MissingInputError, MissingInputsHook
from recflow.hooks.runs import (
    AtomicRunHooks,
    ConfigCaptureHooks,
    RunInterrupted,
    active_config_loader,
    dataset_filepath,
    dataset_filepaths,
)
from recflow.hooks.spark import SparkHooks
from recflow.hooks.tracking import MlflowArtifactsHook

__all__ = [
    "AtomicRunHooks",
    "ConfigCaptureHooks",
    "MissingInputError",
    "MissingInputsHook",
    "MlflowArtifactsHook",
    "RunInterrupted",
    "SparkHooks",
    "active_config_loader",
    "dataset_filepath",
    "dataset_filepaths",
]
