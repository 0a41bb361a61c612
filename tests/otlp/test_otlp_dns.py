"""DNS evidence and DNS answers through a real mTLS OTLP receiver: list-valued and negative
attributes keep their types; `ebpf.egress.dns` records arrive with exact attributes."""

from __future__ import annotations

from netlogger.pipeline.record import EVENT_NAMES, DnsRecord
from netlogger.sinks.otlp import encode
from tests.otlp.conftest import MakeSink
from tests.otlp.receiver import Receiver, attributes, value
from tests.otlp.records import BOOT_WALL_NS, HOST, _ts, decision
from tests.otlp.test_otlp_records import delivered


def labelled(seq: int, **fields: object) -> object:
    return decision(
        seq,
        dst_host="www.example.com",
        dns_qname="www.example.com",
        dns_cname_chain=["edge.cdn.example.net", "e1.cdn.example.net"],
        dns_answer_age_ms=2500 + seq,
        dns_ttl_left_s=-3,
        dns_names_sharing_ip=["a.example.org", "www.example.com"],
        **fields,
    )


def answer() -> DnsRecord:
    return DnsRecord(
        event_name=EVENT_NAMES["dns"],
        ts=_ts(BOOT_WALL_NS + 90_000_000_000_500),
        bpf_ts_ns=90_000_000_000_500,
        seq=4,
        action="allowed",
        cgroup_id="4242",
        sock_cookie=77_001,
        policy="default",
        identity="9",
        verdict="admitted",
        admitted=2,
        server="198.18.0.53",
        server_port="53",
        transport="udp",
        msg_len=94,
        host_name=HOST,
        container_id="c0ffee",
        agent="agent-1",
        project="proj-1",
        rule="default.allow[2]",
        qname="www.example.com",
        qtype="A",
        rcode="NOERROR",
        answers=["198.18.1.1", "198.18.1.2"],
        cname_chain=["edge.cdn.example.net"],
        ttl=60,
    )


def test_evidence_and_answers_arrive_exactly(receiver: Receiver, make_sink: MakeSink) -> None:
    items = [labelled(1), labelled(2, udp_connect=True, action="denied"), answer()]
    first, probe, dns = delivered(receiver, make_sink(receiver.port), items)
    assert attributes(first)["dns.cname_chain"] == ["edge.cdn.example.net", "e1.cdn.example.net"]
    assert attributes(first)["dns.ttl_left_s"] == -3
    assert attributes(probe)["udp_connect"] is True
    assert attributes(dns)["record_id"] == f"{HOST}:4242:dns:4:90000000000500"
    assert (dns.event_name, dns.severity_text) == ("ebpf.egress.dns", "INFO")
    assert value(dns.body) == "dns www.example.com A -> 198.18.1.1, 198.18.1.2: admitted"


def test_evidence_takes_the_fast_path() -> None:
    # As for plain decisions: only the first record of a wall-clock second goes the slow way.
    encoder = encode.LogEncoder(HOST)
    encoder.encode([labelled(i) for i in range(50)], 1)
    assert encoder.fallbacks == 1
