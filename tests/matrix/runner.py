"""Run the kernel tests inside another kernel: qemu (TCG) through virtme-ng, on the host's files.

    python3 -m tests.matrix.runner [--kernel-root DIR] [--timeout S] [PYTEST ARGS...]

The guest boots `boot/vmlinuz-<version>` from an unpacked Debian `linux-image-*.deb`
(`.ci/matrix-setup.sh` fetches and unpacks one under /var/cache/netlogger-matrix and exports
NETLOGGER_MATRIX_KERNEL_ROOT), shares the host's root file system read-only, and runs
`tests/matrix/guest.sh`: the chosen kernel tests (GUEST_TESTS, below) and `netlogger doctor
--json`. virtme-ng exits 255 whatever happens and returns the command's output only on the
console, so the guest marks each line it means for us with "NLMX" and this module reads
those back from the console and judges them (`GuestRun.problems`).

The guest kernel needs its modules under /lib/modules/<version>. They come from the
unpacked package through an overlay on /usr/lib in a private mount namespace (`unshare
--mount`): only vng, qemu and the guest see it, nothing is installed on the host, and the
namespace ends with the guest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
GUEST_SCRIPT = Path(__file__).with_name("guest.sh")
KERNEL_ROOT_ENV = "NETLOGGER_MATRIX_KERNEL_ROOT"
TOOLS = ("qemu-system-x86_64", "vng", "unshare")

# What runs in the guest, in one place. TCG runs Python some 20 times slower than the host
# and every test starts a Python workload, so the guest gets a cut that still covers the
# matrix's point: every program loads, passes the verifier and attaches (each test loads
# the whole object), each verdict path of each hook and family with its exact record, the
# kernel-side clocks and helpers (bypass expiry, ancestor cgroup, ring loss counting), the
# pinned-link swap across a loader crash, a map migration, and the feature probes.
GUEST_TESTS = [
    # cgroup/connect4: allow and deny, full record shape
    "tests/kernel/test_decisions.py::test_allowed_tcp_connect4",
    "tests/kernel/test_decisions.py::test_denied_tcp_connect4",
    # cgroup/sendmsg4: deny (reason default_deny) and allow (udp rule)
    "tests/kernel/test_decisions.py::test_denied_sendto4",
    "tests/kernel/test_decisions.py::test_allowed_sendto4",
    # cgroup/connect6 and sendmsg6: native IPv6, and IPv4-mapped decided by IPv4 rules
    "tests/kernel/test_decisions.py::test_connect6_native",
    "tests/kernel/test_decisions.py::test_sendto6_native_denied",
    "tests/kernel/test_decisions.py::test_ipv4_mapped_forms_are_decided_as_ipv4",
    "tests/kernel/test_decisions.py::test_nat64_form_is_decided_as_ipv4",
    # cgroup/sock_create: raw sockets always denied, ping sockets by policy
    "tests/kernel/test_decisions.py::test_raw_socket_denied",
    "tests/kernel/test_decisions.py::test_ping_socket_follows_policy",
    # resolver_not_allowed; loopback; nearest enrolled ancestor; unenrolled passes unrecorded
    "tests/kernel/test_decisions.py::test_dns_only_to_the_policy_resolvers",
    "tests/kernel/test_decisions.py::test_loopback_passes_unrecorded_unless_asked",
    "tests/kernel/test_decisions.py::test_child_cgroup_is_enforced",
    "tests/kernel/test_decisions.py::test_unenrolled_cgroup_passes_without_records",
    # modes: audit (would_deny) and a bypass that the kernel clock ends
    "tests/kernel/test_decisions.py::test_audit_allows_and_records_would_deny",
    "tests/kernel/test_modes.py::test_bypass_allows_then_kernel_returns_to_enforcement",
    # ring full: losses counted per CPU and per cgroup. (The token-bucket flood test stays
    # on the host: its bounds assume the host's syscall rate, which TCG is far from.)
    "tests/kernel/test_flood.py::test_full_ring_losses_are_counted",
    # repeats fold under the fold lock; the flush program runs; folding off as before. (Two
    # cgroups flooding at once stays on the host: it needs a reader that keeps pace with two
    # floods, and under TCG the reader is some 20 times slower than the kernel.)
    "tests/kernel/test_fold.py::test_a_folded_flood_records_the_odd_deny_and_accounts_for_every_one",
    "tests/kernel/test_fold.py::test_with_folding_off_every_decision_is_a_record_and_the_ring_losses_return",
    "tests/kernel/test_fold.py::test_decisions_slower_than_the_window_are_each_their_own_record",
    "tests/kernel/test_fold.py::test_a_flush_with_nothing_folded_writes_nothing",
    "tests/kernel/test_fold.py::test_a_full_ring_costs_a_folded_decision_nothing",
    # pinned links swapped to a new loader's programs after the old one is killed
    "tests/kernel/test_restart.py::test_sigkill_loader_then_take_over",
    # a pinned map whose layout changed is migrated, not reused
    "tests/kernel/test_migration.py::test_same_size_new_layout_is_migrated",
    # pinned ABI 1 keys upgraded in place; a policy re-apply opens no deny window
    "tests/kernel/test_migration.py::test_abi_1_families_and_writers_are_upgraded",
    "tests/kernel/test_reapply.py::test_reapply_never_denies_what_both_sets_allow",
    # DNS: the cgroup_skb programs verify (bpf_loop) and admit before the answer arrives
    "tests/kernel/test_dns.py::test_fresh_names_admit_before_the_answer_arrives",
    "tests/kernel/test_dns.py::test_a_name_no_rule_matches_stays_unresolved",
    "tests/kernel/test_dns.py::test_forty_address_answer_is_admitted_whole",
    "tests/kernel/test_dns.py::test_cname_chain_admits_the_target_under_the_alias_rule",
    "tests/kernel/test_dns.py::test_spoofed_answers_admit_nothing",
    "tests/kernel/test_dns.py::test_crafted_packets_through_the_real_hook_admit_nothing",
    "tests/kernel/test_dns.py::test_admission_goes_on_with_the_agent_killed",
    "tests/kernel/test_dns.py::test_resolver_bypass_reasons",
    # a reload's policy switch, stepped write by write: one whole policy at every step
    "tests/kernel/test_policy_switch.py::test_every_map_write_of_a_switch_keeps_one_whole_policy"
    "[old-to-new]",
    # tp_btf/cgroup_mkdir: CO-RE reads of the new cgroup, enrollment before any task is in it
    "tests/kernel/test_cgroup_mkdir.py",
    # every probe on this kernel, and missing features named by doctor and the loader
    "tests/matrix/test_features.py",
    # every program well inside the verifier's budget on the oldest kernel tested
    "tests/kernel/test_verifier_cost.py::test_every_program_verifies_well_inside_the_budget",
    # lsm_cgroup/socket_create (6.0+): packet sockets denied with one record each, in a
    # child cgroup too; audit and bypass; not-enrolled untouched; the loader killed
    "tests/kernel/test_packet.py::test_packet_sockets_denied_in_enrolled_cgroup",
    "tests/kernel/test_packet.py::test_packet_sockets_that_differ_are_never_folded_together",
    "tests/kernel/test_packet.py::test_packet_sockets_denied_in_child_cgroup",
    "tests/kernel/test_packet.py::test_audit_allows_packet_sockets_and_records_would_deny",
    "tests/kernel/test_packet.py::test_bypass_allows_packet_sockets_and_records_bypassed",
    "tests/kernel/test_packet.py::test_unenrolled_cgroup_opens_packet_sockets",
    "tests/kernel/test_packet.py::test_packet_sockets_stay_denied_with_the_loader_killed",
    # tc backstop on a veth: a denied datagram dropped, with its record
    "tests/kernel/test_backstop.py::test_backstop_drops_what_the_policy_denies_and_records_it",
]

# Lines for the "kernel matrix" section of the pytest output (conftest.py prints them).
REPORT: list[str] = []

_SUMMARY = re.compile(r"\b\d+ (passed|failed|errors?|skipped|xfailed|xpassed)\b.* in [\d.]+s\b")


@dataclass(frozen=True)
class Kernel:
    """An unpacked linux-image package: boot/vmlinuz-<version>, lib/modules/<version>."""

    root: Path
    version: str

    @property
    def image(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @classmethod
    def at(cls, root: Path) -> Kernel:
        images = sorted((root / "boot").glob("vmlinuz-*"))
        if len(images) != 1:
            raise FileNotFoundError(f"expected one boot/vmlinuz-* under {root}, found {images}")
        version = images[0].name.removeprefix("vmlinuz-")
        if not (root / "lib" / "modules" / version / "modules.dep").exists():
            raise FileNotFoundError(
                f"{root}/lib/modules/{version}/modules.dep is missing; run depmod -b {root} "
                f"{version} (.ci/matrix-setup.sh does)"
            )
        return cls(root, version)

    @classmethod
    def from_env(cls) -> Kernel:
        value = os.environ.get(KERNEL_ROOT_ENV)
        if not value:
            raise FileNotFoundError(
                f"{KERNEL_ROOT_ENV} is not set; source .ci/matrix-setup.sh to fetch a kernel"
            )
        return cls.at(Path(value))


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@dataclass
class GuestRun:
    """What came back on the console, and the verdict on it."""

    lines: list[str]  # the guest's NLMX lines, marker stripped
    seconds: float
    timed_out: bool
    console_tail: list[str] = field(default_factory=list)  # for a guest that said nothing

    def _value(self, key: str) -> str | None:
        for line in self.lines:
            if line.startswith(key + " "):
                return line[len(key) + 1 :]
        return None

    @property
    def uname(self) -> str | None:
        return self._value("uname")

    @property
    def uname_v(self) -> str | None:
        return self._value("uname-v")

    @property
    def pytest_output(self) -> list[str]:
        return [line[len("|pytest| ") :] for line in self.lines if line.startswith("|pytest| ")]

    @property
    def pytest_rc(self) -> int | None:
        value = self._value("pytest-rc")
        return int(value.split()[0]) if value else None

    @property
    def summary(self) -> str | None:
        found = [line for line in self.pytest_output if _SUMMARY.search(line)]
        return found[-1].strip("= ") if found else None

    @property
    def doctor(self) -> list[dict[str, Any]] | None:
        text = "\n".join(
            line[len("|doctor| ") :] for line in self.lines if line.startswith("|doctor| ")
        )
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None

    @property
    def doctor_rc(self) -> int | None:
        value = self._value("doctor-rc")
        return int(value) if value else None

    def problems(self) -> list[str]:
        """Every reason to fail the matrix; empty when the guest passed."""
        found = []
        if self.timed_out:
            found.append(f"the guest did not finish within {self.seconds:.0f} s")
        if self.uname is None:
            found.append("the guest never reported `uname -r` (did it boot?)")
        if self.pytest_rc is None:
            found.append("the guest's pytest did not report an exit status")
        elif self.pytest_rc != 0:
            found.append(f"the guest's pytest exited {self.pytest_rc}")
        summary = self.summary
        if summary is None:
            found.append("no pytest summary line in the guest output")
        elif re.search(r"\b(failed|errors?|skipped)\b", summary):
            # A skip in the guest would hide a kernel that lacks something: not a pass.
            found.append(f"the guest's pytest summary is not all passed: {summary}")
        if any("verifier log" in line or "LoadError" in line for line in self.pytest_output):
            found.append("the verifier rejected a program in the guest (LoadError in the output)")
        doctor = self.doctor
        if doctor is None:
            found.append("no `netlogger doctor --json` output from the guest")
        else:
            failed = [f"{c['name']}: {c['detail']}" for c in doctor if c["status"] == "fail"]
            if failed or self.doctor_rc != 0:
                found.append(f"doctor in the guest exited {self.doctor_rc}: {failed}")
        if "done" not in self.lines:
            found.append("the guest script did not reach its end")
        return found


def _fast_dirs() -> list[Path]:
    """Directories worth a cached 9p share: the interpreter's prefix and the checkout."""
    dirs = []
    for path in (Path(sys.base_prefix), Path(sys.prefix), REPO):
        # /usr and friends are already virtme overlays in the guest; leave them be.
        if path.parts[1:2] in (("usr",), ("etc",), ("var",), ("tmp",)) or path in dirs:
            continue
        dirs.append(path)
    return dirs


def command(kernel: Kernel, work: Path, cpus: int, memory: str) -> list[str]:
    fast = _fast_dirs()
    (work / "fast-dirs").write_text("".join(f"{d}\n" for d in fast))
    vng = [
        "vng",
        "--verbose",  # the command's output comes back only on the console
        "--disable-kvm",  # TCG: KVM does not work on these machines
        "--cpus",
        str(cpus),
        "--memory",
        memory,
        "--cwd",
        "/",  # not inside a share guest.sh remounts
        *[f"--rodir={d}" for d in fast],
        "--run",
        str(kernel.image),
        "--exec",
        # From the work directory: guest.sh remounts the checkout it would otherwise hold open.
        f"sh {work / 'guest.sh'} {work}",
    ]
    # /lib is /usr/lib on merged-/usr hosts: overlay whichever directory holds modules/.
    lib = Path("/lib").resolve()
    mount = 'mount -t overlay nlmx-modules -o "lowerdir=$1/lib:$2" "$2" && shift 2 && exec "$@"'
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        mount,
        "sh",
        str(kernel.root),
        str(lib),
        *vng,
    ]


def boot(
    kernel: Kernel,
    pytest_args: list[str],
    *,
    timeout: float = 600,
    cpus: int = 2,
    memory: str = "2G",
    echo: Callable[[str], None] | None = None,
) -> GuestRun:
    """Boot `kernel`, run guest.sh with `pytest_args`, and collect what it said."""
    # Under /tmp whatever TMPDIR says: the guest sees the host's /tmp (through a writable
    # overlay), while virtme hides other temporary places such as /var/tmp behind a tmpfs.
    with tempfile.TemporaryDirectory(prefix="nlmx-", dir="/tmp") as tmp:
        work = Path(tmp)
        (work / "repo").write_text(f"{REPO}\n")
        (work / "python").write_text(f"{Path(sys.executable)}\n")
        (work / "pytest-args").write_text("".join(f"{a}\n" for a in pytest_args))
        shutil.copy(GUEST_SCRIPT, work / "guest.sh")
        cmd = command(kernel, work, cpus, memory)
        start = time.monotonic()
        timed_out = threading.Event()
        lines: list[str] = []
        tail: list[str] = []
        with subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: unshare, vng, qemu
            cwd="/",
        ) as proc:

            def kill_group() -> None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

            def expire() -> None:
                timed_out.set()
                kill_group()

            timer = threading.Timer(timeout, expire)
            timer.start()
            try:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    text = raw.decode(errors="replace").rstrip("\r\n")
                    tail = [*tail[-39:], text]
                    marker = text.find("NLMX")
                    if marker < 0:
                        continue
                    line = text[marker + 4 :].removeprefix(" ")
                    lines.append(line)
                    if echo:
                        echo(line)
            finally:
                timer.cancel()
                # Whatever vng left running in the group (qemu above all) goes with it.
                kill_group()
                proc.wait()
        return GuestRun(lines, time.monotonic() - start, timed_out.is_set(), tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel-root", type=Path, help=f"default: ${KERNEL_ROOT_ENV}")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--memory", default="2G")
    parser.add_argument("pytest_args", nargs="*", help="default: the guest test list")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("error: the runner needs root (unshare --mount, bpf in the guest)", file=sys.stderr)
        return 2
    lacking = missing_tools()
    if lacking:
        print(f"error: missing {', '.join(lacking)}; source .ci/matrix-setup.sh", file=sys.stderr)
        return 2
    kernel = Kernel.at(args.kernel_root) if args.kernel_root else Kernel.from_env()
    print(f"booting {kernel.version} under qemu (TCG) ...", flush=True)
    run = boot(
        kernel,
        args.pytest_args or ["-v", *GUEST_TESTS],
        timeout=args.timeout,
        cpus=args.cpus,
        memory=args.memory,
        echo=lambda line: print(line, flush=True),
    )
    problems = run.problems()
    print(f"guest uname -r: {run.uname}; ran {run.seconds:.0f} s; summary: {run.summary}")
    for problem in problems:
        print(f"FAIL: {problem}")
    if problems and not run.lines:
        print("console tail:\n" + "\n".join(run.console_tail))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
