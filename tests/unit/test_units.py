from __future__ import annotations

import pytest

from netlogger.units import parse_duration, parse_size


@pytest.mark.parametrize(
    "text,seconds", [("30s", 30), ("10m", 600), ("1h30m", 5400), ("250ms", 0.25), ("2d", 172800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "5x", "1h 30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text,size",
    [("100MB", 100_000_000), ("8MiB", 8 << 20), ("4096", 4096), (512, 512), ("1 GiB", 1 << 30)],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


def test_bad_size() -> None:
    with pytest.raises(ValueError, match="bad size"):
        parse_size("lots")
