"""Shared test configuration."""

from __future__ import annotations

import importlib.util

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `vgg`-marked tests where torchvision (the 'vgg' extra) is not installed."""
    if importlib.util.find_spec("torchvision") is not None:
        return
    skip = pytest.mark.skip(reason="needs torchvision: pip install 'gksparse[vgg]'")
    for item in items:
        if "vgg" in item.keywords:
            item.add_marker(skip)
