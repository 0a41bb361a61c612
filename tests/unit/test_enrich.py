"""Enrichers: attribution with its source, container flags, process detail (fake procfs)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from netlogger.kernel import abi
from netlogger.pipeline.enrich import AttributionEnricher, ContainerFlags, ProcessEnricher
from tests.unit.ring_bytes import decoder, event


def fake_proc(root: Path, pid: int, exe: str, ppid: int, cgroup: str) -> Path:
    """A procfs with one process, as prometheus client_python's tests do."""
    base = root / str(pid)
    base.mkdir(parents=True)
    (base / "exe").symlink_to(exe)
    (base / "stat").write_text(f"{pid} (cu rl) S {ppid} {pid} {pid} 0 -1 4194560\n")
    (base / "cgroup").write_text(f"12:pids:/\n0::{cgroup}\n")
    return root


def test_attribution_says_where_it_came_from(tmp_path: Path) -> None:
    labels = {
        42: abi.Labels(
            source=abi.Source.ENGINE, agent=b"a1", project=b"p1", container_id=b"c" * 64
        ),
        43: abi.Labels(agent=b"a2", path=b"/sys/fs/cgroup/x"),
        44: abi.Labels(agent=b"a3", path=b"/sys/fs/cgroup/docker/" + b"d" * 64),
        45: abi.Labels(path=b"/sys/fs/cgroup/x"),
    }
    flags = {"c" * 64: ContainerFlags("cap_net_raw", "unknown_policy")}
    enricher = AttributionEnricher(labels.get, flags.get, proc=tmp_path)
    rec, static, by_path, bare, stray = decoder().decode_all(
        [event(cgroup_id=n, task_cgroup_id=n) for n in (42, 43, 44, 45, 77)]
    )
    enricher.enrich([rec, static, by_path, bare, stray])
    assert (rec.agent, rec.project, rec.container_id, rec.attribution) == (
        "a1",
        "p1",
        "c" * 64,
        "engine",
    )
    assert (rec.escape, rec.policy_reason) == ("cap_net_raw", "unknown_policy")
    assert (static.agent, static.container_id, static.attribution) == ("a2", "", "static")
    assert (by_path.agent, by_path.container_id, by_path.attribution, by_path.escape) == (
        "a3",
        "d" * 64,
        "cgroup_path",
        None,
    )
    assert (bare.container_id, bare.attribution) == ("", "enrolled_without_labels")
    assert (stray.agent, stray.attribution) == ("", "cgroup_not_enrolled")


def test_a_task_below_a_static_enrollment_is_attributed_from_its_cgroup(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 100, "/usr/bin/curl", 7, "/static/docker-" + "e" * 64 + ".scope")
    labels = {42: abi.Labels(agent=b"a1", path=b"/sys/fs/cgroup/static")}
    enricher = AttributionEnricher(labels.get, proc=proc)
    (rec,) = decoder().decode_all([event(pid=100, cgroup_id=42, task_cgroup_id=43)])
    enricher.enrich([rec])
    assert (rec.agent, rec.container_id, rec.attribution) == ("a1", "e" * 64, "cgroup_path")


def test_process_detail_while_the_process_is_there(tmp_path: Path) -> None:
    enricher = ProcessEnricher(fake_proc(tmp_path, 100, "/usr/bin/curl", 7, "/"))
    alive, gone = decoder().decode_all([event(pid=100), event(pid=200)])
    enricher.enrich([alive, gone])
    assert (alive.exe, alive.ppid) == ("/usr/bin/curl", 7)
    assert (gone.exe, gone.ppid) == (None, None)
    assert "exe" not in msgspec.json.decode(msgspec.json.encode(gone))
