"""Kedro project settings for recflow.

Telemetry is off in three ways (`.telemetry`, the env var below, and the plugin
disabled here) because recflow must never touch the network at run time.
"""

import os

from recflow.config_loader import DeltaConfigLoader
from recflow.hooks import (
    AtomicRunHooks,
    ConfigCaptureHooks,
    MissingInputsHook,
    MlflowArtifactsHook,
    SparkHooks,
)

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

HOOKS = (ConfigCaptureHooks(), AtomicRunHooks(), MissingInputsHook(), MlflowArtifactsHook(),
         SparkHooks())
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-telemetry",)

# An env is a delta of conf/base: its parameters merge key by key into base's, `_replace:
# true` in a mapping replaces the inherited one, `null` drops an inherited mapping
# (recflow.config_loader, docs/concepts.md). Catalog entries replace per dataset.
CONFIG_LOADER_CLASS = DeltaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "spark": ["spark*", "spark*/**"],  # conf/spark/spark.yml: recflow.hooks.spark
    },
}

# Catalog entries declare pandera / great-expectations validators (Kedro 1.7).
DATASET_VALIDATION = True
