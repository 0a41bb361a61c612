"""What the BPF object holds: its maps, its programs, and where each program attaches.

This is the spec, kept apart from the live kernel objects (plane.py). The
object itself is built from bpf/ by setup.py (see its docstring).

Adding a map: declare it in bpf/maps.bpf.h, define it in bpf/maps.bpf.c, add
its MapSpec below (key and value are abi.py mirrors), and give Plane a typed
attribute when the agent reads or writes it. Adding a program: write it in its
bpf/<concept>.bpf.c and add its ProgramSpec below; the loader attaches, pins
and swaps every program listed here that has an attach type, and tests/unit/test_spec.py holds this
list to the object.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netlogger.kernel import abi

OBJECT = Path(__file__).resolve().parents[1] / "_objects" / "netlogger.bpf.o"

u32, u64 = ctypes.c_uint32, ctypes.c_uint64


class AttachType(enum.IntEnum):
    """enum bpf_attach_type (linux/bpf.h), named as there without `BPF_`."""

    CGROUP_INET_INGRESS = 0  # also what libbpf reports for a tc section, which has none
    CGROUP_INET_EGRESS = 1
    CGROUP_INET_SOCK_CREATE = 2
    CGROUP_INET4_CONNECT = 10
    CGROUP_INET6_CONNECT = 11
    CGROUP_UDP4_SENDMSG = 14
    CGROUP_UDP6_SENDMSG = 15
    LSM_CGROUP = 43
    TRACE_RAW_TP = 23  # tp_btf: a BTF-typed tracepoint, attached to no cgroup


@dataclass(frozen=True)
class MapSpec:
    key: Any  # None: not read as entries (the ring)
    value: Any
    carry: bool  # entries are carried into a new map when the layout changes
    of_maps: bool = False  # values are inner maps: carried by id, not by bytes


@dataclass(frozen=True)
class ProgramSpec:
    section: str  # SEC() in bpf/, which tells libbpf the program type
    attach_type: AttachType
    layer: str | None = None  # an optional layer (features.LAYERS): loaded where it is taken
    on_scope: bool = True  # attached to the scope cgroup by the loader; else by its layer


MAPS: dict[str, MapSpec] = {
    "nl_events": MapSpec(None, None, carry=False),
    "nl_enrollments": MapSpec(u64, abi.Enrollment, carry=True),
    "nl_cgroup_state": MapSpec(u64, abi.CgroupState, carry=True),
    "nl_cpu_loss": MapSpec(u32, abi.CpuLoss, carry=False),
    "nl_policies": MapSpec(u32, abi.Policy, carry=True),
    "nl_cidrs": MapSpec(abi.CidrKey, abi.CidrRules, carry=True),
    "nl_resolvers": MapSpec(abi.ResolverKey, u32, carry=True),
    "nl_levels": MapSpec(u32, abi.Levels, carry=True),
    # Pending repeats are flushed before a migration could matter (on stop), and
    # the agent re-creates an enrolled cgroup's entry: nothing to carry.
    "nl_folds": MapSpec(u64, abi.Folds, carry=False),
    "nl_labels": MapSpec(u64, abi.Labels, carry=True),
    "nl_reported": MapSpec(u64, abi.Reported, carry=True),
    "nl_pending": MapSpec(abi.PendingKey, abi.Pending, carry=True),
    "nl_meta": MapSpec(u32, abi.Meta, carry=False),
    "nl_dns_events": MapSpec(None, None, carry=False),
    "nl_domains": MapSpec(abi.DomainKey, abi.Domain, carry=True),
    "nl_domain_ports": MapSpec(abi.DomainPortsKey, abi.CidrRules, carry=True),
    "nl_dns_admitted": MapSpec(u64, u32, carry=True, of_maps=True),
    "nl_dns_queries": MapSpec(u64, u32, carry=True, of_maps=True),
    "nl_dns_socks": MapSpec(u64, ctypes.c_uint8, carry=True),
    "nl_dns_scratch": MapSpec(u32, ctypes.c_uint8 * abi.DNS_SCRATCH_BYTES, carry=False),
    "nl_veths": MapSpec(u32, abi.Veth, carry=True),
}

BPF_MAP_TYPE_LRU_HASH = 9


@dataclass(frozen=True)
class InnerSpec:
    """The inner map each enrolled cgroup gets in a map-of-maps (bpf/maps.bpf.h)."""

    map_type: int
    key: Any
    value: Any
    entries: int


INNER_MAPS: dict[str, InnerSpec] = {
    "nl_dns_admitted": InnerSpec(
        BPF_MAP_TYPE_LRU_HASH, abi.DnsAddrKey, abi.DnsSlots, abi.DNS_ADDRS_MAX
    ),
    "nl_dns_queries": InnerSpec(
        BPF_MAP_TYPE_LRU_HASH, abi.DnsQueryKey, abi.DnsQuery, abi.DNS_QUERIES_MAX
    ),
}

PROGRAMS: dict[str, ProgramSpec] = {
    "nl_connect4": ProgramSpec("cgroup/connect4", AttachType.CGROUP_INET4_CONNECT),
    "nl_connect6": ProgramSpec("cgroup/connect6", AttachType.CGROUP_INET6_CONNECT),
    "nl_sendmsg4": ProgramSpec("cgroup/sendmsg4", AttachType.CGROUP_UDP4_SENDMSG),
    "nl_sendmsg6": ProgramSpec("cgroup/sendmsg6", AttachType.CGROUP_UDP6_SENDMSG),
    "nl_sock_create": ProgramSpec("cgroup/sock_create", AttachType.CGROUP_INET_SOCK_CREATE),
    "nl_dns_ingress": ProgramSpec("cgroup_skb/ingress", AttachType.CGROUP_INET_INGRESS),
    "nl_dns_egress": ProgramSpec("cgroup_skb/egress", AttachType.CGROUP_INET_EGRESS),
    "nl_packet_socket": ProgramSpec("lsm_cgroup/socket_create", AttachType.LSM_CGROUP, layer="lsm"),
    # tc, on each enrolled container's veth: netlogger/backstop.py attaches it.
    "nl_backstop": ProgramSpec(
        "tc", AttachType.CGROUP_INET_INGRESS, layer="backstop", on_scope=False
    ),
    # Attached by the loader where the kernel takes it (loader.py, Plane.tracing).
    "nl_cgroup_mkdir": ProgramSpec("tp_btf/cgroup_mkdir", AttachType.TRACE_RAW_TP, on_scope=False),
    # Never attached: the agent runs it (BPF_PROG_TEST_RUN; Plane.flush_folds). A tc
    # program's expected attach type is 0, which bpf_attach_type names CGROUP_INET_INGRESS.
    "nl_flush_folds": ProgramSpec("tc", AttachType.CGROUP_INET_INGRESS, on_scope=False),
}
BACKSTOP = "nl_backstop"
TRACING = [n for n, p in PROGRAMS.items() if p.attach_type == AttachType.TRACE_RAW_TP]


def wanted(name: str, layers: dict[str, str | None]) -> bool:
    """Is program `name` for this kernel? `layers`: layer -> None, or why it is refused."""
    layer = PROGRAMS[name].layer
    return layer is None or layers.get(layer) is None
