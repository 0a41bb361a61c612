"""Time from `docker run` to the container's first connect, agent on vs off.

Each run starts a container whose entrypoint connects at once to a listener
on the host's address of a bridge network this bench makes (its own subnet,
no iptables, no forwarding); the time is `docker run` called -> connection
accepted. Selected containers (labelled) are enrolled by the kernel at cgroup
creation when the agent runs, and their policy allows that address, so the
connect completes either way; unselected ones are never looked at. Blocks of
runs alternate agent off / on so drift on this shared machine hits both.

With the agent on, it also counts the selected containers whose first connect
was governed: their first record (seq 0) is that connect.

Usage: sudo DOCKER_HOST=unix:///run/nl-docker.sock python3 -m bench.container_start [--runs N]
"""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import docker
import yaml
from docker.types import IPAMConfig, IPAMPool

from bench.agent import wait_for_agent
from bench.harness import arguments
from netlogger import control, sandbox
from netlogger.kernel import cgroup, pins

IMAGE = "curlimages/curl:8.11.1"  # a busybox rootfs, `docker import`ed (.ci/monitor-setup.sh)
PORT = 8080
SELECTED = {"dev.clawker.agent": "bench", "dev.clawker.project": "bench"}


def bridge(client: docker.DockerClient, stack: ExitStack, tag: str) -> str:
    """A bridge network of the bench's own; returns the host's address on it."""
    for third in random.sample(range(20, 250), 20):
        gateway = f"10.214.{third}.1"
        pool = IPAMPool(subnet=f"10.214.{third}.0/24", gateway=gateway)
        try:
            net = client.networks.create(
                f"nlbench-{tag}",
                driver="bridge",
                ipam=IPAMConfig(pool_configs=[pool]),
                options={"com.docker.network.bridge.name": f"nlbb-{tag}"},
            )
        except docker.errors.APIError as exc:
            if "overlap" in str(exc):
                continue
            raise
        stack.callback(net.remove)
        return gateway
    raise SystemExit("error: no free 10.214.x.0/24 subnet")


@contextmanager
def agent(work: Path, scope: cgroup.Cgroup, gateway: str) -> Iterator[Path]:
    """`netlogger run` watching the engine; yields its JSONL file once it follows events."""
    pin_root = Path(f"/sys/fs/bpf/nlbench-{uuid.uuid4().hex[:8]}")
    jsonl = work / f"{pin_root.name}.jsonl"
    sock = work / f"{pin_root.name}.sock"
    config = work / f"{pin_root.name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "scope": str(scope.path),
                "pin_root": str(pin_root),
                "control_socket": str(sock),
                "sinks": [{"type": "jsonl", "path": str(jsonl)}],
                "policies": {"default": {"allow": [{"cidr": f"{gateway}/32", "ports": [PORT]}]}},
                "containers": {"engine": os.environ["DOCKER_HOST"]},
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "netlogger", "run", "--config", str(config)],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_agent(sock)
        while control.request(sock, "status")["containers"]["state"] != "connected":
            time.sleep(0.05)
        yield jsonl
    finally:
        proc.terminate()
        proc.wait(30)
        pins.teardown(pin_root)


def first_connect(
    client: docker.DockerClient, listener: socket.socket, scope: cgroup.Cgroup, gateway: str,
    network: str, labels: dict[str, str],
) -> tuple[float, str]:  # fmt: skip
    parent = "/" + str(scope.path.relative_to(cgroup.find_mount().path))
    start = time.monotonic()
    c = client.containers.run(
        IMAGE,
        ["nc", "-w", "2", gateway, str(PORT)],
        entrypoint=[],
        detach=True,
        labels=labels,
        network=network,
        cgroup_parent=parent,
    )
    try:
        conn, _ = listener.accept()
        took = time.monotonic() - start
        conn.close()
        c.wait(timeout=30)
        return took, c.id
    finally:
        c.remove(force=True)


def governed(jsonl: Path, container_ids: list[str]) -> int:
    """Selected containers whose first record (seq 0) is their connect to the listener."""
    time.sleep(1)  # the agent writes what it drained
    firsts = set()
    for line in jsonl.read_text().splitlines():
        rec: dict[str, Any] = json.loads(line)
        if rec.get("seq") == 0 and rec.get("dst_port") == str(PORT):
            firsts.add(rec.get("container_id"))
    return len(firsts & set(container_ids))


def main() -> None:
    args = arguments(__doc__, runs=20, blocks=2)
    tag = uuid.uuid4().hex[:8]
    times: dict[tuple[str, str], list[float]] = {}
    governed_count = selected_on = 0
    with ExitStack() as stack:
        client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"])
        stack.callback(client.close)
        gateway = bridge(client, stack, tag)
        network = f"nlbench-{tag}"
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        scope = stack.enter_context(sandbox.cgroup(cgroup.root(), f"nlbench-{tag}"))
        listener = stack.enter_context(socket.create_server((gateway, PORT)))
        listener.settimeout(30)
        per_block = max(1, args.runs // args.blocks)
        for _ in range(args.blocks):
            for mode in ("off", "on"):
                with ExitStack() as running:
                    jsonl = (
                        running.enter_context(agent(work, scope, gateway)) if mode == "on" else None
                    )
                    ids = []
                    for i in range(2 * per_block):
                        kind = "selected" if i % 2 == 0 else "unselected"
                        took, cid = first_connect(
                            client, listener, scope, gateway, network,
                            SELECTED if kind == "selected" else {},
                        )  # fmt: skip
                        times.setdefault((mode, kind), []).append(took)
                        if kind == "selected":
                            ids.append(cid)
                    if jsonl is not None:
                        governed_count += governed(jsonl, ids)
                        selected_on += len(ids)

    print(f"docker run -> first connect accepted, median of {per_block * args.blocks} runs each:")
    for kind in ("selected", "unselected"):
        off = statistics.median(times[("off", kind)])
        on = statistics.median(times[("on", kind)])
        print(
            f"  {kind:10}  agent off {off * 1e3:7.1f} ms   agent on {on * 1e3:7.1f} ms   "
            f"ratio on/off {on / off:.3f}"
        )
    print(
        f"selected containers whose first connect was governed (its record is seq 0): "
        f"{governed_count}/{selected_on}"
    )


if __name__ == "__main__":
    main()
