"""Kedro dataset classes recflow adds to the catalog, and raw-data loaders.

Imported lazily so that `recflow.datasets.MovieLensDataset` (used by the
catalog) does not drag torch in, and the torch dataset not pandas loaders.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MovieLensDataset",
    "NumpyArrayDataset",
    "OnnxModelDataset",
    "ServingBundleDataset",
    "TorchModelDataset",
]


def __getattr__(name: str) -> Any:
    if name == "MovieLensDataset":
        from recflow.datasets.movielens import MovieLensDataset

        return MovieLensDataset
    if name == "TorchModelDataset":
        from recflow.datasets.torch_model import TorchModelDataset

        return TorchModelDataset
    if name == "NumpyArrayDataset":
        from recflow.datasets.numpy_array import NumpyArrayDataset

        return NumpyArrayDataset
    if name in ("OnnxModelDataset", "ServingBundleDataset"):
        from recflow.datasets import onnx_model

        return getattr(onnx_model, name)
    raise AttributeError(name)
