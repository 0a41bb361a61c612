"""doctor and status name the resolver paths the kernel cannot see, from a file system root."""

from __future__ import annotations

from pathlib import Path

from netlogger import doctor, resolvers


def root_with(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        path = tmp_path / name.replace("__", "/").replace("_conf", ".conf")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_plain_dns_is_ok(tmp_path: Path) -> None:
    root = root_with(
        tmp_path,
        etc__nsswitch_conf="passwd: files\nhosts:          files dns\n",
        etc__resolv_conf="nameserver 198.18.0.53\n",
    )
    assert resolvers.unsupported(root) == []
    assert doctor.resolver_paths(root).status == "ok"


def test_nss_resolve_is_named(tmp_path: Path) -> None:
    root = root_with(tmp_path, etc__nsswitch_conf="hosts: files resolve [!UNAVAIL=return] dns\n")
    check = doctor.resolver_paths(root)
    assert (check.name, check.status) == ("DNS path", "warn")
    assert check.detail.startswith("nss-resolve (hosts: resolve in nsswitch.conf): answers")


def test_a_commented_resolve_is_not(tmp_path: Path) -> None:
    root = root_with(tmp_path, etc__nsswitch_conf="hosts: files dns # resolve\n")
    assert resolvers.unsupported(root) == []


def test_nscd_and_the_stub_are_named(tmp_path: Path) -> None:
    root = root_with(
        tmp_path, run__nscd__socket="", etc__resolv_conf="search x\nnameserver 127.0.0.53\n"
    )
    assert resolvers.unsupported(root) == [
        "nscd (/run/nscd/socket)",
        "systemd-resolved stub (127.0.0.53: name it in dns.resolvers)",
    ]


def test_a_workload_is_read_through_its_tasks_root(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    (cg / "child").mkdir(parents=True)
    (cg / "cgroup.procs").write_text("")
    (cg / "child" / "cgroup.procs").write_text("4242\n")
    proc = tmp_path / "proc"
    root_with(proc / "4242" / "root", etc__nsswitch_conf="hosts: resolve\n")
    assert resolvers.of_cgroup(cg, proc) == ["nss-resolve (hosts: resolve in nsswitch.conf)"]
    assert resolvers.of_cgroup(tmp_path / "proc", tmp_path / "none") is None
