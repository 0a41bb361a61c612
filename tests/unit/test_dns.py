"""DNS observation: ring records -> DnsRecords, answers -> the per-cgroup cache -> evidence."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import dns.message
import dns.rcode
import msgspec
import pytest

from netlogger.enrich.dns import STATE_FILE, DnsEnricher, write_atomically
from netlogger.kernel import abi
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.dnsdecode import FIXED_SIZE, Answer, DnsDecoder, parse_answer
from netlogger.pipeline.record import DnsRecord, Record
from tests.dnswire import dns_event, response
from tests.unit.test_decode import event

S = 1_000_000_000
CHAIN = (
    ("www.example.com.", 300, "CNAME", ["edge.cdn.example.net."]),
    ("edge.cdn.example.net.", 20, "CNAME", ["e1.cdn.example.net."]),
    ("e1.cdn.example.net.", 60, "A", ["198.18.1.1", "198.18.1.2"]),
)


def dns_decoder() -> Decoder:
    """The agent's decoder, with DNS records joined to its op table."""
    d = Decoder(lambda r: {5: "web"}.get(r), lambda p: {9: "default"}.get(p, "?"), "host-1")
    DnsDecoder(d)
    return d


def connect(ip: str, at_ns: int, cgroup_id: int = 42) -> Record:
    rec = Decoder(lambda r: None, lambda p: "default").decode(
        event(ts_ns=at_ns, cgroup_id=cgroup_id)
    )
    assert rec is not None
    rec.dst_ip = ip
    return rec


def answer(
    qname: str,
    *addresses: str,
    ttl: int = 60,
    chain: tuple[str, ...] = (),
    at: int = 0,
    cg: int = 42,
) -> DnsRecord:
    """The DnsRecord the decoder makes of a policy resolver's answer at `at` ns."""
    rrsets = [
        (n + ".", 300, "CNAME", [t + "."]) for n, t in zip((qname, *chain), chain, strict=False)
    ]
    owner = chain[-1] if chain else qname
    kind = "AAAA" if ":" in addresses[0] else "A"
    wire = response(qname, *rrsets, (owner + ".", ttl, kind, list(addresses)), qtype=kind)
    rec = dns_decoder().decode(dns_event(wire, ts_ns=at, cgroup_id=cg))
    assert rec is not None and rec.parse_error is None
    return rec


def label(cache: DnsEnricher, rec: Record) -> Record:
    cache.enrich([rec])
    return rec


def test_the_mirror_is_the_agreed_layout() -> None:
    assert ctypes.sizeof(abi.DnsEvent) == FIXED_SIZE == 80
    assert abi.DnsEvent.payload_len.offset == 70 and abi.DnsEvent.verdict.offset == 74


def test_answer_with_cname_chain_and_its_addresses() -> None:
    got = parse_answer(response("www.example.com", *CHAIN))
    assert isinstance(got, Answer)
    assert (got.qname, got.qtype, got.rcode, got.cname_chain, got.error) == (
        "www.example.com",
        "A",
        "NOERROR",
        ("edge.cdn.example.net", "e1.cdn.example.net"),
        None,
    )
    assert sorted(got.addresses) == [("198.18.1.1", 60), ("198.18.1.2", 60)]


def test_addresses_of_other_names_are_not_the_answer() -> None:
    wire = response(
        "a.example.com",
        ("a.example.com.", 30, "A", ["198.18.0.1"]),
        ("unrelated.example.org.", 30, "A", ["198.18.0.66"]),
    )
    got = parse_answer(wire)
    assert isinstance(got, Answer) and got.addresses == (("198.18.0.1", 30),)


def test_cname_loop_stops_and_says_so() -> None:
    wire = response(
        "a.example.com",
        ("a.example.com.", 30, "CNAME", ["b.example.com."]),
        ("b.example.com.", 30, "CNAME", ["a.example.com."]),
    )
    got = parse_answer(wire)
    assert got == Answer("a.example.com", "A", "NOERROR", ("b.example.com",), (), "cname_loop")


def test_aaaa_and_nxdomain() -> None:
    v6 = parse_answer(
        response("v6.example.com", ("v6.example.com.", 5, "AAAA", ["2001:db8::1"]), qtype="AAAA")
    )
    assert isinstance(v6, Answer) and (v6.qtype, v6.addresses) == ("AAAA", (("2001:db8::1", 5),))
    reply = dns.message.make_response(dns.message.make_query("no.example.com", "A"))
    reply.set_rcode(dns.rcode.NXDOMAIN)
    nx = parse_answer(reply.to_wire())
    assert nx == Answer("no.example.com", "A", "NXDOMAIN", (), ())


def test_a_cut_message_keeps_exactly_the_whole_records_it_holds() -> None:
    addresses = [f"198.18.2.{i}" for i in range(1, 41)]
    wire = response("many.example.com", ("many.example.com.", 60, "A", addresses))
    # Each A record is 16 bytes; cut in the middle of the 31st.
    question_end = 12 + len(b"\x04many\x07example\x03com\x00") + 4
    prefix = wire[: question_end + 30 * 16 + 7]
    got = parse_answer(prefix, cut=True)
    assert isinstance(got, Answer) and got.error == "cut"
    in_wire_order = dns.message.from_wire(wire, one_rr_per_rrset=True).answer
    assert sorted(a for a, _ in got.addresses) == sorted(rr[0].address for rr in in_wire_order[:30])
    assert parse_answer(prefix, cut=False) == "FormError"


def test_not_a_response_and_garbage_are_named() -> None:
    assert parse_answer(dns.message.make_query("q.example.com", "A").to_wire()) == "not_a_response"
    assert parse_answer(b"\x00" * 5) == "ShortHeader"


def test_ring_record_decodes_to_a_dns_record() -> None:
    wire = response("www.example.com", *CHAIN)
    raw = dns_event(wire, rule_id=5, admitted=2)
    rec = dns_decoder().decode(raw)
    as_dict = msgspec.to_builtins(rec)
    assert as_dict.pop("ts").endswith("Z")
    assert sorted(as_dict.pop("dns.answers")) == ["198.18.1.1", "198.18.1.2"]
    assert as_dict == {
        "event.name": "ebpf.egress.dns",
        "bpf_ts_ns": 5_000_000_000,
        "seq": 3,
        "action": "allowed",
        "cgroup_id": "42",
        "sock_cookie": 77,
        "policy": "default",
        "identity": "5",
        "rule": "web",
        "dns.verdict": "admitted",
        "dns.admitted": 2,
        "dns.server": "198.18.0.53",
        "dns.server_port": "53",
        "dns.transport": "udp",
        "dns.msg_len": len(wire),
        "host.name": "host-1",
        "container_id": "",
        "agent": "",
        "project": "",
        "dns.qname": "www.example.com",
        "dns.qtype": "A",
        "dns.rcode": "NOERROR",
        "dns.cname_chain": ["edge.cdn.example.net", "e1.cdn.example.net"],
        "dns.ttl": 60,
    }


def test_unreadable_message_still_yields_a_record_and_is_counted() -> None:
    d = Decoder(lambda r: None, lambda p: "default")
    dns = DnsDecoder(d)
    rec = d.decode(dns_event(b"\xff" * 40, verdict=abi.DnsVerdict.MALFORMED))
    assert isinstance(rec, DnsRecord)
    assert (rec.verdict, rec.parse_error, rec.qname) == ("malformed", "BadPointer", None)
    assert dns.unreadable == {"BadPointer": 1} and d.skipped == {}


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (dns_event(b"")[: FIXED_SIZE - 1], "dns_short"),
        (dns_event(b"abc", version=9), "dns_version"),
        (dns_event(b"abc", size=FIXED_SIZE + 4), "dns_size"),
        (dns_event(b"abc", payload_len=2), "dns_size"),
    ],
)
def test_bad_ring_records_are_skipped_by_kind(raw: bytes, kind: str) -> None:
    d = dns_decoder()
    assert d.decode_all([raw]) == []
    assert d.skipped == {kind: 1}


def test_unknown_verdict_and_ipv6_server() -> None:
    e = dns_event(response("x.example.com"), verdict=77, family=10)
    server = bytes.fromhex("20010db8000000000000000000000053")
    e = e[: abi.DnsEvent.server.offset] + server + e[abi.DnsEvent.server.offset + 16 :]
    d = dns_decoder()
    rec = d.decode(e)
    assert rec is not None
    assert (rec.verdict, rec.server) == ("unknown(77)", "2001:db8::53")
    assert d.unknown == {"dns_verdict": 1}


# -- the cache -------------------------------------------------------------


def test_connect_gets_the_name_and_exact_evidence() -> None:
    cache = DnsEnricher()
    chain = ("edge.cdn.example.net", "e1.cdn.example.net")
    cache.enrich([answer("www.example.com", "198.18.1.1", ttl=60, chain=chain, at=10 * S)])
    rec = label(cache, connect("198.18.1.1", 10 * S + 2_500_000_000))
    assert msgspec.to_builtins(rec)["dst_host"] == "www.example.com"
    assert (rec.dns_qname, rec.dns_cname_chain) == ("www.example.com", list(chain))
    assert (rec.dns_answer_age_ms, rec.dns_ttl_left_s) == (2500, 58)
    assert rec.dns_names_sharing_ip is None


def test_shared_address_keeps_every_name_and_labels_with_the_latest() -> None:
    cache = DnsEnricher()
    cache.enrich([answer("a.example.com", "198.18.1.9", at=10 * S)])
    cache.enrich([answer("b.example.org", "198.18.1.9", "198.18.1.10", at=11 * S)])
    rec = label(cache, connect("198.18.1.9", 12 * S))
    assert rec.dst_host == "b.example.org"
    assert rec.dns_names_sharing_ip == ["a.example.com", "b.example.org"]
    # A connect between the two answers knew only the first name.
    early = label(cache, connect("198.18.1.9", 10 * S + 5))
    assert (early.dst_host, early.dns_names_sharing_ip) == ("a.example.com", None)


def test_names_are_per_cgroup() -> None:
    cache = DnsEnricher()
    cache.enrich([answer("a.example.com", "198.18.1.1", at=10 * S)])
    assert label(cache, connect("198.18.1.1", 11 * S, cgroup_id=43)).dst_host is None
    assert label(cache, connect("198.18.1.2", 11 * S)).dst_host is None


def test_ttl_floor_and_grace_then_expiry() -> None:
    cache = DnsEnricher(floor_s=30, grace_s=10)
    cache.enrich([answer("zero.example.com", "198.18.1.1", ttl=0, at=10 * S)])
    last = 10 * S + 40 * S
    rec = label(cache, connect("198.18.1.1", last))
    assert (rec.dst_host, rec.dns_ttl_left_s) == ("zero.example.com", -40)
    assert label(cache, connect("198.18.1.1", last + 1)).dst_host is None
    assert cache.expire(last) == 0
    assert cache.expire(last + 1) == 1
    assert cache.stats()["entries"] == 0 and cache.stats()["cgroups"] == 0


def test_cap_evicts_the_oldest_answers_of_that_cgroup_only() -> None:
    cache = DnsEnricher(cap_per_cgroup=3)
    cache.enrich([answer("other.example.com", "198.18.9.9", at=1 * S, cg=7)])
    for i in range(5):
        cache.enrich([answer(f"n{i}.example.com", f"198.18.1.{i}", at=(10 + i) * S)])
    hosts = [label(cache, connect(f"198.18.1.{i}", 20 * S)).dst_host for i in range(5)]
    assert hosts == [None, None, "n2.example.com", "n3.example.com", "n4.example.com"]
    assert label(cache, connect("198.18.9.9", 20 * S, cgroup_id=7)).dst_host == "other.example.com"
    assert cache.stats()["evicted"] == 2


def test_a_repeated_answer_refreshes_instead_of_duplicating() -> None:
    cache = DnsEnricher(cap_per_cgroup=2)
    cache.enrich([answer("a.example.com", "198.18.1.1", at=1 * S)])
    cache.enrich([answer("b.example.com", "198.18.1.2", at=2 * S)])
    cache.enrich([answer("a.example.com", "198.18.1.1", at=3 * S)])  # a is the newest now
    cache.enrich([answer("c.example.com", "198.18.1.3", at=4 * S)])  # evicts b
    assert label(cache, connect("198.18.1.1", 5 * S)).dns_answer_age_ms == 2000
    assert label(cache, connect("198.18.1.2", 5 * S)).dst_host is None


def test_ipv6_and_mapped_addresses_match_the_decoders_form() -> None:
    cache = DnsEnricher()
    cache.enrich([answer("v6.example.com", "2001:DB8:0:0:0:0:0:1", at=1 * S)])
    cache.enrich([answer("m.example.com", "::ffff:198.18.3.3", at=1 * S)])
    assert label(cache, connect("2001:db8::1", 2 * S)).dst_host == "v6.example.com"
    assert label(cache, connect("198.18.3.3", 2 * S)).dst_host == "m.example.com"


def test_an_enrollment_change_keeps_the_names() -> None:
    cache = DnsEnricher()
    cache.enrich([answer("a.example.com", "198.18.1.1", at=1 * S)])
    cache.forget(42)
    assert label(cache, connect("198.18.1.1", 2 * S)).dst_host == "a.example.com"


def test_records_without_destination_pass_untouched() -> None:
    cache = DnsEnricher()
    cache.enrich([answer("a.example.com", "198.18.1.1", at=1 * S)])
    rec = connect("198.18.1.1", 2 * S)
    rec.dst_ip = None
    assert label(cache, rec).dst_host is None


# -- across restarts ---------------------------------------------------------


def test_saved_cache_restores_what_is_still_live(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    old = DnsEnricher(floor_s=0, grace_s=0)
    old.enrich([answer("short.example.com", "198.18.1.1", ttl=1, at=1 * S)])
    old.enrich([answer("long.example.com", "198.18.1.2", ttl=600, chain=("c.net",), at=1 * S)])
    write_atomically(path, old.snapshot())
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]  # no temporary left behind
    new = DnsEnricher()
    assert new.load(path, now_ns=5 * S) == 1
    rec = label(new, connect("198.18.1.2", 6 * S))
    assert (rec.dst_host, rec.dns_cname_chain, rec.dns_answer_age_ms) == (
        "long.example.com",
        ["c.net"],
        5000,
    )
    assert label(new, connect("198.18.1.1", 6 * S)).dst_host is None
    assert new.stats()["restored"] == 1


def test_a_file_from_another_boot_or_corrupt_restores_nothing(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    old = DnsEnricher()
    old.enrich([answer("a.example.com", "198.18.1.1", at=1 * S)])
    write_atomically(path, old.snapshot())
    data = json.loads(path.read_text())
    data["boot_id"] = "another-boot"
    path.write_text(json.dumps(data))
    assert DnsEnricher().load(path, 2 * S) == 0
    path.write_bytes(b'{"version": 1, "boot_')
    assert DnsEnricher().load(path, 2 * S) == 0
    assert DnsEnricher().load(tmp_path / "absent.json", 2 * S) == 0


def test_a_repeated_answer_is_parsed_once_and_decodes_the_same() -> None:
    d = Decoder(lambda r: None, lambda p: "default")
    dns_decoder_ = DnsDecoder(d)
    wire = response("www.example.com", *CHAIN)
    again = b"\x12\x34" + wire[2:]  # another query's id
    first, second = d.decode(dns_event(wire)), d.decode(dns_event(again, seq=4))
    assert isinstance(first, DnsRecord) and isinstance(second, DnsRecord)
    assert (first.qname, first.answers, first.cname_chain) == (
        second.qname,
        second.answers,
        second.cname_chain,
    )
    assert len(dns_decoder_._parsed) == 1
    other = d.decode(dns_event(response("x.example.com", ("x.example.com.", 5, "A", ["1.2.3.4"]))))
    assert isinstance(other, DnsRecord) and other.answers == ["1.2.3.4"]
