"""`tail.serve` over a real JSONL history and a real fan-out: one filter for both."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from netlogger import tail
from netlogger.errors import UsageError
from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.record import Control, Item
from netlogger.sinks.jsonl import JsonlSink
from tests.otlp.records import control, decision

ITEMS: list[Item] = [
    decision(0),  # allowed 10.1.2.3:443, policy default, container c0ffee
    decision(1, action="denied", reason="default_deny", dst_port="22", rule=None),
    decision(
        2, mode="audit", reason="audit_would_deny", would_deny=True, dst_ip="192.0.2.7", rule=None
    ),
    decision(3, dst_ip="2001:db8::5", ipv6=True, policy="strict", container_id="beef00"),
    decision(4, container_id="c0ffee", container_name="web-1", dst_port="8080"),
    control(),
]

CASES = [
    ({}, [0, 1, 2, 3, 4, 5]),
    ({"action": ["denied"]}, [1]),
    ({"would_deny": True}, [2]),
    ({"dst_ip": ["10.0.0.0/8"]}, [0, 1, 4]),
    ({"dst_ip": ["2001:db8::/32"]}, [3]),
    ({"dst_ip": ["192.0.2.7"]}, [2]),
    ({"port": [22]}, [1]),
    ({"port": [443], "dst_ip": ["10.0.0.0/8"]}, [0]),
    ({"reason": ["default_deny", "audit_would_deny"]}, [1, 2]),
    ({"policy": ["strict"]}, [3]),
    ({"policy": ["default"], "action": ["allowed"]}, [0, 2, 4]),  # audit allows
    ({"policy": ["default"]}, [0, 1, 2, 4, 5]),  # the control record's policy before/after
    ({"container": ["c0f"]}, [0, 1, 2, 4, 5]),  # id prefix
    ({"container": ["web-1"]}, [4, 5]),  # name, on records that carry it
]


def serve(fanout: Fanout, request: dict[str, Any], live: list[Item] = ()) -> list[bytes]:
    out: list[bytes] = []
    done = threading.Event()

    def run() -> None:
        try:
            tail.serve({"op": "tail", **request}, fanout, out.append, done.is_set)
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    if request.get("follow", True):
        while fanout.subscribers() < 1:
            time.sleep(0.01)
        fanout.publish([i for i in live if not isinstance(i, Control)])
        fanout.publish_controls([i for i in live if isinstance(i, Control)])
        time.sleep(tail.POLL_SECONDS * 2)
        done.set()
    thread.join(10)
    return out


@pytest.fixture
def history(tmp_path: Path) -> Fanout:
    sink = JsonlSink(tmp_path / "egress.jsonl", 1 << 20, 2)
    sink.export(ITEMS)
    fanout = Fanout([sink], 100, lambda: "now")
    yield fanout
    fanout.close()
    sink.shutdown()


def seqs(writes: list[bytes]) -> list[int]:
    """The seq of each item written (5: the control record); the end mark is not an item."""
    lines = b"".join(writes).splitlines()
    return [msgspec.json.decode(line).get("seq", 5) for line in lines if b'"end"' not in line]


@pytest.mark.parametrize("request_,expected", CASES)
def test_one_filter_for_history_and_live(history: Fanout, request_, expected) -> None:
    past = serve(history, {**request_, "follow": False})
    assert past[-1] == tail.END
    assert seqs(past) == expected
    names = {"c0ffee": "web-1"} if request_.get("container") == ["web-1"] else {}
    accept = tail.Filter.from_request(request_, names)
    assert [i for i, item in enumerate(ITEMS) if accept(item)] == (
        [0, 1, 2, 4, 5] if names else expected  # the agent knows the name: ids match too
    )


def test_live_items_pass_the_same_filter(tmp_path: Path) -> None:
    fanout = Fanout([], 100, lambda: "now")
    try:
        for request_, expected in CASES:
            if request_.get("container") == ["web-1"]:
                continue  # names: see test_one_filter_for_history_and_live
            assert sorted(seqs(serve(fanout, request_, ITEMS))) == expected, request_
    finally:
        fanout.close()


def test_last_n_and_no_follow(history: Fanout) -> None:
    assert seqs(serve(history, {"last": 2, "follow": False})) == [4, 5]
    assert seqs(serve(history, {"last": 2, "follow": False, "action": ["allowed"]})) == [3, 4]


@pytest.mark.parametrize(
    "request_,message",
    [
        ({"dst_ip": ["10.0.0/33"]}, "--dst-ip '10.0.0/33' is not an address or CIDR"),
        ({"port": [0]}, "--port 0 is not a port number (1-65535)"),
        ({"last": 0}, "--last 0 is not a positive number of records"),
        ({"action": ["would_deny"]}, "unknown action 'would_deny'; use one of: allowed, denied"),
    ],
)
def test_bad_filters_are_usage_errors(history: Fanout, request_, message) -> None:
    with pytest.raises(UsageError) as refused:
        tail.serve(request_, history, lambda _: None, lambda: True)
    assert str(refused.value).startswith(message)
