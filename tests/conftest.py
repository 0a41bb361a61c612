"""Shared test setup: kernel tests are marked by directory, and CI must run them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent
pytest_plugins = ["tests.fixtures"]


KERNEL_DIRS = (HERE / "kernel", HERE / "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(d in Path(item.fspath).parents for d in KERNEL_DIRS):
            item.add_marker(pytest.mark.kernel)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Kernel tests need root; CI is root, so there they run or fail, never skip.
    if item.get_closest_marker("kernel") and os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("kernel tests must run as root in CI")
        pytest.skip("kernel tests need root")
