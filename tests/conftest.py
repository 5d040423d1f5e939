"""Test layers and the fixtures they share.

tests/unit         pure functions and modules: no files beyond tmp_path, no subprocesses, no training
tests/integration  export, runtime and HTTP in process; fits and pretraining on tiny configs
tests/e2e          real processes: the README flow, ``unlearn-cli serve``, torchrun DDP, wheel builds

``slow`` marks the tests that train, export or start a server of their own, so
``python -m pytest -m "not slow" -q`` is the inner loop (about 8 min on 2 cores, against about 45 min
for everything, which CI runs). Helpers that are not fixtures live in tests/helpers.py
(``from tests.helpers import ...``); ``tests`` is a package for that, so no test module imports
another. The session fixtures below are shared by all layers and must not be modified by a test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import guard_entry, make_generator, save_run

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


@pytest.fixture(scope="session")
def guarded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fit run of a tiny 1-channel DCGAN (z_dim 8) with one guard direction at t = 0.4. Read only."""
    return save_run(tmp_path_factory.mktemp("guarded") / "run", make_generator("dcgan"), guard_entry(threshold=0.4))


@pytest.fixture(scope="session")
def artifact(guarded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``guarded_run`` exported with the default flags (guard shift): the runtime's and the service's model.

    Read only: a test that edits an artifact copies it first."""
    from feature_unlearn.export import ExportConfig, export_model

    out = tmp_path_factory.mktemp("artifact") / "art"
    export_model(ExportConfig(source=str(guarded_run), out=out))
    return out
