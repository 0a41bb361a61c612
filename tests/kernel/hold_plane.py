"""A bare loader process for the restart test: load, apply, enroll, then idle.

Usage: python -m tests.kernel.hold_plane PIN_ROOT SCOPE CGROUP POLICY_FILE
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from netlogger.config.check import check_file
from netlogger.enforce import Enforcer, Target
from netlogger.kernel import cgroup, loader


def main() -> None:
    pin_root, scope, cg, policy_file = sys.argv[1:5]
    policies = check_file(Path(policy_file)).policies
    plane = loader.load(Path(pin_root), cgroup.resolve(scope))
    enforcer = Enforcer(plane, policies)
    enforcer.apply_policies(policies)
    enforcer.enroll(Target(cgroup.resolve(cg)))
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
