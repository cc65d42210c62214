"""Shared pytest setup: one thread (the CI machine has 2 busy cores), GPU/ComfyUI/browser markers, paths."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("E4D_SHARED", REPO.parent / "shared"))

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("E4D_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    no_cuda = pytest.mark.skip(reason="needs a CUDA GPU (run on the H100: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_cuda)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The team's shared reference folder; in CI it sits beside the clone and must exist (no silent skip)."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            raise RuntimeError(f"shared/ not found at {SHARED}; CI must provide ../shared beside the clone")
        pytest.skip(f"shared/ not found at {SHARED} (set E4D_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def cesium_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "cesium_man_walk"
