"""The SparkSession of envs that configure one (`conf/<env>/spark.yml`), as Kedro's pyspark starter.

Envs without a `spark.yml` never import pyspark, so the optional `spark` extra
stays optional.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


class SparkHooks:
    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Build (or reuse) the session from the env's `spark.yml`."""
        try:
            conf = context.config_loader["spark"]
        except (KeyError, MissingConfigException):
            return
        if not conf:
            return
        try:
            from pyspark import SparkConf
            from pyspark.sql import SparkSession
        except ImportError as exc:
            raise ImportError(
                "this Kedro env configures Spark (spark.yml) but pyspark is not installed; "
                "pip install -e '.[spark]'"
            ) from exc
        settings = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in conf.items()}
        # Python workers must run this interpreter (recflow is installed in it), not PATH's
        # python3; PySpark reads the variable when it starts the context
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder.config(conf=SparkConf().setAll(settings.items()))
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
        logger.info("SparkSession %s (%s)", spark.sparkContext.appName, spark.sparkContext.master)
