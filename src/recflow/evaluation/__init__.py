"""Evaluation: seed aggregation, dataset statistics, ranking and retrieval protocols.

The package root and `aggregate` / `stats` / `ranking` are numpy / pandas only, so
reports, benchmarks and notebooks reuse them; `retrieval_protocol` trains models
(torch), and `benchmark` drives `kedro run` in child processes.
"""

from recflow.evaluation.aggregate import mean_std
from recflow.evaluation.stats import dataset_statistics, key_columns, split_statistics

__all__ = ["dataset_statistics", "key_columns", "mean_std", "split_statistics"]
