"""Evaluation helpers shared by every report: seed aggregation and dataset statistics.

numpy / pandas only (no torch, no Kedro), so reports, benchmarks and notebooks reuse them.
"""

from recflow.evaluation.aggregate import mean_std
from recflow.evaluation.stats import dataset_statistics, key_columns, split_statistics

__all__ = ["dataset_statistics", "key_columns", "mean_std", "split_statistics"]
