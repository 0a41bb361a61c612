"""Decisions leave the agent as OTLP logs over mTLS, the same records the file holds."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor import certs as monitor_certs
from netlogger import sandbox
from tests.e2e.conftest import decisions
from tests.otlp.receiver import Receiver, attributes


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    server = Receiver(monitor_certs.generate(tmp_path / "monitor")).start()
    yield server
    server.stop()


def test_agent_exports_each_record_over_mtls(agent_factory, receiver, scope, spawn) -> None:
    certs = receiver.certs
    agent = agent_factory(extra_sinks=[{
        "type": "otlp", "endpoint": receiver.endpoint, "ca": str(certs.ca_cert),
        "cert": str(certs.client_cert), "key": str(certs.client_key),
    }]).start()  # fmt: skip
    with sandbox.cgroup(scope, "a") as cg:
        agent.cli("enroll", "--cgroup", str(cg.path), "--agent", "a1", "--project", "p1")
        w = spawn(cg)
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=443) == errno.EINPROGRESS
        assert w("socket", family=4, kind="raw") == errno.EPERM
        assert receiver.wait_for(3)  # the enroll's audit record, then the two decisions
        written = decisions(agent.wait_for_lines(lambda ls: len(decisions(ls)) >= 2))

    received = [r for r in receiver.records() if r.event_name != "ebpf.egress.control"]
    exported = [attributes(r) for r in received]
    for attrs, line in zip(exported, written, strict=True):
        record_id = attrs.pop("record_id")
        assert attrs == line  # same keys, same values, same types
        assert (
            record_id == f"{line['host.name']}:{line['cgroup_id']}:{line['seq']}:"
            f"{line['bpf_ts_ns']}"
        )
    assert [r.event_name for r in receiver.records()] == [
        "ebpf.egress.control",
        "ebpf.egress.connect",
        "ebpf.egress.sock_create",
    ]
    assert [r.severity_text for r in receiver.records()] == ["INFO", "INFO", "WARN"]
    sink = {s["name"]: s for s in agent.status()["sinks"]}["otlp"]
    assert (sink["state"], sink["sent_records"], sink["last_error"]) == ("up", 3, "")
    assert agent.metric("netlogger_sink_state", sink="otlp", state="up") == 1.0
