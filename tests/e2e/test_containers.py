"""Containers from a real Docker engine: enrolled by label or by id, attributed, released.

Traffic goes only to addresses on a bridge network this module makes (its own
subnet, no iptables, no forwarding: dockerd runs with --iptables=false
--ip-forward=false), or nowhere at all (--network none).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.types import IPAMConfig, IPAMPool

from netlogger.config.check import check_source
from netlogger.config.model import Containers
from netlogger.config.source import parse
from netlogger.container_watch import ContainerWatch, Ops
from netlogger.containers import Engine
from netlogger.enforce import Enforcer
from netlogger.kernel import cgroup, loader
from tests.e2e.conftest import AgentProcess, decisions

pytestmark = pytest.mark.docker

# A local image with busybox `nc` (built by .ci/monitor-setup.sh: no registry is reachable).
IMAGE = "curlimages/curl:8.11.1"


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    host = os.environ.get("DOCKER_HOST")
    if not host:
        if os.environ.get("CI"):
            pytest.fail("DOCKER_HOST is unset; CI must start dockerd (.ci/monitor-setup.sh)")
        pytest.skip("no Docker engine")
    client = docker.DockerClient(base_url=host)
    yield client
    client.close()


def start(
    engine: docker.DockerClient,
    parent: str | None = None,
    command: list[str] | None = None,
    run: dict[str, Any] | None = None,
    **labels: str,
) -> Any:
    options: dict[str, Any] = run or {}
    if "network" not in options:
        options.setdefault("network_mode", "none")
    return engine.containers.run(
        IMAGE,
        command or ["sleep", "300"],
        entrypoint=[],
        detach=True,
        name=f"nltest-{uuid.uuid4().hex[:8]}",
        labels=labels,
        cgroup_parent=parent,
        **options,
    )


@pytest.fixture
def container(engine: docker.DockerClient, scope) -> Iterator[Any]:
    """Containers whose cgroups the engine makes inside the test's scope (--cgroup-parent)."""
    made: list[Any] = []
    parent = "/" + str(scope.path.relative_to(cgroup.find_mount().path))

    def run(
        command: list[str] | None = None, run: dict[str, Any] | None = None, **labels: str
    ) -> Any:
        made.append(start(engine, parent, command, run, **labels))
        return made[-1]

    yield run
    for c in made:
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True)
    for v1 in Path("/sys/fs/cgroup").glob(f"*/{parent.lstrip('/')}"):
        with contextlib.suppress(OSError):
            v1.rmdir()  # the engine made the parent in every v1 hierarchy too


def wait_enrolled(agent: AgentProcess, container_id: str, present: bool = True) -> dict | None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = [e for e in agent.status()["enrolled"] if e["container_id"] == container_id]
        if bool(found) == present:
            return found[0] if found else None
        time.sleep(0.1)
    raise AssertionError(f"container {container_id[:12]} never {'en' if present else 'un'}rolled")


def test_labelled_container_is_enrolled_attributed_and_released(agent, container) -> None:
    c = container(**{"dev.clawker.agent": "agent-x", "dev.clawker.project": "proj-y"})
    entry = wait_enrolled(agent, c.id)
    assert entry is not None
    assert (entry["agent"], entry["project"], entry["policy"]) == ("agent-x", "proj-y", "default")
    code, output = c.exec_run(["nc", "-w", "1", "198.18.0.2", "22"])
    assert code != 0 and b"Operation not permitted" in output
    lines = agent.wait_for_lines(lambda ls: len(decisions(ls)) >= 1)
    (rec,) = decisions(lines)
    assert (rec["action"], rec["container_id"], rec["agent"], rec["project"], rec["comm"]) == (
        "denied",
        c.id,
        "agent-x",
        "proj-y",
        "nc",
    )
    c.kill()
    assert wait_enrolled(agent, c.id, present=False) is None


def test_enroll_by_container_id(agent, container) -> None:
    c = container()  # no labels: the watcher leaves it alone
    result = agent.cli("enroll", "--container", c.short_id, "--agent", "manual")
    assert result.returncode == 0, result.stderr
    entry = wait_enrolled(agent, c.id)
    assert entry is not None and entry["agent"] == "manual"
    assert entry["path"].endswith(c.id) or c.id in entry["path"]


def test_container_outside_the_scope_is_refused(agent, engine) -> None:
    c = engine.containers.run(
        IMAGE,
        ["sleep", "300"],
        entrypoint=[],
        detach=True,
        network_mode="none",
        name=f"nltest-{uuid.uuid4().hex[:8]}",
    )
    try:
        result = agent.cli("enroll", "--container", c.id)
        assert result.returncode == 2
        assert "is outside the agent's scope" in result.stderr
        assert agent.status()["enrolled"] == []
    finally:
        c.remove(force=True)


def test_automatic_enrollment_and_release_are_in_the_audit_trail(agent, container) -> None:
    c = container(**{"dev.clawker.agent": "agent-x"})
    entry = wait_enrolled(agent, c.id)
    assert entry is not None and entry["container_name"] == c.name
    c.exec_run(["nc", "-w", "1", "198.18.0.2", "22"])
    c.kill()
    wait_enrolled(agent, c.id, present=False)

    def audit_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # The engine is shared: other tests' labelled containers are refused (outside the scope).
        return [
            x
            for x in lines
            if x["event.name"] == "ebpf.egress.control" and x.get("container_id") == c.id
        ]

    lines = agent.wait_for_lines(lambda ls: len(audit_of(ls)) >= 2)
    audit = audit_of(lines)
    # Whichever saw it first enrolls it, once: the start event, or the watcher's listing
    # of running containers when that came after the start.
    assert audit[0].pop("control.trigger") in ("container_start", "container_running"), audit
    common = {
        "event.name": "ebpf.egress.control",
        "control.result": "done",
        "control.by": "agent",
        "control.target": f"container {c.name}",
        "cgroup_id": str(entry["cgroup_id"]),
        "cgroup_path": entry["path"],
        "container_id": c.id,
        "container_name": c.name,
        "agent": "agent-x",
    }
    assert [{k: v for k, v in r.items() if k not in ("ts", "host.name")} for r in audit] == [
        {
            **common,
            "control.command": "enroll",
            "control.mode_after": "enforce",
            "control.policy_after": "default",
        },
        {
            **common,
            "control.command": "unenroll",
            "control.trigger": "container_stop",
            "control.target": f"cgroup id {entry['cgroup_id']}",
            "control.mode_before": "enforce",
            "control.policy_before": "default",
        },
    ]
    (rec,) = decisions(lines)
    assert (rec["container_id"], rec["container_name"]) == (c.id, c.name)
    by_name = agent.cli("tail", "--no-follow", "--json", "--container", c.name)
    by_id = agent.cli("tail", "--no-follow", "--json", "--container", c.short_id)
    assert by_name.returncode == by_id.returncode == 0, by_name.stderr + by_id.stderr
    assert by_name.stdout == by_id.stdout
    assert [json.loads(x)["event.name"] for x in by_name.stdout.splitlines()] == [
        "ebpf.egress.control",  # enroll
        "ebpf.egress.connect",  # the deny
        "ebpf.egress.control",  # unenroll
    ]
    human = agent.cli("tail", "--no-follow", "--no-color", "--action", "denied")
    assert f"agent-x ({c.name})  nc[" in human.stdout


SELECTED = {"dev.clawker.agent": "agent-z", "dev.clawker.project": "proj-z"}


@dataclass(frozen=True)
class Bridge:
    name: str
    subnet: str
    gateway: str  # the host's address on the bridge
    denied: str  # an address on the bridge that nothing holds; the policy denies it


@pytest.fixture(scope="module")
def bridge() -> Iterator[Bridge]:
    """A Docker bridge network of this module's own: its own subnet and bridge device."""
    client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"])
    tag = uuid.uuid4().hex[:8]
    net = None
    for third in random.sample(range(20, 250), 20):  # other tests may hold some subnets
        subnet = f"10.213.{third}.0/24"
        pool = IPAMPool(subnet=subnet, gateway=f"10.213.{third}.1")
        try:
            net = client.networks.create(
                f"nltest-{tag}",
                driver="bridge",
                ipam=IPAMConfig(pool_configs=[pool]),
                options={"com.docker.network.bridge.name": f"nlbr-{tag}"},
            )
            break
        except docker.errors.APIError as exc:
            if "overlap" not in str(exc):
                raise
    assert net is not None, "no free 10.213.x.0/24 subnet"
    try:
        yield Bridge(net.name, subnet, f"10.213.{third}.1", f"10.213.{third}.200")
    finally:
        net.remove()
        client.close()


def bridge_policies(bridge: Bridge) -> dict[str, Any]:
    return {
        "default": {"allow": [{"cidr": f"{bridge.gateway}/32", "ports": [8080], "name": "gw"}]},
        "open": {"allow": [{"cidr": "0.0.0.0/0", "ports": ["1-65535"], "name": "all"}]},
    }


def connected(agent: AgentProcess) -> AgentProcess:
    """The agent once its container watch follows the engine's events."""
    deadline = time.monotonic() + 20
    while agent.status()["containers"]["state"] != "connected":
        assert time.monotonic() < deadline, agent.status()["containers"]
        time.sleep(0.05)
    return agent


def first_decision(agent: AgentProcess, container_id: str) -> dict[str, Any]:
    lines = agent.wait_for_lines(
        lambda ls: any(x.get("container_id") == container_id for x in decisions(ls))
    )
    mine = [x for x in decisions(lines) if x["container_id"] == container_id]
    return min(mine, key=lambda x: x["seq"])


def test_first_connect_of_a_new_container_is_denied_20_of_20(
    agent_factory, container, bridge
) -> None:
    """Enrolled by the kernel at mkdir: the entrypoint's first connect is already governed."""
    agent = connected(agent_factory(policies=bridge_policies(bridge)).start())
    assert agent.status()["containers"]["enrolled_at"] == "cgroup_mkdir"
    for _ in range(20):
        c = container(["nc", "-w", "1", bridge.denied, "22"], {"network": bridge.name}, **SELECTED)
        assert c.wait(timeout=30)["StatusCode"] != 0
        log = c.logs().decode()
        assert log.splitlines()[0].endswith("Operation not permitted"), log
        rec = first_decision(agent, c.id)
        assert (rec["seq"], rec["action"], rec["reason"], rec["dst_ip"], rec["dst_port"]) == (
            0,
            "denied",
            "default_deny",
            bridge.denied,
            "22",
        )
        assert (rec["agent"], rec["project"], rec["attribution"], rec["comm"]) == (
            "agent-z",
            "proj-z",
            "engine",
            "nc",
        )
        # nc may have exited before its record was read: then it has no exe (enrich.py).
        assert rec.get("exe") in (None, "/bin/busybox")
        c.remove(force=True)
        wait_enrolled(agent, c.id, present=False)


def test_unlabelled_container_is_not_enrolled(agent_factory, container, bridge) -> None:
    agent = agent_factory(policies=bridge_policies(bridge)).start()
    c = container(["nc", "-w", "1", bridge.denied, "22"], {"network": bridge.name})
    c.wait(timeout=30)
    assert "Operation not permitted" not in c.logs().decode()  # it went out, to nobody
    assert [e for e in agent.status()["enrolled"] if e["container_id"] == c.id] == []
    assert c.id not in [k["id"] for k in agent.status()["containers"]["containers"]]
    assert [x for x in decisions(agent.lines()) if x.get("container_id") == c.id] == []


def test_container_started_before_the_agent_is_enrolled_and_attributed(
    agent_factory, container
) -> None:
    c = container(**SELECTED)
    agent = agent_factory().start()
    entry = wait_enrolled(agent, c.id)
    assert entry is not None and (entry["agent"], entry["source"]) == ("agent-z", "engine")
    _, output = c.exec_run(["nc", "-w", "1", "198.18.0.2", "22"])
    assert b"Operation not permitted" in output
    rec = first_decision(agent, c.id)
    assert (rec["action"], rec["agent"], rec["project"], rec["attribution"]) == (
        "denied",
        "agent-z",
        "proj-z",
        "engine",
    )
    # A process that outlives its first record gets its executable and parent pid:
    # syslogd forwarding to a denied address (sendmsg4), fed by logger.
    c.exec_run(["busybox", "syslogd", "-n", "-R", "198.18.0.2:514"], detach=True)
    deadline = time.monotonic() + 20
    while not [x for x in decisions(agent.lines()) if x.get("dst_port") == "514"]:
        assert time.monotonic() < deadline, "syslogd never sent"
        c.exec_run(["busybox", "logger", "netlogger test"])
        time.sleep(0.2)
    (sent, *_) = [x for x in decisions(agent.lines()) if x.get("dst_port") == "514"]
    assert (sent["event.name"], sent["action"], sent["dst_port"]) == (
        "ebpf.egress.sendmsg",
        "denied",
        "514",
    )
    assert (sent["comm"], sent["exe"]) == ("busybox", "/bin/busybox")
    top = c.top(ps_args="-o pid,ppid,args")["Processes"]
    assert [int(p[1]) for p in top if int(p[0]) == sent["pid"]] == [sent["ppid"]]


def test_restart_enrolls_the_new_cgroup_and_drops_the_old(agent, container) -> None:
    c = container(**SELECTED)
    before = wait_enrolled(agent, c.id)
    assert before is not None
    c.restart(timeout=0)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ids = [e["cgroup_id"] for e in agent.status()["enrolled"] if e["container_id"] == c.id]
        if ids and before["cgroup_id"] not in ids:
            break
        time.sleep(0.1)
    (after,) = [e for e in agent.status()["enrolled"] if e["container_id"] == c.id]
    assert after["cgroup_id"] != before["cgroup_id"]
    assert Path(after["path"]).stat().st_ino == after["cgroup_id"]
    _, output = c.exec_run(["nc", "-w", "1", "198.18.0.2", "22"])
    assert b"Operation not permitted" in output
    c.stop(timeout=0)
    assert wait_enrolled(agent, c.id, present=False) is None
    # Stopped, not removed: a start again is enrolled again (the expectation stays).
    c.start()
    assert wait_enrolled(agent, c.id) is not None


def test_events_twice_late_or_out_of_order_leave_no_stale_entry(scope, pin_root, container) -> None:
    """The watcher's handler fed by hand: each event re-reads the engine, whatever its order."""
    policies = check_source(parse("policies: {default: {}}", "p.yaml")).policies
    with loader.loaded(pin_root, scope) as plane:
        enforcer = Enforcer(plane, policies)
        enforcer.apply_policies(policies)
        ops = Ops(
            lambda target, _container, _trigger: enforcer.enroll(target),  # no backstop here
            lambda cgroup_id, _trigger: enforcer.unenroll(cgroup_id),
            enforcer.enrolled,
            enforcer.expect,
            enforcer.unexpect,
            enforcer.expected,
        )
        watch = ContainerWatch(
            Containers(engine=os.environ["DOCKER_HOST"]), ops, {"default"}.copy, None, scope.path
        )
        eng = Engine(os.environ["DOCKER_HOST"])
        try:

            def mine() -> list[int]:
                return [e.cgroup_id for e in enforcer.enrolled() if e.container_id == c.id]

            c = container(**SELECTED)
            watch.handle(eng, "create", c.id)  # late: its cgroup exists already
            watch.handle(eng, "start", c.id)
            watch.handle(eng, "start", c.id)  # twice
            (first,) = mine()
            watch.handle(eng, "die", c.id)  # a die that is not true (any more)
            assert mine() == [first]
            c.restart(timeout=0)  # the kernel enrolls the new cgroup at mkdir
            (second,) = [i for i in mine() if i != first]
            watch.handle(eng, "die", c.id)  # the restart's die, late: the old cgroup goes
            watch.handle(eng, "start", c.id)
            assert mine() == [second]
            c.kill()
            c.wait(timeout=30)
            watch.handle(eng, "start", c.id)  # a start arriving after its die
            assert mine() == []
            assert len(enforcer.expected()) == 1  # a stopped container may start again
            c.remove(force=True)
            watch.handle(eng, "die", c.id)
            watch.handle(eng, "destroy", c.id)
            watch.handle(eng, "destroy", c.id)
            watch.handle(eng, "start", c.id)  # after destroy: nothing comes back
            assert (mine(), enforcer.expected()) == ([], {})
            assert watch.status()["containers"] == []
        finally:
            eng.close()


def test_unknown_policy_label_is_enrolled_denying_everything(
    agent_factory, container, bridge
) -> None:
    agent = connected(agent_factory(policies=bridge_policies(bridge)).start())
    c = container(
        ["nc", "-w", "1", bridge.gateway, "8080"],
        {"network": bridge.name},
        **SELECTED,
        **{"dev.clawker.policy": "no-such-policy"},
    )
    c.wait(timeout=30)
    assert c.logs().decode().splitlines()[0].endswith("Operation not permitted")
    rec = first_decision(agent, c.id)
    assert (rec["action"], rec["policy"], rec["policy_reason"], rec["reason"]) == (
        "denied",
        "_deny_all",
        "unknown_policy",
        "default_deny",
    )
    status = agent.status()
    (known,) = [k for k in status["containers"]["containers"] if k["id"] == c.id]
    assert (known["policy"], known["policy_reason"]) == ("_deny_all", "unknown_policy")
    assert any(
        "label dev.clawker.policy='no-such-policy' names no policy" in n
        and "_deny_all, which allows nothing" in n
        for n in status["notes"]
    )


def test_malformed_policy_label_fails_closed(agent, container) -> None:
    c = container(**SELECTED, **{"dev.clawker.policy": "_deny_nothing"})
    entry = wait_enrolled(agent, c.id)
    assert entry is not None
    assert (entry["policy"], entry["policy_reason"]) == ("_deny_all", "malformed_policy")


def test_escapes_are_flagged(agent, container) -> None:
    raw = container(run={"cap_add": ["NET_RAW"]}, **SELECTED)
    admin = container(run={"cap_add": ["NET_ADMIN"], "cap_drop": ["NET_RAW"]}, **SELECTED)
    host = container(run={"network_mode": "host", "cap_drop": ["NET_RAW"]}, **SELECTED)
    joined = container(
        run={"network_mode": f"container:{raw.id}", "cap_drop": ["NET_RAW"]}, **SELECTED
    )
    tame = container(run={"cap_drop": ["NET_RAW"]}, **SELECTED)
    for c in (raw, admin, host, joined, tame):
        wait_enrolled(agent, c.id)
    status = agent.status()
    kinds = {k["id"]: [e["kind"] for e in k["escapes"]] for k in status["containers"]["containers"]}
    assert kinds[raw.id] == ["cap_net_raw"]
    assert kinds[admin.id] == ["cap_net_admin"]
    assert kinds[host.id] == ["host_network"]
    assert kinds[joined.id] == ["shared_netns"]
    assert kinds[tame.id] == []
    by_id = {e["container_id"]: e for e in status["enrolled"]}
    assert by_id[raw.id]["escape"] == "cap_net_raw" and by_id[tame.id]["escape"] is None
    assert any(
        raw.id[:12] in n and "AF_PACKET" in n and "CAP_NET_RAW" in n for n in status["notes"]
    )
    _, output = raw.exec_run(["nc", "-w", "1", "198.18.0.2", "22"])
    assert b"Operation not permitted" in output
    rec = first_decision(agent, raw.id)
    assert (rec["action"], rec["escape"]) == ("denied", "cap_net_raw")
    assert agent.metric("netlogger_containers_flagged") == 4
