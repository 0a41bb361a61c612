"""The kernel matrix: the `matrix` marker, and which of its tests need root.

Registered here for now; it belongs in pyproject's [tool.pytest.ini_options] markers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
# Probes and loads against the running kernel: root, like tests/kernel (CI fails, not skips).
KERNEL = {"test_features.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.fspath)
        if path.parent == HERE:
            item.add_marker(pytest.mark.matrix)
            if path.name in KERNEL:
                item.add_marker(pytest.mark.kernel)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.matrix import runner

    if runner.REPORT:
        terminalreporter.write_sep("=", "kernel matrix")
        for line in runner.REPORT:
            terminalreporter.write_line(line)
