"""Real ring record bytes from netlogger/kernel/abi.py's ctypes mirror, and a ring stand-in.

`RingStandIn` stands in for kernel.ringbuf.RingReader: it holds records framed
exactly as the kernel frames them (8-byte header, 8-byte aligned) and hands
them out through the real `ringbuf.scan`, so a Pump driven by it decodes what
it would decode from a live ring.
"""

from __future__ import annotations

import ctypes
import socket
import struct

import msgspec

from netlogger.kernel import abi
from netlogger.kernel.ringbuf import HEADER, Batch, scan, span
from netlogger.pipeline.decisions import Decisions
from netlogger.pipeline.decode import EVENT_SIZE, Decoder
from netlogger.pipeline.record import RingItem


def event(**fields: object) -> bytes:
    """One connect decision, denied, to 10.1.2.3:443; `fields` override any field."""
    e = abi.Event()
    e.hdr.op, e.hdr.version, e.hdr.size = abi.Op.CONNECT, abi.ABI_VERSION, ctypes.sizeof(e)
    e.ts_ns, e.seq, e.cgroup_id, e.task_cgroup_id, e.sock_cookie = 5_000_000_123, 7, 42, 43, 99
    e.pid, e.tid, e.uid, e.gid, e.rule_id, e.policy_id = 100, 101, 1000, 1001, 5, 9
    e.family, e.sock_type, e.protocol, e.dport = socket.AF_INET, 1, 6, 443
    e.daddr[:4] = [10, 1, 2, 3]
    e.action, e.mode, e.reason = abi.Action.DENIED, abi.Mode.ENFORCE, abi.Reason.DEFAULT_DENY
    e.comm = b"curl"
    for name, value in fields.items():
        setattr(e.hdr if name in ("op", "version", "size") else e, name, value)
    return bytes(e)


def framed(payload: bytes) -> bytes:
    """`payload` as the kernel lays it in the ring: length header, then padding to 8."""
    return (
        struct.pack("II", len(payload), 0)
        + payload
        + bytes(span(len(payload)) - HEADER - len(payload))
    )


def decoder() -> Decoder:
    return Decoder(lambda r: {5: "web"}.get(r), lambda p: {9: "default"}.get(p, "?"), "host-1")


TEST_OP = 42  # not a kernel op: the kind tests register


def add_test_kind(d: Decoder) -> None:
    """Register op 42: a connect event with 8 bytes more, named `test.kind`."""

    def decode(raw: bytes) -> RingItem | None:
        rec = d.decode(bytes([abi.Op.CONNECT]) + raw[1:EVENT_SIZE])
        return rec and msgspec.structs.replace(rec, event_name="test.kind")

    d.kinds[TEST_OP] = decode


class RingStandIn:
    """A stand-in for RingReader over an in-memory region (no kernel)."""

    def __init__(self) -> None:
        self._region = bytearray()
        self.position = 0  # read up to here
        self.released = 0  # freed up to here

    def push(self, *payloads: bytes) -> None:
        for payload in payloads:
            self._region += framed(payload)

    def drain(self, release: bool = True, max_bytes: int = 0) -> Batch:
        end = self.position + max_bytes if max_bytes else len(self._region)
        batch, used = scan(bytes(self._region[self.position : end]), EVENT_SIZE)
        self.position += used
        if release:
            self.release(self.position)
        return batch

    def release(self, position: int) -> None:
        self.released = max(self.released, position)

    def wait(self, timeout: float) -> bool:
        return self.pending_bytes() > 0

    def pending_bytes(self) -> int:
        return len(self._region) - self.position


def ring_batch(*payloads: bytes) -> Decisions:
    """`payloads` framed in a ring and decoded as the pump decodes a uniform batch."""
    ring = RingStandIn()
    ring.push(*payloads)
    batch = decoder().decode_batch(ring.drain())
    assert isinstance(batch, Decisions)
    return batch
