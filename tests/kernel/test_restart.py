"""Pinned state outlives its loader; a new loader takes it over with no gap."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import threading
from pathlib import Path

from netlogger import sandbox
from netlogger.kernel import loader, spec
from netlogger.pipeline.decode import Decoder
from tests.kernel.conftest import POLICY

EPERM = errno.EPERM


def test_sigkill_loader_then_take_over(tmp_path: Path, pin_root, scope, spawn, policies) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    with sandbox.cgroup(scope, "a") as cg:
        holder = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.kernel.hold_plane",
                str(pin_root),
                str(scope.path),
                str(cg.path),
                str(policy_file),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[2],
        )
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        w = spawn(cg)
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EPERM

        holder.send_signal(signal.SIGKILL)
        holder.communicate()
        # No loader runs now: the pinned links still decide.
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EPERM

        # While a new loader swaps its programs in, a workload keeps trying: none may pass.
        during: dict[str, int] = {}
        hammer = threading.Thread(
            target=lambda: during.update(
                w("flood", family=4, addr="198.18.0.2", port=6000, count=30_000)
            )
        )
        hammer.start()
        with loader.loaded(pin_root, scope) as plane:
            hammer.join()
            assert during == {str(EPERM): 30_000}
            assert (
                plane.report.swapped
                == [n for n, p in spec.PROGRAMS.items() if p.on_scope and n in plane.prog_fds]
                + spec.TRACING
            )
            assert set(plane.report.reused) == set(spec.MAPS)
            assert plane.report.attached == [] and plane.report.migrated == []

            assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EPERM
            decoder = Decoder(lambda r: None, lambda p: "default")
            plane.flush_folds()  # the pinned fold map kept its repeats across the swap too
            with plane.reader() as ring:
                records = decoder.decode_all(ring.drain())
        # Records made with no loader running were kept in the pinned ring, repeats folded.
        decisions = 1 + 1 + 30_000 + 1
        assert sum(r.stands_for for r in records) == decisions
        covered = {s for r in records for s in range((r.repeat_seq_first or r.seq), r.seq + 1)}
        assert covered == set(range(decisions))
        assert {r.action for r in records} == {"denied"}


def test_second_loader_on_same_pin_root_is_refused(pin_root, scope, plane) -> None:
    import os

    import pytest

    from netlogger.errors import StateError

    with pytest.raises(StateError, match=f"the netlogger agent with pid {os.getpid()} is using"):
        loader.load(pin_root, scope)


def test_pinned_links_on_another_scope_are_refused(pin_root, scope, plane) -> None:
    import pytest

    from netlogger.errors import StateError

    plane.close()
    with (
        sandbox.cgroup(scope, "other") as other,
        pytest.raises(StateError, match="is attached to cgroup id"),
    ):
        loader.load(pin_root, other)
