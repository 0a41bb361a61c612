"""DNS evidence on decision records: which name the workload resolved to this address.

The agent keeps, per enrolled cgroup, what that cgroup's own DNS answers said:
address -> every name that resolved to it, each with its answer time, TTL and
CNAME chain. A decision record of that cgroup whose destination is in the
cache gets `dst_host` (the name asked for, the most recent answer when several
names share the address) and the `dns.*` evidence. Names come only from
answers the workload itself received, never from a PTR lookup: a reverse
lookup names whoever controls the address's zone, not what the workload asked
for.

Shared CDN addresses keep every name (one-name-per-address maps mislabel
them). The cache is bounded per cgroup, so one workload's lookups cannot evict
another's; past its cap a cgroup loses its oldest answers first. An entry
lives for its TTL (floored: resolvers answer hosts-file names with TTL 0) plus
a grace period, because programs connect to addresses they resolved a while
ago. Times are CLOCK_BOOTTIME nanoseconds, as the kernel stamps records.

The cache is persisted in the agent's state directory (bounded, written
atomically), so after a restart records are not anonymous until the next
lookup. A file from another boot is ignored: its clock no longer applies.
The kernel's admitted-address sets cannot serve instead: they hold which
rule admitted an address, not the name a workload asked for, and nothing for
names outside the rules.

Not thread-safe: the pump calls `enrich`; whoever expires, snapshots or
forgets holds the pump's lock.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from netlogger.pipeline.decisions import Decisions
from netlogger.pipeline.record import DnsRecord, Record, RingItem

log = logging.getLogger("netlogger.dns")

CAP_PER_CGROUP = 4096  # (address, name) pairs one cgroup's cache holds
TTL_FLOOR_S = 30
GRACE_S = 300
PERSIST_MAX = 100_000  # entries written to the state file, newest first
STATE_FILE = "dns-cache.json"
_NS = 1_000_000_000
_MS = 1_000_000
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_MAPPED = b"\0" * 10 + b"\xff\xff"
# Answers whose names label connects: a policy resolver's answer to a query the
# workload made, or (bypass, audit) a resolver the policy does not name. Unsolicited
# answers may be spoofed, and what the kernel could not parse it did not bind to a query.
TRUSTED_VERDICTS = frozenset({"admitted", "not_matched", "foreign"})


@dataclass(slots=True)
class Entry:
    qname: str
    cname_chain: tuple[str, ...]
    answered_ns: int
    ttl: int
    expires_ns: int


@functools.lru_cache(maxsize=65536)
def address_key(address: str) -> str:
    """An answer's address in the form the decoder gives `dst_ip` (inet_ntop's)."""
    if ":" not in address:
        return socket.inet_ntoa(socket.inet_aton(address))
    packed = socket.inet_pton(socket.AF_INET6, address)
    if packed[:12] == _MAPPED:
        return socket.inet_ntoa(packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed)


class _Cgroup:
    """One cgroup's cache: (address, name) pairs in answer order, indexed by address."""

    def __init__(self) -> None:
        self.order: collections.OrderedDict[tuple[str, str], Entry] = collections.OrderedDict()
        self.by_ip: dict[str, dict[str, Entry]] = {}

    def put(self, ip: str, entry: Entry) -> None:
        key = (ip, entry.qname)
        self.order.pop(key, None)
        self.order[key] = entry
        names = self.by_ip.setdefault(ip, {})
        names.pop(entry.qname, None)
        names[entry.qname] = entry

    def drop(self, key: tuple[str, str]) -> None:
        del self.order[key]
        names = self.by_ip[key[0]]
        del names[key[1]]
        if not names:
            del self.by_ip[key[0]]


class _Persisted(msgspec.Struct, array_like=True):
    cgroup_id: str
    ip: str
    qname: str
    cname_chain: list[str]
    answered_ns: int
    ttl: int
    expires_ns: int


class _StateFile(msgspec.Struct):
    version: int
    boot_id: str
    entries: list[_Persisted]


def boot_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a reader, or the next agent, sees the old file or the new."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


class DnsEnricher:
    """Observes answers per cgroup; sets `dst_host` and `dns.*` on decision records."""

    def __init__(
        self,
        cap_per_cgroup: int = CAP_PER_CGROUP,
        floor_s: int = TTL_FLOOR_S,
        grace_s: int = GRACE_S,
    ) -> None:
        self.cap = cap_per_cgroup
        self.floor_s = floor_s
        self.grace_ns = grace_s * _NS
        self._cgroups: dict[str, _Cgroup] = {}
        self.counts: collections.Counter[str] = collections.Counter()  # evicted, expired, ...
        self.changed = False  # since the last save

    def enrich(self, items: Sequence[RingItem]) -> None:
        """In ring order: answers fill the cache, decision records read it.

        The pump hands over a batch's DNS records before its decisions, so an
        answer is in the cache before the connect that used it is labelled. In a
        Decisions batch only the groups whose destination this cgroup resolved are
        built record by record: a label ages with each record.
        """
        if isinstance(items, Decisions):
            items = items.materialise({g for g in items.groups if self._may_label(g.template)})
        for item in items:
            if type(item) is Record:
                self.label(item)
            elif type(item) is DnsRecord:
                self.observe(item)

    # -- answers in -------------------------------------------------------

    def observe(self, rec: DnsRecord) -> None:
        """Cache what an answer says, unless nothing vouches for it.

        An unsolicited answer (no outstanding query of this cgroup matched it)
        may be spoofed: it labels nothing.
        """
        if not rec.answers or rec.qname is None or rec.verdict not in TRUSTED_VERDICTS:
            return
        cache = self._cgroups.get(rec.cgroup_id)
        if cache is None:
            cache = self._cgroups[rec.cgroup_id] = _Cgroup()
        ttl, at, chain = rec.ttl or 0, rec.bpf_ts_ns, tuple(rec.cname_chain or ())
        expires = at + max(ttl, self.floor_s) * _NS + self.grace_ns
        for address in rec.answers:
            cache.put(address_key(address), Entry(rec.qname, chain, at, ttl, expires))
        while len(cache.order) > self.cap:
            cache.drop(next(iter(cache.order)))
            self.counts["evicted"] += 1
        self.changed = True

    # -- records out ------------------------------------------------------

    def _may_label(self, rec: Record) -> bool:
        cache = self._cgroups.get(rec.cgroup_id)
        return cache is not None and rec.dst_ip is not None and bool(cache.by_ip.get(rec.dst_ip))

    def label(self, rec: Record) -> None:
        cache = self._cgroups.get(rec.cgroup_id)
        if cache is None or rec.dst_ip is None:
            return
        names = cache.by_ip.get(rec.dst_ip)
        if not names:
            return
        at = rec.bpf_ts_ns
        live = [e for e in names.values() if e.answered_ns <= at <= e.expires_ns]
        if not live:
            return
        best = max(live, key=lambda e: e.answered_ns)
        age_ns = at - best.answered_ns
        rec.dst_host = rec.dns_qname = best.qname
        rec.dns_cname_chain = list(best.cname_chain) or None
        rec.dns_answer_age_ms = age_ns // _MS
        rec.dns_ttl_left_s = best.ttl - age_ns // _NS
        if len(live) > 1:
            rec.dns_names_sharing_ip = sorted(e.qname for e in live)

    def forget(self, cgroup_id: int) -> None:
        """Keeps the names: an enrollment change (labels, mode, policy; the container
        watcher re-enrolls every container at start) leaves what the cgroup resolved
        true. After an unenroll its entries simply expire; cgroup ids are not reused."""

    def expire(self, now_ns: int) -> int:
        """Drop entries past their TTL and grace; returns how many went."""
        gone = 0
        for cgroup_id, cache in list(self._cgroups.items()):
            for key in [k for k, e in cache.order.items() if e.expires_ns < now_ns]:
                cache.drop(key)
                gone += 1
            if not cache.order:
                del self._cgroups[cgroup_id]
        if gone:
            self.counts["expired"] += gone
            self.changed = True
        return gone

    def stats(self) -> dict[str, int]:
        return {
            "cgroups": len(self._cgroups),
            "entries": sum(len(c.order) for c in self._cgroups.values()),
            "evicted": self.counts["evicted"],
            "expired": self.counts["expired"],
            "restored": self.counts["restored"],
        }

    # -- across restarts --------------------------------------------------

    def snapshot(self) -> bytes:
        """The cache as the state file holds it (newest PERSIST_MAX entries)."""
        entries = [
            _Persisted(cg, ip, e.qname, list(e.cname_chain), e.answered_ns, e.ttl, e.expires_ns)
            for cg, cache in self._cgroups.items()
            for (ip, _), e in cache.order.items()
        ]
        entries.sort(key=lambda p: p.answered_ns)
        self.changed = False
        return msgspec.json.encode(_StateFile(1, _boot_id(), entries[-PERSIST_MAX:]))

    def load(self, path: Path, now_ns: int) -> int:
        """Restore what `path` holds that is still live; returns how many entries came back.

        A missing, unreadable or foreign file restores nothing and is not an error:
        the cache refills from the next answers.
        """
        try:
            state = msgspec.json.decode(path.read_bytes(), type=_StateFile)
        except FileNotFoundError:
            return 0
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("DNS cache %s not restored: %s", path, exc)
            return 0
        if state.version != 1 or state.boot_id != _boot_id():
            log.info("DNS cache %s is from another boot; not restored", path)
            return 0
        restored = 0
        for p in state.entries:
            if p.expires_ns < now_ns:
                continue
            try:
                ip = address_key(p.ip)
            except OSError:  # not an address: a file edited by hand
                continue
            cache = self._cgroups.setdefault(p.cgroup_id, _Cgroup())
            cache.put(ip, Entry(p.qname, tuple(p.cname_chain), p.answered_ns, p.ttl, p.expires_ns))
            restored += 1
        for cache in self._cgroups.values():
            while len(cache.order) > self.cap:
                cache.drop(next(iter(cache.order)))
        self.counts["restored"] += restored
        return restored
