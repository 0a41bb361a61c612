"""Re-laying a pinned entry by field name when its layout changed."""

from __future__ import annotations

import pytest

from netlogger.errors import StateError
from netlogger.kernel import abi
from netlogger.kernel.migrate import convert


def test_fields_move_and_integers_resize() -> None:
    old = [["mode", 0, 1], ["policy_id", 4, 8], ["bypass_until_ns", 12, 8]]
    raw = bytes([1, 0, 0, 0]) + (7).to_bytes(8, "little") + (99).to_bytes(8, "little")
    new = abi.Enrollment.from_buffer_copy(convert(raw, old, abi.Enrollment))
    assert (new.mode, new.policy_id, new.bypass_until_ns) == (1, 7, 99)


def test_integer_that_no_longer_fits_is_refused() -> None:
    raw = (1 << 40).to_bytes(8, "little")
    with pytest.raises(StateError, match="needs 8 bytes"):
        convert(raw, [["policy_id", 0, 8]], abi.Enrollment)


def test_byte_strings_grow_with_zeros_and_shrink_only_where_empty() -> None:
    old = [["agent", 0, 64], ["container_id", 64, 64]]
    raw = b"a1".ljust(64, b"\0") + b"c" * 63 + b"\0"
    new = abi.Labels.from_buffer_copy(convert(raw, old, abi.Labels))
    assert (new.agent, new.container_id) == (b"a1", b"c" * 63)
    too_long = [["policy", 0, 64]]
    with pytest.raises(StateError, match="longer than 32 bytes"):
        convert(b"p" * 64, too_long, abi.Labels)


def test_gone_fields_drop_and_new_ones_start_at_zero() -> None:
    raw = (5).to_bytes(4, "little") + (9).to_bytes(4, "little")
    new = abi.Enrollment.from_buffer_copy(
        convert(raw, [["policy_id", 0, 4], ["retired", 4, 4]], abi.Enrollment)
    )
    assert (new.policy_id, new.mode, new.bypass_until_ns) == (5, 0, 0)
