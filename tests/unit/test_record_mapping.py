"""Every key a netlogger record can carry is mapped in the stack's eBPF index."""

from __future__ import annotations

from monitor import indices
from netlogger.pipeline.record import CONTROL_FIELDS, DNS_FIELDS, FIELDS, GAP_FIELDS


def test_index_maps_every_record_key() -> None:
    record_id = {"record_id"}  # the OTLP sink's
    emitted = set(FIELDS) | set(GAP_FIELDS) | set(DNS_FIELDS) | set(CONTROL_FIELDS) | record_id
    assert emitted - set(indices.ebpf_record_keys()) == set()
