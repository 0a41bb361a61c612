"""DNS ring bytes -> DnsRecords and the answers they carry, read with dnspython.

The kernel copies each DNS answer it delivers to an enrolled cgroup into its
own ring (struct nl_dns_event, variable size: a fixed part, then the message).
The agent never trusts that message: it comes off the network. A record that
is short, foreign or inconsistent is skipped and counted by kind; a message
dnspython cannot read still yields a DnsRecord (with `dns.parse_error`), so
history shows the answer was seen, and the error is counted. Nothing here
raises on ring or packet content.

A message the kernel cut to its payload limit (flag CUT) is read resource
record by resource record as far as the prefix holds complete ones: the
header's answer count is lowered until dnspython reads the prefix cleanly.
That keeps every address the prefix really holds and invents none.
"""

from __future__ import annotations

import collections
import ipaddress
import socket
import struct
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from netlogger.kernel import abi
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.record import EVENT_NAMES, DnsRecord

_FIXED = abi.unpacker(abi.DnsEvent)
FIXED_SIZE = _FIXED.size
_NAMES = abi.flat_names(abi.DnsEvent)
_F = {name: i for i, name in enumerate(_NAMES)}
_VERDICTS = {v.value: v.name.lower() for v in abi.DnsVerdict}
_HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount (RFC 1035)
_ADDRESS_TYPES = {dns.rdatatype.A, dns.rdatatype.AAAA}
MAX_CHAIN = 16  # CNAME hops followed; a longer (or looping) chain stops here
PARSED_CACHE = 4096  # distinct messages remembered (see DnsDecoder._parse)


@dataclass(frozen=True)
class Answer:
    """What one DNS message says about the name a workload asked for."""

    qname: str
    qtype: str
    rcode: str
    cname_chain: tuple[str, ...]  # the CNAME targets from qname on, in order
    addresses: tuple[tuple[str, int], ...]  # (address, TTL seconds) of qname or its chain
    error: str | None = None  # why only part of the message could be read


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _read(wire: bytes, cut: bool) -> tuple[dns.message.Message, str | None]:
    """The message, or as much of it as a cut prefix holds whole (with the reason)."""
    try:
        return dns.message.from_wire(wire), None
    except dns.exception.DNSException as exc:
        if not cut or len(wire) < _HEADER.size:
            raise
        first = exc
    head = list(_HEADER.unpack_from(wire))
    good, lo, hi = None, 0, head[3]
    while lo <= hi:  # the most answer records that the prefix holds whole
        mid = (lo + hi) // 2
        head[3:6] = [mid, 0, 0]
        try:
            msg = dns.message.from_wire(
                _HEADER.pack(*head) + wire[_HEADER.size :], ignore_trailing=True
            )
        except dns.exception.DNSException:
            hi = mid - 1
        else:
            good, lo = msg, mid + 1
    if good is None:
        raise first
    return good, "cut"


def parse_answer(wire: bytes, cut: bool = False) -> Answer | str:
    """The Answer in `wire`, or the name of what made it unreadable."""
    try:
        msg, partial = _read(wire, cut)
    except dns.exception.DNSException as exc:
        return type(exc).__name__
    except (ValueError, IndexError, UnicodeError, OverflowError) as exc:
        # dnspython validates rdata with the standard library; hostile rdata can
        # surface as these instead of a DNSException.
        return type(exc).__name__
    if not msg.flags & dns.flags.QR:
        return "not_a_response"
    if len(msg.question) != 1:
        return "no_question" if not msg.question else "many_questions"
    question = msg.question[0]
    owners = [question.name]
    cnames = {
        rrset.name: rrset[0].target
        for rrset in msg.answer
        if rrset.rdtype == dns.rdatatype.CNAME and rrset.rdclass == dns.rdataclass.IN and rrset
    }
    while owners[-1] in cnames and len(owners) <= MAX_CHAIN:
        target = cnames[owners[-1]]
        if target in owners:
            partial = partial or "cname_loop"
            break
        owners.append(target)
    wanted = set(owners)
    addresses = tuple(
        (rdata.address, rrset.ttl)
        for rrset in msg.answer
        if rrset.rdtype in _ADDRESS_TYPES
        and rrset.rdclass == dns.rdataclass.IN
        and rrset.name in wanted
        for rdata in rrset
    )
    return Answer(
        _text(question.name),
        dns.rdatatype.to_text(question.rdtype),
        dns.rcode.to_text(msg.rcode()),
        tuple(_text(n) for n in owners[1:]),
        addresses,
        partial,
    )


def server_ip(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    addr = ipaddress.IPv6Address(raw)
    return str(addr.ipv4_mapped or addr)


class DnsDecoder:
    """Turns nl_dns_event ring records into DnsRecords, as the `Op.DNS` entry of Decoder.kinds."""

    def __init__(self, decoder: Decoder) -> None:
        """Joins `decoder`: its clock, names and counters; skips count as `dns_<why>`."""
        self.timestamp = decoder.timestamp
        self.rule_name = decoder.rule_name
        self.policy_name = decoder.policy_name
        self.host_name = decoder.host_name
        self.skipped = decoder.skipped
        self.unknown = decoder.unknown
        self.unreadable: collections.Counter[str] = collections.Counter()  # messages, by error
        self._parsed: dict[bytes, Answer | str] = {}
        decoder.kinds[abi.Op.DNS] = self.decode

    def _parse(self, message: bytes, cut: bool) -> Answer | str:
        """parse_answer, remembered: a workload asks the same names again and again, and
        answers differ then only in their id (the first two bytes), which the result
        does not depend on. dnspython costs hundreds of microseconds a message."""
        key = message[2:] + (b"\1" if cut else b"\0")
        parsed = self._parsed.get(key)
        if parsed is None:
            if len(self._parsed) >= PARSED_CACHE:
                self._parsed.clear()
            parsed = self._parsed[key] = parse_answer(message, cut)
        return parsed

    def _check(self, raw: bytes, v: tuple[int | bytes, ...]) -> str | None:
        if v[_F["version"]] != abi.ABI_VERSION:
            return "version"
        if v[_F["op"]] != abi.Op.DNS:
            return "unknown_op"
        size, payload = v[_F["size"]], v[_F["payload_len"]]
        assert isinstance(size, int) and isinstance(payload, int)
        if size != FIXED_SIZE + payload or size > len(raw) or payload > abi.DNS_PAYLOAD_MAX:
            return "size"
        return None

    def decode(self, raw: bytes) -> DnsRecord | None:
        if len(raw) < FIXED_SIZE:
            self.skipped["dns_short"] += 1
            return None
        v = _FIXED.unpack_from(raw)
        why = self._check(raw, v)
        if why:
            self.skipped["dns_" + why] += 1
            return None
        (op, version, size, cpu, ts_ns, seq, cgroup_id, cookie, policy_id, rule_id, server, port,
         family, msg_len, payload_len, admitted, verdict, flags, pad, payload) = v  # fmt: skip
        del op, version, size, cpu, pad, payload  # payload: the flexible array, b""
        if verdict not in _VERDICTS:
            self.unknown["dns_verdict"] += 1
        cut = bool(flags & abi.DnsFlag.CUT)
        parsed = self._parse(raw[FIXED_SIZE : FIXED_SIZE + payload_len], cut)
        answer = parsed if isinstance(parsed, Answer) else None
        error = parsed if isinstance(parsed, str) else answer and answer.error
        if error:
            self.unreadable[error] += 1
        rec = DnsRecord(
            event_name=EVENT_NAMES["dns"],
            ts=self.timestamp(ts_ns),
            bpf_ts_ns=ts_ns,
            seq=seq,
            action="allowed",
            cgroup_id=str(cgroup_id),
            sock_cookie=cookie,
            policy=self.policy_name(policy_id),
            identity=str(rule_id),
            verdict=_VERDICTS.get(verdict, f"unknown({verdict})"),
            admitted=admitted,
            server=server_ip(family, server),
            server_port=str(port),
            transport="tcp" if flags & abi.DnsFlag.TCP else "udp",
            msg_len=msg_len,
            host_name=self.host_name,
            container_id="",
            agent="",
            project="",
            rule=self.rule_name(rule_id) if rule_id else None,
            truncated=True if flags & abi.DnsFlag.TRUNCATED else None,
            cut=True if cut else None,
            parse_error=error or None,
        )
        if answer is not None:
            rec.qname, rec.qtype, rec.rcode = answer.qname, answer.qtype, answer.rcode
            rec.answers = [a for a, _ in answer.addresses] or None
            rec.cname_chain = list(answer.cname_chain) or None
            rec.ttl = min((t for _, t in answer.addresses), default=None)
        return rec
