"""nl_dns_event records as the kernel writes them, built from the ctypes mirror,
with DNS messages made by dnspython: what the unit tests and fuzzing feed the agent."""

from __future__ import annotations

import ctypes
import socket

import dns.message
import dns.rrset

from netlogger.kernel import abi


def response(qname: str, *rrsets: tuple[str, int, str, list[str]], qtype: str = "A") -> bytes:
    """A response to an A (or `qtype`) query for `qname` whose answer section is `rrsets`:
    (owner, ttl, type, [rdata...]) each."""
    query = dns.message.make_query(qname, qtype)
    reply = dns.message.make_response(query)
    for owner, ttl, rdtype, rdatas in rrsets:
        reply.answer.append(dns.rrset.from_text_list(owner, ttl, "IN", rdtype, rdatas))
    return reply.to_wire()


def dns_event(payload: bytes, msg_len: int | None = None, **fields: int) -> bytes:
    """One ring record: the fixed part, then `payload` (a prefix of a `msg_len`-byte message)."""
    e = abi.DnsEvent()
    e.hdr.op, e.hdr.version = abi.Op.DNS, abi.ABI_VERSION
    e.hdr.size = ctypes.sizeof(e) + len(payload)
    e.ts_ns, e.seq, e.cgroup_id, e.sock_cookie = 5_000_000_000, 3, 42, 77
    e.policy_id, e.rule_id = 9, 0
    e.server[:4] = list(socket.inet_aton("198.18.0.53"))
    e.server_port, e.family = 53, socket.AF_INET
    e.msg_len = len(payload) if msg_len is None else msg_len
    e.payload_len = len(payload)
    e.verdict = abi.DnsVerdict.ADMITTED
    if e.msg_len > len(payload):
        e.flags |= abi.DnsFlag.CUT
    for name, value in fields.items():
        target = e.hdr if name in ("op", "version", "size") else e
        setattr(target, name, value)
    return bytes(e) + payload
