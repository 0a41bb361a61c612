"""Index mappings cover every field the senders emit, with the contract's types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitor import bootstrap_assets, indices

REPO = Path(__file__).resolve().parents[2]

# DESIGN.md section 3, as written when this test was: the table and the "Added by" paragraph.
DESIGN_KEYS = {
    "event.name",
    "action",
    "container_id",
    "agent",
    "project",
    "cgroup_id",
    "bpf_ts_ns",
    "dst_ip",
    "dst_port",
    "l4_proto",
    "l4_proto_code",
    "ipv6",
    "ipv4_mapped",
    "no_dst",
    "dst_host",
    "identity",
    "attribution",
    "ts",
    "seq",
    "mode",
    "reason",
    "rule",
    "would_deny",
    "pid",
    "comm",
    "uid",
    "task_cgroup_id",
    "sock_cookie",
    "dns.qname",
    "dns.answer_age_ms",
    "dns.ttl_left_s",
    "dns.cname_chain",
    "dns.names_sharing_ip",
}
# Also emitted by the agent (the list).
AGENT_KEYS = {
    "record_id",
    "host.name",
    "seq",
    "gap.kind",
    "gap.count",
    "gap.seq_first",
    "gap.seq_last",
    "repeat.count",
    "repeat.first_ns",
    "repeat.last_ns",
    "repeat.seq_first",
    "tid",
    "gid",
    "nat64",
    "policy",
    "dns.qname",
    "container_name",
    "cgroup_path",
}
# The audit trail (issue 11): one record per control action.
CONTROL_KEYS = {
    "control.command",
    "control.result",
    "control.error",
    "control.by",
    "control.target",
    "control.uid",
    "control.pid",
    "control.trigger",
    "control.mode_before",
    "control.mode_after",
    "control.policy_before",
    "control.policy_after",
    "control.bypass_s",
    "control.bypass_until",
}
TYPES = {
    "cgroup_id": "keyword",
    "dst_port": "keyword",
    "identity": "keyword",
    "bpf_ts_ns": "long",
    "ts": "date",
    "ipv6": "boolean",
    "ipv4_mapped": "boolean",
    "no_dst": "boolean",
    "would_deny": "boolean",
    "nat64": "boolean",
    "record_id": "keyword",
    "host.name": "keyword",
    "seq": "long",
    "gap.kind": "keyword",
    "gap.count": "long",
    "gap.seq_first": "long",
    "gap.seq_last": "long",
    "repeat.count": "long",
    "repeat.first_ns": "long",
    "repeat.last_ns": "long",
    "repeat.seq_first": "long",
    "tid": "long",
    "gid": "long",
    "policy": "keyword",
    "dns.qname": "keyword",
    "container_name": "keyword",
    "cgroup_path": "keyword",
    "control.command": "keyword",
    "control.result": "keyword",
    "control.error": "keyword",
    "control.by": "keyword",
    "control.uid": "long",
    "control.pid": "long",
    "control.trigger": "keyword",
    "control.mode_before": "keyword",
    "control.mode_after": "keyword",
    "control.policy_before": "keyword",
    "control.policy_after": "keyword",
    "control.bypass_s": "double",
    "control.bypass_until": "date",
}


def _design_section_3() -> str | None:
    for candidate in (REPO.parent / "shared" / "DESIGN.md", REPO / "shared" / "DESIGN.md"):
        if candidate.exists():
            text = candidate.read_text()
            start = text.find("## 3.")
            end = text.find("## 4.")
            return text[start:end] if start >= 0 else None
    return None


def _leaf(mapping: dict[str, Any], path: str) -> dict[str, Any]:
    node: dict[str, Any] = {"properties": mapping}
    for part in path.split("."):
        node = node["properties"][part]
    return node


@pytest.fixture(scope="module")
def ebpf_mapping() -> dict[str, Any]:
    body = bootstrap_assets.index_template(indices.by_name("clawker-ebpf-egress"))
    props: dict[str, Any] = body["template"]["mappings"]["properties"]["attributes"]["properties"]
    return props


def test_ebpf_keys_cover_design_and_agent_lists(ebpf_mapping: dict[str, Any]) -> None:
    keys = set(indices.ebpf_record_keys())
    assert keys >= DESIGN_KEYS, DESIGN_KEYS - keys
    assert keys >= AGENT_KEYS, AGENT_KEYS - keys
    assert keys >= CONTROL_KEYS, CONTROL_KEYS - keys
    for key in keys:
        _leaf(ebpf_mapping, key)  # present in the nested mapping


def test_ebpf_types_follow_the_contract(ebpf_mapping: dict[str, Any]) -> None:
    for key, expected in TYPES.items():
        assert _leaf(ebpf_mapping, key)["type"] == expected, key
    dst_ip = _leaf(ebpf_mapping, "dst_ip")
    assert dst_ip["type"] == "keyword" and dst_ip["fields"]["ip"]["type"] == "ip"


def test_no_field_is_both_a_value_and_an_object() -> None:
    """OpenSearch expands dotted keys; a key that is also a prefix would reject records."""
    for spec in indices.all_indices():
        indices.nest({**indices.common_fields(), **spec.fields})
    with pytest.raises(ValueError, match="conflict"):
        indices.nest({"attributes.prompt": "text", "attributes.prompt.id": "keyword"})


def test_claude_code_prompt_id_is_renamed_not_mapped() -> None:
    spec = indices.by_name("claude-code")
    assert "attributes.prompt" in spec.fields
    assert "attributes.prompt.id" not in spec.fields
    assert spec.renamed_attributes == {"prompt.id": "prompt_id"}


def test_reference_field_sets_are_mapped() -> None:
    envoy = indices.by_name("clawker-envoy").fields
    for key in (
        "server.address",
        "network.peer.address",
        "network.peer.port",
        "tls.established",
        "action",
        "response_code",
        "response_code_details",
        "req_duration_ms",
        "resp_duration_ms",
        "resp_tx_duration_ms",
        "duration_ms",
    ):
        assert f"attributes.{key}" in envoy, key
    coredns = indices.by_name("clawker-coredns").fields
    for key in ("domain", "qtype", "rcode", "duration_ms"):
        assert f"attributes.{key}" in coredns, key
    claude = indices.by_name("claude-code").fields
    for key in (
        "event.name",
        "session.id",
        "cost_usd",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_creation_tokens",
        "tool_name",
        "decision",
    ):
        assert f"attributes.{key}" in claude, key


def test_field_specs_are_the_only_source(tmp_path: Path) -> None:
    """The ebpf index template body is built from the one JSON field file, unchanged."""
    raw = json.loads((REPO / "monitor/bootstrap/fields/clawker-ebpf-egress.json").read_text())
    assert set(raw["attributes"]) == set(indices.ebpf_record_keys())
