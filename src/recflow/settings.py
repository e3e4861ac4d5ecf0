"""Kedro project settings for recflow.

Telemetry is off in three ways (`.telemetry`, the env var below, and the plugin
disabled here) because recflow must never touch the network at run time.
"""

import os

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

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "spark": ["spark*", "spark*/**"],  # conf/spark/spark.yml: recflow.hooks.spark
    },
}

# Catalog entries declare pandera / great-expectations validators (Kedro 1.7).
DATASET_VALIDATION = True
