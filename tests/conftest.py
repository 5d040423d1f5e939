from __future__ import annotations

import os

import pytest
import torch

# Faces render once per session into a private cache, never into the user's home.
os.environ.setdefault("UNLEARN_CACHE", os.path.join(os.path.dirname(__file__), "..", ".tmp-cache"))
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
