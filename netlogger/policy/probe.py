"""`policy test`: what the kernel would decide, asked of the kernel itself.

No user-space model of the decision exists to drift from the programs: the
policies are compiled into the maps of a throwaway plane (its own scope cgroup
and pin root), one cgroup is enrolled in enforce mode, and a child process in a
network namespace of its own makes the real connect() or sendto() for each
destination. The record the programs write is the answer. The namespace is
joined to nothing but a peer namespace we also make, so nothing leaves the host.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from netlogger import control, privileges, sandbox
from netlogger.config.check import check_source
from netlogger.config.source import Source
from netlogger.demo import decoder_for
from netlogger.enforce import Enforcer, Target
from netlogger.errors import UsageError
from netlogger.kernel.ringbuf import RingReader
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.record import Record
from netlogger.policy.compile import PolicySet
from netlogger.workload import Workload

DEFAULT_PORT = 443
RECORD_WAIT_S = 1.0
_DEST = re.compile(
    r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:/\[\]]+))(?::(?P<port>\d+))?(?:/(?P<proto>.*))?$"
)


@dataclass(frozen=True)
class Dest:
    text: str
    addr: str
    port: int
    proto: str  # tcp / udp


@dataclass(frozen=True)
class Verdict:
    dest: str
    action: str  # allowed / denied
    reason: str
    rule: str | None
    errno: int  # what the syscall returned: 0, EINPROGRESS (tcp), EPERM (denied), ...


def parse_dest(text: str) -> Dest:
    """IP[:PORT][/tcp|udp], [IPv6]:PORT, or a bare IPv6 address; port 443 and tcp by default."""
    bare = text.partition("/")
    try:  # a bare IPv6 address has colons that are not a port
        addr = ipaddress.ip_address(bare[0])
        return Dest(text, str(addr), DEFAULT_PORT, _proto(text, bare[2] or "tcp"))
    except ValueError:
        pass
    m = _DEST.match(text)
    if m is None:
        raise UsageError(f"bad destination {text!r}: use IP[:PORT][/tcp|udp] or [IPv6]:PORT")
    host = m["v6"] or m["host"]
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(
            f"{text!r}: a DOMAIN destination is decided by the addresses the policy's resolvers "
            "answer for it, and `policy test` runs no resolver yet; give an address (one no "
            "answer admitted is decided as the kernel decides it: unresolved_ip)"
        ) from None
    port = int(m["port"] or DEFAULT_PORT)
    if not 1 <= port <= 65535:
        raise UsageError(f"bad destination {text!r}: ports run from 1 to 65535")
    return Dest(text, str(addr), port, _proto(text, m["proto"] or "tcp"))


def _proto(text: str, proto: str) -> str:
    if proto not in ("tcp", "udp"):
        raise UsageError(f"bad destination {text!r}: the protocol is tcp or udp")
    return proto


def agent_policies(socket: Path) -> PolicySet:
    """The running agent's policies, compiled here by the same compiler."""
    data = control.request(socket, "policies")
    return check_source(Source(f"the agent on {socket}", {"policies": data})).policies


def decide(policies: PolicySet, name: str, dests: list[Dest]) -> list[Verdict]:
    """The programs' verdict for each destination under policy `name`, in enforce mode."""
    if name not in policies.policies:
        known = ", ".join(sorted(policies.named())) or "none"
        raise UsageError(f"no policy named {name!r} (known: {known})")
    privileges.require()
    tag = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        net = stack.enter_context(sandbox.network(f"pt{tag}"))
        plane = stack.enter_context(sandbox.plane(f"netlogger-probe-{tag}"))
        probe_cg = stack.enter_context(sandbox.cgroup(plane.scope, "probe"))
        enforcer = Enforcer(plane, policies)
        enforcer.apply_policies(policies)
        enforcer.enroll(Target(probe_cg, name, mode="enforce", agent="policy-test"))
        workload = stack.enter_context(Workload(net.workload_ns, probe_cg.path))
        ring = stack.enter_context(plane.reader())
        decoder = decoder_for(policies)
        return [_one(workload, ring, decoder, d) for d in dests]
    raise AssertionError("unreachable")  # ExitStack does not swallow exceptions


def _one(workload: Workload, ring: RingReader, decoder: Decoder, dest: Dest) -> Verdict:
    family = ipaddress.ip_address(dest.addr).version
    if dest.proto == "tcp":
        code = workload("connect", family=family, type="tcp", addr=dest.addr, port=dest.port)
    else:
        code = workload("sendto", family=family, addr=dest.addr, port=dest.port)
    record = _record(ring, decoder)
    if record is None:
        # Loopback passes unrecorded unless the policy logs it; nothing else is unrecorded.
        action = "denied" if code == errno.EPERM else "allowed"
        return Verdict(dest.text, action, "loopback" if action == "allowed" else "", None, code)
    return Verdict(dest.text, record.action, record.reason, record.rule, code)


def _record(ring: RingReader, decoder: Decoder) -> Record | None:
    """The decision record of the syscall just made (written before the syscall returned)."""
    deadline = time.monotonic() + RECORD_WAIT_S
    while True:
        records = [r for r in decoder.decode_all(ring.drain()) if isinstance(r, Record)]
        if records:
            return records[-1]
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)
