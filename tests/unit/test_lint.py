"""The code stays ruff-clean; CI runs this like any other test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_ruff_check_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    # Strict for netlogger/ and monitor/; the configuration is pyproject.toml's [tool.mypy].
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


IGNORE = re.compile(r"#\s*type:\s*ignore")
EXPLAINED_IGNORE = re.compile(r"# type: ignore\[[a-z-]+(, [a-z-]+)*\]  # \S")


def test_every_type_ignore_says_why() -> None:
    unexplained = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for package in ("netlogger", "monitor")
        for path in sorted((REPO / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if IGNORE.search(line) and not EXPLAINED_IGNORE.search(line)
    ]
    assert not unexplained, "each `# type: ignore[code]` is followed by `  # why`:\n" + "\n".join(
        unexplained
    )
