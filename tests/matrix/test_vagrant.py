"""The Vagrant VM definition: valid for Vagrant, and provisioned with the README's commands.

Booting the boxes needs a hypervisor and a box download, neither of which CI has; what CI
can check is that Vagrant accepts the file and that provisioning runs what the README says.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VAGRANT = REPO / "vagrant"


def test_vagrantfile_validates(tmp_path: Path) -> None:
    vagrant = shutil.which("vagrant")
    if vagrant is None:
        if os.environ.get("CI"):
            pytest.fail("vagrant is not installed (source .ci/matrix-setup.sh)")
        pytest.skip("vagrant is not installed")
    env = {
        **os.environ,
        # Vagrant's home and its per-project .vagrant/ go to a temporary directory: the
        # check leaves nothing in ~ or in the checkout.
        "VAGRANT_HOME": str(tmp_path / "home"),
        "VAGRANT_DOTFILE_PATH": str(tmp_path / "dotfile"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
    }
    result = subprocess.run(
        [vagrant, "validate", "--ignore-provider"],
        cwd=VAGRANT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Vagrantfile validated successfully." in result.stdout
    assert "current: Ignoring provider config" in result.stdout
    assert "older: Ignoring provider config" in result.stdout
    assert not (VAGRANT / ".vagrant").exists()


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"^(sudo \./setup\.sh \w+)", text, flags=re.M)


def test_provisioning_runs_the_readme_commands() -> None:
    commands = readme_commands()
    assert commands == ["sudo ./setup.sh demo", "sudo ./setup.sh test"]
    script = (VAGRANT / "provision.sh").read_text()
    run_lines = [line for line in script.splitlines() if line.startswith("sudo ./setup.sh")]
    assert [" ".join(line.split()[:3]) for line in run_lines] == commands
    subprocess.run(["bash", "-n", str(VAGRANT / "provision.sh")], check=True)
