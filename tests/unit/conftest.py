"""Unit-test fixtures shared by the model, trainer and export tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core box they cost ~20x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def serving_world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Small raw data, preprocessed by the real nodes; two exported models as bundles."""
    from tests.serving_world import build_serving_world

    return build_serving_world(tmp_path_factory.mktemp("serving"))
