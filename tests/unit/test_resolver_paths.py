"""doctor names the resolver paths the kernel cannot see."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlogger import doctor


@pytest.fixture(autouse=True)
def no_nscd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "NSCD_SOCKET", tmp_path / "no-nscd-socket")


def test_plain_dns_is_ok(tmp_path: Path) -> None:
    conf = tmp_path / "nsswitch.conf"
    conf.write_text("passwd: files\nhosts:          files dns\n")
    assert doctor.resolver_paths(conf).status == "ok"


def test_nss_resolve_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "nsswitch.conf"
    conf.write_text("hosts: files resolve [!UNAVAIL=return] dns\n")
    check = doctor.resolver_paths(conf)
    assert (check.name, check.status) == ("DNS path", "warn")
    assert check.detail.startswith("nss-resolve (hosts: resolve in nsswitch.conf) resolve outside")


def test_nscd_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock = tmp_path / "socket"
    sock.touch()
    monkeypatch.setattr(doctor, "NSCD_SOCKET", sock)
    check = doctor.resolver_paths(tmp_path / "missing")
    assert check.status == "warn" and check.detail.startswith(f"nscd ({sock}) resolve outside")
