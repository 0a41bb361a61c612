"""What the running kernel can do, asked of the kernel itself (libbpf probes).

Probes are data: each names the feature, the Linux release that brought it
(for the message only; the decision is the probe's) and how to ask. The
loader refuses to load when one is missing, naming it; `doctor` lists them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from netlogger.errors import NotSupportedError
from netlogger.kernel import libbpf

PROG_CGROUP_SOCK, PROG_CGROUP_SOCK_ADDR = 9, 18
MAP_LPM_TRIE, MAP_RINGBUF, MAP_HASH, MAP_PERCPU_ARRAY = 11, 27, 1, 6


@dataclass(frozen=True)
class Feature:
    name: str
    since: str  # the Linux release that added it, for people
    probe: Callable[[], bool]


def _prog(prog_type: int) -> Callable[[], bool]:
    return lambda: libbpf.libbpf_probe_bpf_prog_type(prog_type, None) == 1


def _map(map_type: int) -> Callable[[], bool]:
    return lambda: libbpf.libbpf_probe_bpf_map_type(map_type, None) == 1


def _helper(prog_type: int, helper: int) -> Callable[[], bool]:
    return lambda: libbpf.libbpf_probe_bpf_helper(prog_type, helper, None) == 1


# (helper id, name, release) of every helper the programs call.
HELPERS = [
    (1, "map_lookup_elem", "3.18"),
    (2, "map_update_elem", "3.18"),
    (8, "get_smp_processor_id", "4.1"),
    (14, "get_current_pid_tgid", "5.7"),
    (15, "get_current_uid_gid", "5.7"),
    (16, "get_current_comm", "5.7"),
    (46, "get_socket_cookie", "5.10"),
    (80, "get_current_cgroup_id", "5.7"),
    (123, "get_current_ancestor_cgroup_id", "5.7"),
    (125, "ktime_get_boot_ns", "5.8"),
    (131, "ringbuf_reserve", "5.8"),
    (132, "ringbuf_submit", "5.8"),
    (134, "ringbuf_query", "5.8"),
]

FEATURES: list[Feature] = [
    Feature("program type cgroup_sock_addr", "4.17", _prog(PROG_CGROUP_SOCK_ADDR)),
    Feature("program type cgroup_sock", "4.10", _prog(PROG_CGROUP_SOCK)),
    Feature("map type ringbuf", "5.8", _map(MAP_RINGBUF)),
    Feature("map type lpm_trie", "4.11", _map(MAP_LPM_TRIE)),
    Feature("map type hash", "3.19", _map(MAP_HASH)),
    Feature("map type percpu_array", "4.6", _map(MAP_PERCPU_ARRAY)),
    *[
        Feature(f"helper {name} in {kind}", since, _helper(prog_type, helper_id))
        for prog_type, kind in (
            (PROG_CGROUP_SOCK_ADDR, "cgroup_sock_addr"),
            (PROG_CGROUP_SOCK, "cgroup_sock"),
        )
        for helper_id, name, since in HELPERS
    ],
]


@dataclass(frozen=True)
class Result:
    feature: Feature
    present: bool


def probe_all(features: list[Feature] | None = None) -> list[Result]:
    return [Result(f, f.probe()) for f in (FEATURES if features is None else features)]


def require(features: list[Feature] | None = None) -> None:
    """Raise NotSupportedError naming the first missing feature."""
    for result in probe_all(features):
        if not result.present:
            raise NotSupportedError(result.feature.name, result.feature.since)
