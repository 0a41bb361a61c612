"""Records -> OTLP LogRecord protobuf bytes, ready to splice into an export request.

The OpenTelemetry SDK path (Logger.emit -> LogRecord -> encode_logs -> protobuf objects) costs
tens of microseconds per record here, most of it building one protobuf object per attribute.
This module writes the same wire bytes directly and reuses what repeats:

* the attributes that describe *who* (host, container, process, policy) and *what* (event,
  action, destination, verdict, plus severity and body) are encoded once per distinct value
  combination and cached as ready bytes;
* only the per-record values (`ts`, `bpf_ts_ns`, `seq`, `sock_cookie`, `record_id`, the
  timestamps) are encoded for every record.

Each output entry is a complete `ScopeLogs.log_records` field (tag, length, LogRecord), so a
spool segment made of entries is already the body of a ScopeLogs message, and a request is
built by framing it (see `request`). opentelemetry-proto's classes encode the resource and
scope (once) and are the oracle the tests parse every byte with.

Attributes are exactly `msgspec.to_builtins(item)` (the keys and types of `tail --json` and the
JSONL sink: absent when unknown, never empty) plus `record_id`:

    decision  "<host>:<cgroup_id>:<seq>:<bpf_ts_ns>"
    gap       "<host>:<cgroup_id or ->:gap:<gap.kind>:<gap.sink or ->:<seq_first>-<seq_last>:<ts>"
    control   "<host>:<cgroup_id or ->:control:<control.command>:<ts>"

The id is computed when the record first enters the sink and travels inside the stored bytes,
so a replayed duplicate is byte-identical and downstream can drop it by id.
"""

from __future__ import annotations

import calendar
import datetime as dt
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any

import msgspec
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from netlogger.pipeline.clock import NS, second_prefix
from netlogger.pipeline.decisions import REPEATS, Decisions, Group
from netlogger.pipeline.record import EVENT_NAMES, TIMES, Control, DnsRecord, Gap, Item, Record
from netlogger.sinks.otlp.spool import DNS_SPAN_PREFIX, Span, Spans

# OpenTelemetry severity numbers: INFO=9, WARN=13.
SEVERITY = {"allowed": (9, "INFO"), "denied": (13, "WARN"), "bypassed": (13, "WARN")}
GAP_SEVERITY = (13, "WARN")  # a loss is worth a look
CONTROL_SEVERITY = {"done": (9, "INFO"), "refused": (13, "WARN")}
_UNKNOWN_SEVERITY = (9, "INFO")

# Per-record fields: encoded for every record, never cached.
_UNIQUE = ("ts", "bpf_ts_ns", "seq", "sock_cookie")
# A folded record's counts (repeat.*): rare, and unique per record, so such records go
# through `_generic`, and these fields are never part of a cache key.
_REPEAT = ("repeat_count", "repeat_first_ns", "repeat_last_ns", "repeat_seq_first")
# Fields that describe the decision; body and severity derive from these alone.
_WHAT = (
    "event_name", "action", "reason", "would_deny", "l4_proto", "l4_proto_code", "ipv6",
    "ipv4_mapped", "nat64", "no_dst", "identity", "rule", "dst_ip", "dst_port", "dst_host",
)  # fmt: skip
# DNS evidence changes with every record (ages, TTLs left) and holds lists: encoded per
# record when present, outside the cached groups.
_DNS_EVIDENCE = tuple(
    (f.name, f.encode_name)
    for f in msgspec.structs.fields(Record)
    if f.encode_name.startswith("dns.")
)
_CACHE_LIMIT = 65536
_MASK64 = (1 << 64) - 1
_FIXED64 = struct.Struct("<Q").pack


def _slow_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Varints are built 14 bits at a time from two tables: a Python loop per 7-bit group is the
# single largest cost of encoding a record otherwise.
_SMALL = [_slow_varint(n) for n in range(1 << 14)]
_LOW = [bytes(((n & 0x7F) | 0x80, (n >> 7) | 0x80)) for n in range(1 << 14)]


def varint(n: int) -> bytes:
    """Protobuf base-128 varint; negative ints as int64 two's complement, as protobuf does."""
    if n < 16384:
        if n >= 0:
            return _SMALL[n]
        n &= _MASK64
    if n < 1 << 28:
        return _LOW[n & 0x3FFF] + _SMALL[n >> 14]
    if n < 1 << 42:
        return _LOW[n & 0x3FFF] + _LOW[(n >> 14) & 0x3FFF] + _SMALL[n >> 28]
    if n < 1 << 56:
        return b"".join(
            (_LOW[n & 0x3FFF], _LOW[(n >> 14) & 0x3FFF], _LOW[(n >> 28) & 0x3FFF], _SMALL[n >> 42])
        )
    return _slow_varint(n)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: tag byte, length, payload."""
    return bytes((tag,)) + varint(len(payload)) + payload


def any_value(value: Any) -> bytes:
    """AnyValue bytes for a JSON-ish scalar or list (bool before int: bool is an int)."""
    if isinstance(value, str):
        return _field(0x0A, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, list | tuple):
        return _field(0x2A, b"".join(_field(0x0A, any_value(v)) for v in value))
    raise TypeError(f"cannot encode {type(value).__name__} as an OTLP attribute")


def key_value(key: str, value: Any) -> bytes:
    """One `LogRecord.attributes` entry (field 6): KeyValue{key, value: AnyValue}."""
    return _field(0x32, _field(0x0A, key.encode()) + _field(0x12, any_value(value)))


class _Prefixes(dict[int, bytes]):
    """Everything in one attribute's KeyValue before its value's bytes, by value length.

    For a fixed key the framing depends only on how long the value is, so it is made once
    per length and the per-record work is one concatenation.
    """

    def __init__(self, key: str, value_tag: int, length_prefixed: bool) -> None:
        super().__init__()
        self._keyfield = _field(0x0A, key.encode())
        self._tag = bytes((value_tag,))
        self._length_prefixed = length_prefixed

    def __missing__(self, length: int) -> bytes:
        head = self._tag + (varint(length) if self._length_prefixed else b"")
        inner_len = len(self._keyfield) + 1 + len(varint(len(head) + length)) + len(head) + length
        prefix = b"\x32" + varint(inner_len) + self._keyfield + b"\x12" + varint(len(head) + length)
        value = self[length] = prefix + head
        return value


# Framing before the value, by value length, for the attributes every record has its own of.
_TS = _Prefixes("ts", 0x0A, length_prefixed=True)
_RECORD_ID = _Prefixes("record_id", 0x0A, length_prefixed=True)
_BPF_TS = _Prefixes("bpf_ts_ns", 0x18, length_prefixed=False)
_SEQ = _Prefixes("seq", 0x18, length_prefixed=False)
_COOKIE = _Prefixes("sock_cookie", 0x18, length_prefixed=False)


def record_id(item: Item, host: str) -> str:
    host = item.host_name or host
    if isinstance(item, Record):
        return f"{host}:{item.cgroup_id}:{item.seq}:{item.bpf_ts_ns}"
    if isinstance(item, DnsRecord):
        return f"{host}:{item.cgroup_id}:dns:{item.seq}:{item.bpf_ts_ns}"
    if isinstance(item, Control):
        return f"{host}:{item.cgroup_id or '-'}:control:{item.command}:{item.ts}"
    first = "" if item.gap_seq_first is None else item.gap_seq_first
    last = "" if item.gap_seq_last is None else item.gap_seq_last
    return (
        f"{host}:{item.cgroup_id or '-'}:gap:{item.gap_kind}:{item.gap_sink or '-'}"
        f":{first}-{last}:{item.ts}"
    )


def _destination(what: Mapping[str, Any]) -> str:
    if what.get("no_dst"):
        return f"{what.get('l4_proto', '')} socket"
    ip = what.get("dst_ip", "?")
    host = f"[{ip}]" if ":" in ip else ip
    name = f" ({what['dst_host']})" if what.get("dst_host") else ""
    return f"{host}:{what.get('dst_port', '?')}{name}"


def decision_body(what: Mapping[str, Any]) -> str:
    """`denied connect 10.0.0.1:443 (example.com): default_deny` — short, for
    people; a folded record adds TIMES and its count after the destination."""
    op = str(what.get("event.name", "")).rpartition(".")[2]
    why = what.get("reason", "") + (f" {what['rule']}" if what.get("rule") else "")
    times = f" {TIMES}{what['repeat.count']}" if what.get("repeat.count") else ""
    return f"{what.get('action', '')} {op} {_destination(what)}{times}: {why}"


def dns_body(rec: DnsRecord) -> str:
    """`dns www.example.com A -> 198.18.1.1, 198.18.1.2: admitted` — short, for people."""
    answers = ", ".join(rec.answers or ()) or rec.rcode or rec.parse_error or "-"
    return f"dns {rec.qname or '?'} {rec.qtype or '?'} -> {answers}: {rec.verdict}"


def gap_body(gap: Gap) -> str:
    sink = f" in sink {gap.gap_sink}" if gap.gap_sink else ""
    where = f" from cgroup {gap.cgroup_id}" if gap.cgroup_id else ""
    return f"lost {gap.gap_count} records{where}: {gap.gap_kind}{sink}"


def control_body(c: Control) -> str:
    """`bypass container web-1 by uid 0 pid 4242: done` — short, for people."""
    who = f"uid {c.uid} pid {c.pid}" if c.by == "peer" else f"agent ({c.trigger})"
    why = f" ({c.error})" if c.error else ""
    return f"{c.command} {c.target} by {who}: {c.result}{why}"


def _header(severity: tuple[int, str], body: str, event_name: str) -> bytes:
    number, text = severity
    return (
        b"\x10"
        + varint(number)
        + _field(0x1A, text.encode())
        + _field(0x2A, _field(0x0A, body.encode()))
        + _field(0x62, event_name.encode())
    )


class _Clock:
    """RFC 3339 `ts` -> Unix ns; the seconds part is parsed once per second seen.

    `seconds` maps `YYYY-MM-DDTHH:MM:SS.` (the decoder's format, 30 characters with 9
    fraction digits and `Z`) to ns, so the encoder's loop can do the common case inline.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, int] = {}

    def __call__(self, ts: str) -> int:
        if len(ts) == 30 and ts[19] == "." and ts[29] == "Z" and ts[20:29].isdigit():
            sec = self.seconds.get(ts[:20])
            if sec is None:
                if len(self.seconds) >= 1024:
                    self.seconds.clear()
                parsed = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
                sec = self.seconds[ts[:20]] = parsed * 1_000_000_000
            return sec + int(ts[20:29])
        try:
            moment = dt.datetime.fromisoformat(ts)
        except ValueError:
            return 0  # unknown: OTLP says 0 means "not set"; the `ts` attribute still says it
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _group(names: Iterable[str]) -> tuple[Callable[[Any], tuple[Any, ...]], tuple[Any, ...]]:
    """A getter for several Record fields and, per field, (encoded key, default)."""
    by_attr = {f.name: f for f in msgspec.structs.fields(Record)}
    names = tuple(names)
    specs = tuple((by_attr[n].encode_name, by_attr[n].default) for n in names)
    getter = attrgetter(*names)
    return (getter if len(names) > 1 else lambda r: (getter(r),)), specs


class _Memo(dict[tuple[Any, ...], bytes]):
    """Encoded bytes by value tuple; forgets everything when it grows too big."""

    def __init__(self, build: Callable[[tuple[Any, ...]], bytes]) -> None:
        super().__init__()
        self.build = build

    def __missing__(self, key: tuple[Any, ...]) -> bytes:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        value = self[key] = self.build(key)
        return value


class LogEncoder:
    """Encodes Items as framed LogRecords; keeps bounded caches of repeated attribute bytes."""

    def __init__(self, host_name: str) -> None:
        self.host_name = host_name
        every = [f.name for f in msgspec.structs.fields(Record)]
        self._what, self._what_specs = _group(_WHAT)
        per_record = {*_WHAT, *_UNIQUE, *_REPEAT, *(name for name, _ in _DNS_EVIDENCE)}
        self._who, self._who_specs = _group(n for n in every if n not in per_record)
        self._what_memo = _Memo(self._build_what)
        self._who_memo = _Memo(self._build_who)
        self._clock = _Clock()
        self.fallbacks = 0  # items the fast path handed to `_generic` (tests watch this)

    def encode(self, items: Sequence[Item], observed_ns: int) -> bytes:
        """Framed `ScopeLogs.log_records` entries, in order; observed time is one per batch.

        The loop is written flat, with everything bound to locals and no helper calls on the
        common path: here a Python call costs as much as the work inside such a helper.
        Anything unusual (a gap, an unhashable or oddly formatted value) takes `_generic`.
        """
        if isinstance(items, Decisions):
            return self._decisions(items, observed_ns)
        observed = b"\x59" + _FIXED64(observed_ns)
        host, seconds, fixed64, small = self.host_name, self._clock.seconds, _FIXED64, _SMALL
        what_of, who_of = self._what, self._who
        what_memo, who_memo = self._what_memo, self._who_memo
        ts_pre, rid_pre, bpf_pre, seq_pre, cookie_pre = _TS, _RECORD_ID, _BPF_TS, _SEQ, _COOKIE
        out: list[bytes] = []
        for item in items:
            try:
                if type(item) is not Record or len(item.ts) != 30 or item.repeat_count:
                    raise TypeError("not a lone decision the decoder made")
                ts, seq, bpf_ts = item.ts, item.seq, item.bpf_ts_ns
                ts_raw = ts.encode()
                rid = f"{item.host_name or host}:{item.cgroup_id}:{seq}:{bpf_ts}".encode()
                bpf_raw, seq_raw, cookie_raw = varint(bpf_ts), varint(seq), varint(item.sock_cookie)
                evidence = b""
                if item.dns_qname is not None:
                    evidence = b"".join(
                        key_value(key, value)
                        for name, key in _DNS_EVIDENCE
                        if (value := getattr(item, name)) is not None
                    )
                body = b"".join(
                    (
                        b"\x09",
                        fixed64(seconds[ts[:20]] + int(ts[20:29])),  # KeyError: a new second
                        what_memo[what_of(item)],
                        who_memo[who_of(item)],
                        ts_pre[len(ts_raw)],
                        ts_raw,
                        bpf_pre[len(bpf_raw)],
                        bpf_raw,
                        seq_pre[len(seq_raw)],
                        seq_raw,
                        cookie_pre[len(cookie_raw)],
                        cookie_raw,
                        rid_pre[len(rid)],
                        rid,
                        evidence,
                        observed,
                    )
                )
            except (KeyError, TypeError, ValueError, struct.error):
                self.fallbacks += 1
                body = self._generic(item, observed)
            size = len(body)
            out += (b"\x12", small[size] if size < 16384 else varint(size), body)
        return b"".join(out)

    def _decisions(self, items: Decisions, observed_ns: int) -> bytes:
        """A Decisions batch: what a group's records share is encoded once per group;
        a record of its own (DNS-labelled, folded) goes through `encode`."""
        observed = b"\x59" + _FIXED64(observed_ns)
        host, offset, fixed64, small = self.host_name, items.offset_ns, _FIXED64, _SMALL
        rid_pre, bpf_pre, seq_pre, cookie_pre = _RECORD_ID, _BPF_TS, _SEQ, _COOKIE
        ts_pre, low = _TS[len("YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ")], _LOW
        shared: dict[int, tuple[bytes, str]] = {}
        second_ns, second, top_of, top = -1, "", -1, b""
        out: list[bytes] = []
        for ref, row in items.rows():
            if type(ref) is not Group or row[REPEATS] > 1:
                rec = ref if isinstance(ref, Record) else items.build(ref.template, row)
                out.append(self.encode([rec], observed_ns))
                continue
            group = shared.get(id(ref))
            if group is None:
                t = ref.template
                group = shared[id(ref)] = (
                    self._what_memo[self._what(t)] + self._who_memo[self._who(t)],
                    f"{t.host_name or host}:{t.cgroup_id}:",
                )
            attributes, rid_head = group
            ts_ns, seq, cookie = row[:3]
            wall = ts_ns + offset
            if not 0 <= wall - second_ns < NS:
                second_ns = wall - wall % NS
                second = second_prefix(second_ns // NS) + "."
            ts_raw = f"{second}{str(wall - second_ns + NS)[1:]}Z".encode()
            rid = f"{rid_head}{seq}:{ts_ns}".encode()
            if ts_ns >> 28 != top_of:  # a kernel time's bits above 28 change every 268 ms
                top_of = ts_ns >> 28
                top = varint(top_of) if top_of else b""
            bpf_raw = (
                low[ts_ns & 0x3FFF] + low[(ts_ns >> 14) & 0x3FFF] + top if top else varint(ts_ns)
            )
            seq_raw = small[seq] if seq < 16384 else varint(seq)
            cookie_raw = small[cookie] if cookie < 16384 else varint(cookie)
            body = b"".join((
                b"\x09", fixed64(wall), attributes, ts_pre, ts_raw,
                bpf_pre[len(bpf_raw)], bpf_raw, seq_pre[len(seq_raw)], seq_raw,
                cookie_pre[len(cookie_raw)], cookie_raw, rid_pre[len(rid)], rid, observed,
            ))  # fmt: skip
            size = len(body)
            out += (b"\x12", small[size] if size < 16384 else varint(size), body)
        return b"".join(out)

    @staticmethod
    def _present(specs: tuple[Any, ...], values: tuple[Any, ...]) -> dict[str, Any]:
        # msgspec's omit_defaults: a value equal to its field's default is not encoded.
        return {k: v for (k, default), v in zip(specs, values, strict=True) if v != default}

    def _build_what(self, values: tuple[Any, ...]) -> bytes:
        what = self._present(self._what_specs, values)
        severity = SEVERITY.get(what.get("action", ""), _UNKNOWN_SEVERITY)
        head = _header(severity, decision_body(what), what["event.name"])
        return head + b"".join(key_value(k, v) for k, v in what.items())

    def _build_who(self, values: tuple[Any, ...]) -> bytes:
        present = self._present(self._who_specs, values)
        return b"".join(key_value(k, v) for k, v in present.items())

    def _generic(self, item: Item, observed: bytes) -> bytes:
        """Any item, attribute by attribute (gaps, and decisions the fast path declined)."""
        attrs = msgspec.to_builtins(item)
        attrs["record_id"] = record_id(item, self.host_name)
        if isinstance(item, Gap):
            head = _header(GAP_SEVERITY, gap_body(item), item.event_name)
        elif isinstance(item, DnsRecord):
            head = _header(SEVERITY["allowed"], dns_body(item), item.event_name)
        elif isinstance(item, Control):
            severity = CONTROL_SEVERITY.get(item.result, _UNKNOWN_SEVERITY)
            head = _header(severity, control_body(item), item.event_name)
        else:
            severity = SEVERITY.get(item.action, _UNKNOWN_SEVERITY)
            head = _header(severity, decision_body(attrs), item.event_name)
        return (
            b"\x09"
            + _FIXED64(self._clock(item.ts))
            + head
            + b"".join(key_value(k, v) for k, v in attrs.items())
            + observed
        )


def _pb_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def resource(attributes: Mapping[str, Any]) -> bytes:
    """A serialized Resource (built once per sink, so the protobuf classes do it)."""
    kvs = [KeyValue(key=k, value=_pb_value(v)) for k, v in attributes.items()]
    return Resource(attributes=kvs).SerializeToString()


def scope(name: str, version: str) -> bytes:
    return InstrumentationScope(name=name, version=version).SerializeToString()


def request(resource_bytes: bytes, scope_bytes: bytes, entries: bytes) -> bytes:
    """ExportLogsServiceRequest{resource_logs: [{resource, scope_logs: [{scope, entries}]}]}.

    The entries (a whole segment) are copied once: the framing around them is sized first.
    """
    scope = _field(0x0A, scope_bytes)
    resource_field = _field(0x0A, resource_bytes)
    scope_logs_head = b"\x12" + varint(len(scope) + len(entries))
    resource_logs_len = len(resource_field) + len(scope_logs_head) + len(scope) + len(entries)
    head = b"\x0a" + varint(resource_logs_len)
    return b"".join((head, resource_field, scope_logs_head, scope, entries))


def frames(data: bytes) -> tuple[int, int]:
    """(complete entries, bytes they span) at the start of `data`: a torn tail is left out."""
    count = pos = 0
    size = len(data)
    while pos < size:
        if data[pos] != 0x12:
            break
        length, shift, cursor = 0, 0, pos + 1
        while cursor < size and data[cursor] & 0x80:
            length |= (data[cursor] & 0x7F) << shift
            shift += 7
            cursor += 1
        if cursor >= size:
            break
        length |= data[cursor] << shift
        end = cursor + 1 + length
        if end > size:
            break
        count, pos = count + 1, end
    return count, pos


def spans_from_data(entries: bytes) -> Spans:
    """What a stored run of entries stands for, per cgroup (spool eviction after a restart).

    Rare, so it parses with the protobuf classes rather than keeping a second index on disk.
    """
    spans: Spans = {}
    for rec in ScopeLogs.FromString(entries).log_records:
        attrs = {kv.key: kv.value for kv in rec.attributes}
        cgroup = attrs["cgroup_id"].string_value if "cgroup_id" in attrs else None
        if rec.event_name == EVENT_NAMES["dns"]:
            cgroup = DNS_SPAN_PREFIX + (cgroup or "")
        if rec.event_name == EVENT_NAMES["gap"]:
            count = attrs["gap.count"].int_value
            first = attrs["gap.seq_first"].int_value if "gap.seq_first" in attrs else None
            last = attrs["gap.seq_last"].int_value if "gap.seq_last" in attrs else None
        else:  # a folded record stands for its repeats too
            last = attrs["seq"].int_value
            folded = "repeat.count" in attrs
            count = attrs["repeat.count"].int_value if folded else 1
            first = attrs["repeat.seq_first"].int_value if folded else last
        span = Span(count, first, last, attrs["ts"].string_value)
        if cgroup in spans:
            spans[cgroup].extend(span)
        else:
            spans[cgroup] = span
    return spans
