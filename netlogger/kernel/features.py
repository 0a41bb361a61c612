"""What the running kernel can do, asked of the kernel itself.

Probes are data: each names the feature, the Linux release that brought it
(for the message only; the decision is the probe's) and how to ask. The
loader refuses to load when one is missing, naming it; `doctor` lists them all.
The kernel matrix (tests/matrix) runs every probe on each kernel it boots.

Layers are the optional part: programs that close holes the cgroup hooks
leave, loaded only where the kernel takes them. Their probes answer why not,
in words, because "missing" alone does not tell a user what to do.

Program types, helpers, instructions and links are probed by loading tiny
programs through libbpf's low-level `bpf_prog_load` and reading the verifier
log ourselves, rather than through libbpf 1.1's `libbpf_probe_bpf_helper`:
that one decides "absent" by matching the
verifier's "unknown func" wording (6.1 says so), which newer kernels replaced
with "program of this type cannot use helper" (6.18 does), so there it
answers "supported" for helpers a program type may not call: on this CI's
6.18 it calls skb_load_bytes usable from cgroup/connect4. Loading with the
hook's own expected attach type also makes each probe ask about the context
our programs really run in.
"""

from __future__ import annotations

import ctypes
import errno as errnos
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from netlogger.errors import KernelError, NotSupportedError
from netlogger.kernel import libbpf
from netlogger.kernel.spec import AttachType

PROG_SCHED_CLS, PROG_CGROUP_SKB, PROG_CGROUP_SOCK, PROG_CGROUP_SOCK_ADDR = 3, 8, 9, 18
PROG_LSM, PROG_TRACING = 29, 26
MAP_HASH, MAP_ARRAY, MAP_PERCPU_ARRAY, MAP_LRU_HASH, MAP_LPM_TRIE = 1, 2, 6, 9, 11
MAP_HASH_OF_MAPS, MAP_RINGBUF = 13, 27
ATTACH_CGROUP_INET_INGRESS = AttachType.CGROUP_INET_INGRESS
ATTACH_TRACE_RAW_TP = AttachType.TRACE_RAW_TP
ATTACH_INET_SOCK_CREATE = AttachType.CGROUP_INET_SOCK_CREATE
ATTACH_INET4_CONNECT = AttachType.CGROUP_INET4_CONNECT
BPF_F_RDONLY_PROG = 1 << 7

# The attach type each probed program type is loaded with: a cgroup_sock_addr
# program without one is refused before the verifier looks at it.
ATTACH_FOR = {
    PROG_CGROUP_SKB: ATTACH_CGROUP_INET_INGRESS,
    PROG_CGROUP_SOCK: ATTACH_INET_SOCK_CREATE,
    PROG_CGROUP_SOCK_ADDR: ATTACH_INET4_CONNECT,
}

# A syscall program is refused unless it is sleepable.

_LOG_BYTES = 64 << 10

# Verifier wording for "this helper is not for you": unknown id; known but not
# allowed for the type (6.1); the same, in newer kernels' words (6.18).
_ABSENT_HELPER = ("invalid func ", "unknown func ", "cannot use helper ")


@dataclass(frozen=True)
class Feature:
    name: str
    since: str  # the Linux release that added it, for people
    probe: Callable[[], bool]


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return (
        bytes([code, (src << 4) | dst])
        + off.to_bytes(2, "little", signed=True)
        + imm.to_bytes(4, "little", signed=True)
    )


# The few eBPF instructions the probes need (encodings from linux/bpf.h).
_R0_1 = _insn(0xB7, dst=0, imm=1)  # r0 = 1 (a cgroup program's "allow")
_R0_0 = _insn(0xB7, dst=0, imm=0)
_EXIT = _insn(0x95)


def _call(helper: int) -> bytes:
    return _insn(0x85, imm=helper)


def _check_privilege(err: int, what: str) -> None:
    # EPERM is the capability check; EACCES is also how the verifier says no.
    if err == errnos.EPERM:
        raise libbpf.error_for(err, libbpf.Op.LOAD, f"probe {what}")


def _load(prog_type: int, code: bytes, log: ctypes.Array[ctypes.c_char] | None) -> tuple[int, int]:
    """Load `code` as `prog_type`: (fd or -1, errno). Closes nothing; the caller does."""
    opts = libbpf.ProgLoadOpts(
        sz=ctypes.sizeof(libbpf.ProgLoadOpts),
        expected_attach_type=ATTACH_FOR.get(prog_type, 0),
    )
    if log is not None:
        opts.log_level, opts.log_size, opts.log_buf = 1, len(log), ctypes.addressof(log)
    ret = libbpf.bpf_prog_load(prog_type, None, b"GPL", code, len(code) // 8, ctypes.byref(opts))
    return (ret, 0) if ret >= 0 else (-1, -ret)


def _loads(prog_type: int, code: bytes, what: str) -> bool:
    fd, err = _load(prog_type, code, None)
    if fd >= 0:
        os.close(fd)
        return True
    _check_privilege(err, what)
    return False


def _prog(prog_type: int) -> Callable[[], bool]:
    return lambda: _loads(prog_type, _R0_1 + _EXIT, f"program type {prog_type}")


def _map(map_type: int) -> Callable[[], bool]:
    return lambda: libbpf.libbpf_probe_bpf_map_type(map_type, None) == 1


def _helper(prog_type: int, helper: int) -> Callable[[], bool]:
    def probe() -> bool:
        what = f"helper {helper} in program type {prog_type}"
        log = ctypes.create_string_buffer(_LOG_BYTES)
        fd, err = _load(prog_type, _call(helper) + _R0_1 + _EXIT, log)
        if fd >= 0:
            os.close(fd)
            return True
        _check_privilege(err, what)
        text = log.value.decode(errors="replace")
        if any(marker in text for marker in _ABSENT_HELPER):
            return False
        if not text:
            # Refused before the verifier ran: the answer would be a guess.
            raise KernelError(
                f"probe {what}: the kernel refused the probe program before verifying it "
                f"({errnos.errorcode.get(err, err)})",
                err,
            )
        # The verifier accepted the call and objected to something later (the
        # probe passes no real arguments): the helper is there for this type.
        return True

    return probe


def _atomic_fetch() -> bool:
    # *(u64 *)(r10 - 8) = 0; r1 = 1; r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)
    code = (
        _insn(0x7A, dst=10, off=-8, imm=0)
        + _insn(0xB7, dst=1, imm=1)
        + _insn(0xDB, dst=10, src=1, off=-8, imm=0x01)  # BPF_STX|BPF_DW|BPF_ATOMIC, ADD|FETCH
        + _R0_1
        + _EXIT
    )
    return _loads(PROG_CGROUP_SOCK_ADDR, code, "atomic fetch-and-add")


def _jmp32() -> bool:
    # r0 = 1; if w0 == 0 goto +0 (BPF_JMP32, what clang -mcpu=v3 emits)
    return _loads(
        PROG_CGROUP_SOCK_ADDR, _R0_1 + _insn(0x16, dst=0, imm=0) + _EXIT, "jmp32 instructions"
    )


def _cgroup_link() -> bool:
    """BPF_LINK_CREATE for a cgroup hook, aimed at no cgroup at all (fd -1).

    A kernel with cgroup links checks the program and the attach type first and
    then fails to find the cgroup (EBADF); one without refuses the command or
    the attach type (EINVAL). Nothing is ever attached.
    """
    fd, err = _load(PROG_CGROUP_SOCK_ADDR, _R0_1 + _EXIT, None)
    if fd < 0:
        _check_privilege(err, "cgroup link")
        return False
    try:
        link = libbpf.bpf_link_create(fd, -1, ATTACH_INET4_CONNECT, None)
        err = -link if link < 0 else 0
        if link >= 0:  # cannot happen with fd -1; never leave a link behind
            os.close(link)
            return True
        _check_privilege(err, "cgroup link")
        return err == errnos.EBADF
    finally:
        os.close(fd)


def _rodata_map() -> bool:
    # The programs' settings live in .rodata: an array map read-only to programs.
    opts = libbpf.MapCreateOpts(sz=ctypes.sizeof(libbpf.MapCreateOpts), map_flags=BPF_F_RDONLY_PROG)
    fd = libbpf.bpf_map_create(MAP_ARRAY, None, 4, 4, 1, ctypes.byref(opts))
    if fd >= 0:
        os.close(fd)
        return True
    _check_privilege(-fd, "read-only global data")
    return False


def _tp_btf(tracepoint: str) -> Callable[[], bool]:
    """A BTF-typed raw tracepoint program on `tracepoint` loads and attaches.

    It is attached for a moment (it does nothing) and detached again. Refusal
    means "absent" whatever the errno: some kernels refuse tracing programs
    with EPERM even to root, so EPERM here is not a missing capability.
    """

    def probe() -> bool:
        btf_id = libbpf.libbpf_find_vmlinux_btf_id(tracepoint.encode(), ATTACH_TRACE_RAW_TP)
        if btf_id < 0:
            return False
        opts = libbpf.ProgLoadOpts(
            sz=ctypes.sizeof(libbpf.ProgLoadOpts),
            expected_attach_type=ATTACH_TRACE_RAW_TP,
            attach_btf_id=btf_id,
        )
        code = _R0_0 + _EXIT
        fd = libbpf.bpf_prog_load(PROG_TRACING, None, b"GPL", code, 2, ctypes.byref(opts))
        if fd < 0:
            return False
        try:
            link = libbpf.bpf_raw_tracepoint_open(None, fd)
            if link < 0:
                return False
            os.close(link)
            return True
        finally:
            os.close(fd)

    return probe


# (helper id, name, release) of every helper the programs call. The release is
# when the helper became callable from cgroup socket programs, as far as known;
# the matrix proves the floor the README states.
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
    (93, "spin_lock", "5.1"),  # the fold lock (bpf/emit.bpf.c)
    (94, "spin_unlock", "5.1"),
]

# What nl_flush_folds (bpf/emit.bpf.c), the program the agent runs, calls.
FLUSH_HELPERS = [
    (1, "map_lookup_elem", "4.1"),
    (8, "get_smp_processor_id", "4.1"),
    (26, "skb_load_bytes", "4.5"),
    (93, "spin_lock", "5.1"),
    (94, "spin_unlock", "5.1"),
    (131, "ringbuf_reserve", "5.8"),
    (132, "ringbuf_submit", "5.8"),
    (134, "ringbuf_query", "5.8"),
]

# What the DNS hooks (cgroup_skb, bpf/dns.bpf.c) call besides map access.
SKB_HELPERS = [
    (1, "map_lookup_elem", "4.10"),
    (2, "map_update_elem", "4.10"),
    (3, "map_delete_elem", "4.10"),
    (8, "get_smp_processor_id", "4.10"),
    (26, "skb_load_bytes", "4.10"),
    (46, "get_socket_cookie", "4.12"),
    (83, "skb_ancestor_cgroup_id", "4.19"),
    (125, "ktime_get_boot_ns", "5.8"),
    (130, "ringbuf_output", "5.8"),
    (181, "loop", "5.17"),
]

FEATURES: list[Feature] = [
    Feature("program type cgroup_sock_addr", "4.17", _prog(PROG_CGROUP_SOCK_ADDR)),
    Feature("program type cgroup_sock", "4.10", _prog(PROG_CGROUP_SOCK)),
    Feature("program type sched_cls (the fold flush, the backstop)", "4.1", _prog(PROG_SCHED_CLS)),
    Feature("jmp32 instructions (clang -mcpu=v3)", "5.1", _jmp32),
    Feature("atomic fetch-and-add (BPF_ATOMIC | BPF_FETCH)", "5.12", _atomic_fetch),
    Feature("read-only global data (.rodata map)", "5.2", _rodata_map),
    Feature("bpf_link for cgroup programs", "5.7", _cgroup_link),
    Feature("map type ringbuf", "5.8", _map(MAP_RINGBUF)),
    Feature("map type lpm_trie", "4.11", _map(MAP_LPM_TRIE)),
    Feature("map type hash", "3.19", _map(MAP_HASH)),
    Feature("map type percpu_array", "4.6", _map(MAP_PERCPU_ARRAY)),
    Feature("program type cgroup_skb", "4.10", _prog(PROG_CGROUP_SKB)),
    Feature("map type lru_hash", "4.10", _map(MAP_LRU_HASH)),
    Feature("map type hash_of_maps", "4.12", _map(MAP_HASH_OF_MAPS)),
    *[
        Feature(f"helper {name} in cgroup_skb", since, _helper(PROG_CGROUP_SKB, helper_id))
        for helper_id, name, since in SKB_HELPERS
    ],
    *[
        Feature(f"helper {name} in {kind}", since, _helper(prog_type, helper_id))
        for prog_type, kind in (
            (PROG_CGROUP_SOCK_ADDR, "cgroup_sock_addr"),
            (PROG_CGROUP_SOCK, "cgroup_sock"),
        )
        for helper_id, name, since in HELPERS
    ],
    *[
        Feature(f"helper {name} in sched_cls", since, _helper(PROG_SCHED_CLS, helper_id))
        for helper_id, name, since in FLUSH_HELPERS
    ],
]


# Not required: without it the agent enrolls containers at the engine's start
# event instead, and says so.
CGROUP_MKDIR = Feature("program tp_btf/cgroup_mkdir", "5.5", _tp_btf("cgroup_mkdir"))
OPTIONAL: list[Feature] = [CGROUP_MKDIR]


@dataclass(frozen=True)
class Result:
    feature: Feature
    present: bool


def probe_all(features: list[Feature] | None = None) -> list[Result]:
    return [Result(f, f.probe()) for f in (FEATURES if features is None else features)]


def missing(features: list[Feature] | None = None) -> list[Feature]:
    return [r.feature for r in probe_all(features) if not r.present]


def require(features: list[Feature] | None = None) -> None:
    """Raise NotSupportedError naming every missing feature (the first leads)."""
    absent = missing(features)
    if absent:
        first, rest = absent[0], absent[1:]
        err = NotSupportedError(first.name, first.since)
        if rest:
            names = "; ".join(f"{f.name} (Linux {f.since})" for f in rest)
            err.args = (f"{err}; also missing: {names}",)
        raise err


@dataclass(frozen=True)
class Layer:
    name: str  # the key programs and status name it by
    title: str
    since: str
    probe: Callable[[], str | None]  # None: the kernel takes it; else why not


VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
ACTIVE_LSMS = Path("/sys/kernel/security/lsm")


def _last_line(log: ctypes.Array[ctypes.c_char]) -> str:
    lines = log.value.decode(errors="replace").strip().splitlines()
    return f": {lines[-1]}" if lines else ""


def _lsm_cgroup() -> str | None:
    """Load an allow-everything lsm_cgroup/socket_create program, as the layer's is."""
    _prog(PROG_CGROUP_SOCK)()  # raises PrivilegeError when EPERM below would mean us
    if not VMLINUX_BTF.exists():
        return f"the kernel has no BTF ({VMLINUX_BTF}), which lsm_cgroup programs attach by"
    btf_id = libbpf.libbpf_find_vmlinux_btf_id(b"socket_create", AttachType.LSM_CGROUP)
    if btf_id < 0:
        return "the kernel has no BPF LSM hook socket_create (needs CONFIG_BPF_LSM, Linux 6.0)"
    if ACTIVE_LSMS.exists() and "bpf" not in ACTIVE_LSMS.read_text().strip().split(","):
        return "the BPF LSM is not active (add bpf to the lsm= boot parameter)"
    log = ctypes.create_string_buffer(_LOG_BYTES)
    opts = libbpf.ProgLoadOpts(
        sz=ctypes.sizeof(libbpf.ProgLoadOpts),
        expected_attach_type=AttachType.LSM_CGROUP,
        attach_btf_id=btf_id,
        log_level=1,
        log_size=len(log),
        log_buf=ctypes.addressof(log),
    )
    code = _R0_1 + _EXIT
    fd = libbpf.bpf_prog_load(PROG_LSM, None, b"GPL", code, len(code) // 8, ctypes.byref(opts))
    if fd >= 0:
        os.close(fd)
        return None
    err = -fd
    name = errnos.errorcode.get(err, str(err))
    if err == errnos.EPERM:
        # We are privileged (the probe above loaded): this is the kernel's policy.
        return f"the kernel refuses trampoline programs: {name}"
    return f"the kernel refuses lsm_cgroup programs: {name}{_last_line(log)}"


def _tc() -> str | None:
    if not _prog(PROG_SCHED_CLS)():
        return "the kernel refuses tc (sched_cls) programs"
    for helper_id, helper in ((26, "skb_load_bytes"), (131, "ringbuf_reserve")):
        if not _helper(PROG_SCHED_CLS, helper_id)():
            return f"tc programs cannot call {helper} here"
    return None


LAYERS: list[Layer] = [
    Layer("lsm", "LSM packet-socket denial (lsm_cgroup/socket_create)", "6.0", _lsm_cgroup),
    Layer("backstop", "container backstop (tc on the host side of the veth)", "5.8", _tc),
]


def layers() -> dict[str, str | None]:
    """Layer name -> None where this kernel takes it, else why it does not."""
    return {layer.name: layer.probe() for layer in LAYERS}
