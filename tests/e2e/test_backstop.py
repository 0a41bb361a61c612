"""The container backstop on a real container's veth, through the real agent.

The container sits on a Docker bridge network of this test's own (dockerd runs
with --iptables=false) and holds CAP_NET_RAW, as Docker grants by default. Its
frames go only to addresses of the test bridge's subnet and to the broadcast
MAC. A listener on the bridge device sees only what passed the veth's ingress,
where the backstop sits; it is shown to see the same frames before the backstop.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from netlogger.kernel import cgroup
from tests.e2e.conftest import AgentProcess, decisions
from tests.e2e.test_containers import IMAGE, engine, wait_enrolled  # noqa: F401 (fixture)

pytestmark = pytest.mark.docker

FRAMES_C = Path(__file__).with_name("frames") / "frames.c"
ETH_P_ALL, EXPERIMENTAL = 0x0003, 0x88B5
BROADCAST = b"\xff" * 6


@pytest.fixture(scope="module")
def frames_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The container-side probe, static so it runs in the busybox image."""
    out = tmp_path_factory.mktemp("frames") / "frames"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(out), str(FRAMES_C)], check=True)
    return out


class Bridge:
    def __init__(self, client: docker.DockerClient) -> None:
        self.third = random.randrange(1, 250)
        self.subnet = f"10.213.{self.third}.0/24"
        self.gateway = f"10.213.{self.third}.1"
        self.denied = f"10.213.{self.third}.77"  # no rule allows it; nothing answers there
        self.device = f"nlbs{uuid.uuid4().hex[:8]}"
        ipam = docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=self.subnet, gateway=self.gateway)]
        )
        self.network = client.networks.create(
            self.device,
            driver="bridge",
            ipam=ipam,
            options={"com.docker.network.bridge.name": self.device},
        )


@pytest.fixture
def bridge(engine: docker.DockerClient) -> Iterator[Bridge]:  # noqa: F811
    b = Bridge(engine)
    yield b
    b.network.remove()


@pytest.fixture
def netcontainer(engine, bridge, scope, frames_binary) -> Iterator[Any]:  # noqa: F811
    parent = "/" + str(scope.path.relative_to(cgroup.find_mount().path))
    c = engine.containers.run(
        IMAGE,
        ["sleep", "300"],
        entrypoint=[],
        detach=True,
        name=f"nltest-{uuid.uuid4().hex[:8]}",
        labels={"dev.clawker.agent": "raw-agent"},
        network=bridge.network.name,
        cgroup_parent=parent,
        volumes={str(frames_binary): {"bind": "/nl-frames", "mode": "ro"}},
    )
    c.reload()
    yield c
    with contextlib.suppress(docker.errors.NotFound):  # the test may have removed it
        c.remove(force=True)


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp_frame(src_mac: bytes, src: str, dst: str, port: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, socket.IPPROTO_UDP, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return BROADCAST + src_mac + struct.pack("!H", 0x0800) + header + udp


def experimental_frame(src_mac: bytes, payload: bytes) -> bytes:
    return BROADCAST + src_mac + struct.pack("!H", EXPERIMENTAL) + payload.ljust(46, b"\0")


class Listener:
    """Every frame the bridge device receives, collected in the background."""

    def __init__(self, device: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((device, 0))
        self.sock.settimeout(0.2)
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.frames.append(self.sock.recv(4096))
            except TimeoutError:
                continue

    def carrying(self, marker: bytes) -> list[bytes]:
        return [f for f in self.frames if marker in f]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def send_both(c: Any, bridge: Bridge) -> tuple[bytes, list[str]]:
    """Send the raw IPv4 packet and the experimental frame from inside `c`."""
    marker = f"nl-backstop-{uuid.uuid4().hex}".encode()
    settings = c.attrs["NetworkSettings"]["Networks"][bridge.network.name]
    mac = bytes.fromhex(settings["MacAddress"].replace(":", ""))
    frames = [
        ipv4_udp_frame(mac, settings["IPAddress"], bridge.denied, 9, marker),
        experimental_frame(mac, marker),
    ]
    result = c.exec_run(["/nl-frames", "send", "eth0", *(f.hex() for f in frames)])
    return marker, result.output.decode().split()


def test_backstop_drops_raw_frames_of_an_enrolled_container(
    agent_factory, bridge, netcontainer
) -> None:
    c = netcontainer
    port = random.randrange(20000, 30000)
    policies = {
        "default": {"allow": [{"cidr": f"{bridge.gateway}/32", "ports": [port], "proto": "tcp"}]}
    }
    listener = Listener(bridge.device)
    try:
        # Not enrolled yet: the listener sees both frames (it can see them at all).
        marker, sent = send_both(c, bridge)
        assert sent == ["ok", "ok"]
        time.sleep(1)
        assert len(listener.carrying(marker)) == 2

        agent: AgentProcess = agent_factory(policies=policies).start()
        entry = wait_enrolled(agent, c.id)
        assert entry is not None
        veth_deadline = time.monotonic() + 10
        while not entry["veths"] and time.monotonic() < veth_deadline:
            time.sleep(0.1)
            entry = wait_enrolled(agent, c.id)
            assert entry is not None
        assert entry["layers"][0] == "cgroup" and "backstop" in entry["layers"]
        assert len(entry["veths"]) == 1 and entry["open"] == []

        marker, sent = send_both(c, bridge)
        assert sent == ["ok", "ok"]  # the socket sends; the frames go no further than tc
        time.sleep(1)
        assert listener.carrying(marker) == []

        lines = agent.wait_for_lines(
            lambda ls: len([x for x in ls if x["event.name"] == "ebpf.egress.packet"]) >= 2
        )
        packets = [x for x in decisions(lines) if x["event.name"] == "ebpf.egress.packet"]
        by_reason = {x["reason"]: x for x in packets}
        assert set(by_reason) == {"default_deny", "ethertype"} and len(packets) == 2
        ip, other = by_reason["default_deny"], by_reason["ethertype"]
        assert (ip["action"], ip["dst_ip"], ip["dst_port"], ip["l4_proto"], ip["family"]) == (
            "denied",
            bridge.denied,
            "9",
            "dgram",
            "inet",
        )
        assert (other["action"], other["ethertype"], other["family"], other["no_dst"]) == (
            "denied",
            "0x88b5",
            "packet",
            True,
        )
        for rec in packets:
            assert rec["cgroup_id"] == str(entry["cgroup_id"]) and rec["container_id"] == c.id

        # What the policy allows still flows, through the same veth.
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((bridge.gateway, port))
            server.listen(1)
            result = c.exec_run(["/nl-frames", "connect", bridge.gateway, str(port)])
            assert (result.exit_code, result.output.decode().strip()) == (0, "ok")
            server.settimeout(5)
            accepted, _ = server.accept()
            accepted.close()

        # A scope narrower than the root: status says what that leaves open.
        notes = agent.status()["notes"]
        assert any("sockets made outside it" in n for n in notes), notes

        c.remove(force=True)
        wait_enrolled(agent, c.id, present=False)
    finally:
        listener.close()
