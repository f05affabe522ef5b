"""Shared test configuration."""

from __future__ import annotations

import importlib.util
import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `vgg`-marked tests where torchvision (the 'vgg' extra) is not installed, and
    `cuda`-marked tests where CUDA is not available (unless `GKSPARSE_TEST_DEVICE=cpu` runs
    them on the CPU, against itself: tests/training/test_cuda.py)."""
    if importlib.util.find_spec("torchvision") is None:
        skip = pytest.mark.skip(reason="needs torchvision: pip install 'gksparse[vgg]'")
        for item in items:
            if "vgg" in item.keywords:
                item.add_marker(skip)
    cuda = [item for item in items if item.get_closest_marker("cuda") is not None]
    if cuda and os.environ.get("GKSPARSE_TEST_DEVICE") != "cpu":
        import torch  # only where a cuda test was collected

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="needs CUDA (GKSPARSE_TEST_DEVICE=cpu: on the CPU)")
            for item in cuda:
                item.add_marker(skip)
