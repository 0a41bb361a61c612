"""One CLI voice, on the real agent: version, color, exit codes, and commands that agree."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from netlogger import __version__, sandbox
from tests.e2e.conftest import REPO, AgentProcess, netlogger

STATUS_KEYS = {
    "agent", "enrolled", "records", "losses", "ring", "dns", "sinks", "tail_subscribers", "notes",
    "layers", "containers",
}  # fmt: skip
ENTRY_KEYS = {
    "cgroup_id", "path", "level", "policy", "mode", "bypass_left_s", "agent", "project",
    "container_id", "seq", "throttled", "ringbuf_lost", "raw_capable", "resolver_paths",
    "veths", "layers", "open", "source", "escape", "policy_reason",
}  # fmt: skip


def test_version() -> None:
    result = netlogger("--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"netlogger {__version__}\n",
        "",
    )


def test_unenroll_says_what_it_did(agent, scope) -> None:
    with sandbox.cgroup(scope, "web") as cg:
        agent.cli("enroll", "--cgroup", str(cg.path), "--agent", "a1")
        result = agent.cli("unenroll", "--cgroup", str(cg.path))
    assert (result.returncode, result.stdout) == (
        0,
        f"unenrolled {cg.path} (cgroup id {cg.id}; was enforce under policy default, "
        "0 decisions): its traffic now passes unrecorded\n",
    )


def raw_column(table: str) -> list[str]:
    header, *rows = table.splitlines()
    at = header.index("RAW")
    notes = ("RAW ", "OPEN ")  # the footnotes under the table
    return [row[at:].split()[0] for row in rows if row and not row.startswith(notes)]


def test_enroll_bypass_and_status_agree_about_cap_net_raw(agent, scope, spawn) -> None:
    with sandbox.cgroup(scope, "raw") as raw, sandbox.cgroup(scope, "plain") as plain:
        spawn(raw)  # a root task: it holds CAP_NET_RAW
        enrolled = agent.cli("enroll", "--cgroup", str(raw.path))
        bypassed = agent.cli("bypass", "--cgroup", str(raw.path), "--for", "10m")
        other = agent.cli("enroll", "--cgroup", str(plain.path))
        status = agent.cli("status")
        as_json = json.loads(agent.cli("status", "--json").stdout)
    assert raw_column(enrolled.stdout) == raw_column(bypassed.stdout) == ["yes"]
    assert (
        "RAW yes: a task there holds CAP_NET_RAW (packet sockets: see LAYERS/OPEN, -o wide)"
        in enrolled.stdout.splitlines()
    )
    assert raw_column(other.stdout) == ["no"]
    table = status.stdout[status.stdout.index("ENROLLED") :].split("\n\n")[0].split("\n", 1)[1]
    rows = table.splitlines()[1:]
    paths = [row.split()[0] for row in rows if not row.startswith(("RAW ", "OPEN "))]
    assert dict(zip(paths, raw_column(table), strict=True)) == {"raw": "yes", "plain": "no"}
    assert {e["path"]: e["raw_capable"] for e in as_json["enrolled"]} == {
        str(raw.path): True,
        str(plain.path): False,
    }


def test_status_fits_100_columns_and_wide_shows_everything(agent, scope) -> None:
    with (
        sandbox.cgroup(scope, "team-with-a-long-name") as team,
        sandbox.cgroup(team, "agents-builder-7-session-0123456789abcdef") as cg,
    ):
        agent.cli(
            "enroll", "--cgroup", str(cg.path), "--agent", "an-agent-with-a-long-name",
            "--project", "a-project-with-a-long-name",
        )  # fmt: skip
        agent.cli("bypass", "--cgroup", str(cg.path), "--for", "10m")
        narrow = agent.cli("status")
        wide = agent.cli("status", "-o", "wide")
        as_json = json.loads(agent.cli("status", "--json").stdout)
    assert narrow.returncode == wide.returncode == 0
    too_long = [line for line in narrow.stdout.splitlines() if len(line) > 100]
    assert too_long == []
    lines = narrow.stdout.splitlines()
    at = lines.index("ENROLLED  (paths under the scope; all columns: -o wide)")
    assert lines[at + 1].split() == [
        "CGROUP", "POLICY", "MODE", "AGENT", "CONTAINER", "DECISIONS", "LOST", "RAW",
    ]  # fmt: skip
    row = lines[at + 2].replace("bypass 599s", "bypass 600s")  # a second may have passed
    assert row == (
        "team-with-a-l…3456789abcdef  default  bypass 600s  an-agen…ong-name  -          0"
        "          0     no"
    )
    assert str(cg.path) in wide.stdout and "an-agent-with-a-long-name" in wide.stdout
    assert "a-project-with-a-long-name" in wide.stdout
    assert set(as_json) == STATUS_KEYS and set(as_json["enrolled"][0]) == ENTRY_KEYS
    assert as_json["enrolled"][0]["path"] == str(cg.path)


def tail_output(agent: AgentProcess, *args: str, env: dict[str, str], tty: bool) -> str:
    cmd = [sys.executable, "-m", "netlogger", "tail", "--no-follow", *args]
    cmd += ["--control-socket", str(agent.socket)]
    if not tty:
        return subprocess.run(
            cmd, capture_output=True, text=True, cwd=REPO, env=env, check=True
        ).stdout
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=follower, stderr=subprocess.DEVNULL, cwd=REPO, env=env)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the tail exited and the terminal closed
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(30) == 0
    os.close(leader)
    return out.decode()


def test_color_follows_the_terminal_no_color_and_the_flag(agent, scope) -> None:
    with sandbox.cgroup(scope, "web") as cg:
        agent.cli("enroll", "--cgroup", str(cg.path))
    plain = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    no_color = {**plain, "NO_COLOR": "1"}
    colored = {
        ("pipe", "default"): "\033[" in tail_output(agent, env=plain, tty=False),
        ("pipe", "--color"): "\033[" in tail_output(agent, "--color", env=plain, tty=False),
        ("tty", "default"): "\033[" in tail_output(agent, env=plain, tty=True),
        ("tty", "NO_COLOR"): "\033[" in tail_output(agent, env=no_color, tty=True),
        ("tty", "NO_COLOR --color"): "\033["
        in tail_output(agent, "--color", env=no_color, tty=True),
        ("tty", "--no-color"): "\033[" in tail_output(agent, "--no-color", env=plain, tty=True),
    }
    assert colored == {
        ("pipe", "default"): False,
        ("pipe", "--color"): True,
        ("tty", "default"): True,
        ("tty", "NO_COLOR"): False,
        ("tty", "NO_COLOR --color"): True,
        ("tty", "--no-color"): False,
    }
