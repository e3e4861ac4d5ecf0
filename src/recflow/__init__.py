"""recflow: declarative recommender-systems pipelines on Kedro."""

__version__ = "0.1.0"
