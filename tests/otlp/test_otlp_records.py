"""What reaches a real mTLS OTLP receiver: attribute keys, types and values, record fields."""

from __future__ import annotations

import calendar
import time
from typing import Any

import msgspec
import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from netlogger.pipeline.record import EVENT_NAMES, Item, Record
from netlogger.sinks.otlp import encode
from tests.otlp.conftest import MakeSink
from tests.otlp.receiver import Receiver, attributes, value
from tests.otlp.records import HOST, control, every_kind


def typed(attrs: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    # True == 1 in Python: compare the type too, so a bool sent as an int fails.
    return {k: (type(v), v) for k, v in attrs.items()}


def expected_attributes(item: Item) -> dict[str, Any]:
    """The record contract: exactly the keys and types `tail --json` prints, plus record_id."""
    return {**msgspec.to_builtins(item), "record_id": encode.record_id(item, HOST)}


def unix_ns(ts: str) -> int:
    seconds = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1_000_000_000 + int(ts[20:29])


def delivered(receiver: Receiver, sink: Any, items: list[Any]) -> list[Any]:
    """Export `items`, wait for all of them, check each arrived with exactly its attributes."""
    sink.export(items)
    sink.force_flush(20)
    assert receiver.wait_for(len(items))
    got = receiver.records()
    for item, rec in zip(items, got, strict=True):
        assert typed(attributes(rec)) == typed(expected_attributes(item))
    return got


def test_every_kind_of_record_arrives_with_exact_attributes(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    items = every_kind()
    sink = make_sink(receiver.port)
    before = time.time_ns()
    sink.export(items)
    after = time.time_ns()
    sink.force_flush(20)
    assert receiver.wait_for(len(items))

    got = receiver.records()
    assert len(got) == len(items)
    for item, rec in zip(items, got, strict=True):
        assert typed(attributes(rec)) == typed(expected_attributes(item))
        assert rec.event_name == item.event_name
        assert rec.time_unix_nano == unix_ns(item.ts)  # the kernel's time, not ours
        assert before <= rec.observed_time_unix_nano <= after  # when the sink got it

    connect, sendmsg, sock_create, mapped, throttled, ringbuf = got
    assert [r.severity_text for r in got] == ["INFO", "WARN", "WARN", "WARN", "WARN", "WARN"]
    assert [r.severity_number for r in got] == [9, 13, 13, 13, 13, 13]
    assert value(connect.body) == "allowed connect 10.1.2.3:443 (api.github.com): rule github"
    assert value(sendmsg.body) == "denied sendmsg [2001:db8::53]:53: resolver_not_allowed"
    assert value(sock_create.body) == "bypassed sock_create raw socket: raw_socket"
    assert value(mapped.body) == "denied connect 192.0.2.9:8080: default_deny"
    assert value(throttled.body) == "lost 12 records from cgroup 4242: throttled"
    assert value(ringbuf.body) == "lost 3 records: ringbuf_full"

    # The reference index's types: decimal strings; unknown destinations absent, not empty.
    attrs = attributes(connect)
    assert (attrs["cgroup_id"], attrs["dst_port"], attrs["identity"]) == ("4242", "443", "7")
    assert attrs["record_id"] == f"{HOST}:4242:0:90000000000000"
    for absent in ("dst_ip", "dst_port", "dst_host", "rule"):
        assert absent not in attributes(sock_create)
    # Attribution keys are always there: empty, with `attribution` saying why.
    assert attributes(sock_create)["container_id"] == ""
    assert attributes(sock_create)["attribution"] == "not_a_container"
    assert attributes(throttled)["record_id"] == f"{HOST}:4242:gap:throttled:-:4-15:{items[4].ts}"
    assert attributes(ringbuf)["record_id"] == f"{HOST}:-:gap:ringbuf_full:-:-:{items[5].ts}"
    assert EVENT_NAMES["gap"] == throttled.event_name == ringbuf.event_name


def test_resource_and_scope_say_who_sent_it(receiver: Receiver, make_sink: MakeSink) -> None:
    sink = make_sink(receiver.port)
    sink.export(every_kind()[:1])
    sink.force_flush(20)
    assert receiver.wait_for(1)
    resource_logs = next(r for req in receiver.requests for r in req.resource_logs)
    resource = {kv.key: value(kv.value) for kv in resource_logs.resource.attributes}
    assert resource["service.name"] == "ebpf-egress"  # the collector's route to the index
    assert resource["host.name"] == HOST
    assert isinstance(resource["service.version"], str) and resource["service.version"]
    assert resource["telemetry.sdk.name"] == "opentelemetry"
    scope = resource_logs.scope_logs[0].scope
    assert scope.name == "netlogger"
    assert scope.version == resource["service.version"]


def test_environment_cannot_reroute_service_name(
    receiver: Receiver, make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=forged,deployment.env=lab")
    sink = make_sink(receiver.port)
    sink.export(every_kind()[:1])
    sink.force_flush(20)
    assert receiver.wait_for(1)
    resource = receiver.requests[-1].resource_logs[0].resource
    attrs = {kv.key: value(kv.value) for kv in resource.attributes}
    assert attrs["service.name"] == "ebpf-egress"
    assert attrs["deployment.env"] == "lab"


@pytest.mark.parametrize(
    "number",
    [0, 1, 127, 128, 16383, 16384, 2**21, 2**28 - 1, 2**28, 2**42 - 1, 2**42, 2**56 - 1, 2**56,
     2**63 - 1, -1, -(2**63), 90_000_000_000_000],
)  # fmt: skip
def test_ints_encode_as_protobuf_does(number: int) -> None:
    assert encode.any_value(number) == AnyValue(int_value=number).SerializeToString()


@pytest.mark.parametrize("text", ["", "a", "é∂", "x" * 200, "y" * 20000])
def test_strings_encode_as_protobuf_does(text: str) -> None:
    assert encode.any_value(text) == AnyValue(string_value=text).SerializeToString()


def test_bools_and_lists_encode_as_protobuf_does() -> None:
    assert encode.any_value(True) == AnyValue(bool_value=True).SerializeToString()
    assert encode.any_value(False) == AnyValue(bool_value=False).SerializeToString()
    listed = AnyValue()
    listed.array_value.values.add(string_value="a")
    listed.array_value.values.add(int_value=5)
    assert encode.any_value(["a", 5]) == listed.SerializeToString()


def test_cached_attribute_bytes_follow_each_record() -> None:
    # Records that share most values but differ in one must not share cached bytes.
    from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs

    from tests.otlp.records import decision

    items: list[Record] = [
        decision(0),
        decision(1, dst_port="80"),
        decision(2, pid=9, comm="curl"),
        decision(3, action="denied", reason="default_deny", rule=None),
        decision(4),
    ]
    parsed = ScopeLogs.FromString(encode.LogEncoder(HOST).encode(items, 1)).log_records
    for item, rec in zip(items, parsed, strict=True):
        assert typed(attributes(rec)) == typed(expected_attributes(item))
    assert [r.severity_text for r in parsed] == ["INFO", "INFO", "INFO", "WARN", "INFO"]


def test_ordinary_decisions_take_the_fast_path() -> None:
    # Only the first record of each wall-clock second parses its timestamp the slow way.
    from tests.otlp.records import decision

    encoder = encode.LogEncoder(HOST)
    encoder.encode([decision(seq) for seq in range(100)], 1)
    assert encoder.fallbacks == 1
    encoder.encode([decision(seq, dst_ip=f"10.9.0.{seq}") for seq in range(100, 200)], 1)
    assert encoder.fallbacks == 1


@pytest.mark.parametrize("number", [0, 127, 128, 16384, 2**35, 2**62, 2**63 - 1])
def test_per_record_ints_survive_every_varint_length(number: int) -> None:
    from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs

    from tests.otlp.records import decision

    item = decision(number, bpf_ts_ns=number, sock_cookie=number)
    (rec,) = ScopeLogs.FromString(encode.LogEncoder(HOST).encode([item], 1)).log_records
    assert typed(attributes(rec)) == typed(expected_attributes(item))


def test_control_records_arrive_with_exact_attributes(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    refused = control(
        command="enroll",
        result="refused",
        error="UsageError: no policy named 'nope' (known: default)",
        by="peer",
        mode_after="enforce",
        mode_before="enforce",
        bypass_s=None,
        bypass_until=None,
    )
    automatic = control(
        command="unenroll", by="agent", uid=None, pid=None, trigger="container_stop",
        mode_after=None, policy_after=None, bypass_s=None, bypass_until=None,
    )  # fmt: skip
    items = [control(), refused, automatic]
    got = delivered(receiver, make_sink(receiver.port), items)
    for item, rec in zip(items, got, strict=True):
        assert rec.event_name == "ebpf.egress.control"
        assert rec.time_unix_nano == unix_ns(item.ts)
    assert attributes(got[0])["record_id"] == (
        f"{HOST}:4242:control:bypass:2026-01-01T00:00:00.500000000Z"
    )
    assert [(r.severity_number, r.severity_text) for r in got] == [
        (9, "INFO"),
        (13, "WARN"),
        (9, "INFO"),
    ]
    assert [value(r.body) for r in got] == [
        "bypass container web-1 by uid 0 pid 42: done",
        "enroll container web-1 by uid 0 pid 42: refused "
        "(UsageError: no policy named 'nope' (known: default))",
        "unenroll container web-1 by agent (container_stop): done",
    ]


def test_a_folded_record_carries_its_repeats_and_says_so_in_its_body() -> None:
    from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs

    from netlogger.pipeline.record import TIMES
    from tests.otlp.records import decision

    folded = decision(
        9, repeat_count=5, repeat_first_ns=100, repeat_last_ns=900, repeat_seq_first=3
    )
    items = [decision(1), folded, decision(10)]
    parsed = ScopeLogs.FromString(encode.LogEncoder(HOST).encode(items, 1)).log_records
    for item, rec in zip(items, parsed, strict=True):
        assert typed(attributes(rec)) == typed(expected_attributes(item))
    assert {k: v for k, v in attributes(parsed[1]).items() if k.startswith("repeat.")} == {
        "repeat.count": 5,
        "repeat.first_ns": 100,
        "repeat.last_ns": 900,
        "repeat.seq_first": 3,
    }
    assert f"{TIMES}5" in parsed[1].body.string_value
    assert TIMES not in parsed[2].body.string_value and "repeat.count" not in attributes(parsed[2])
