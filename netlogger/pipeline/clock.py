"""Record timestamps: the kernel's CLOCK_BOOTTIME moved to the wall clock, as RFC 3339."""

from __future__ import annotations

import functools
import time

NS = 1_000_000_000


def boot_to_wall_ns() -> int:
    """Add to a CLOCK_BOOTTIME reading to get wall-clock nanoseconds."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@functools.lru_cache(maxsize=16)
def second_prefix(second: int) -> str:
    """'YYYY-MM-DDTHH:MM:SS' of a wall-clock second (UTC); cached, and safe across threads."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def timestamp(wall_ns: int) -> str:
    """Wall-clock ns as RFC 3339 UTC with nanoseconds: every record's `ts`."""
    second, frac = divmod(wall_ns, NS)
    return f"{second_prefix(second)}.{frac:09d}Z"
