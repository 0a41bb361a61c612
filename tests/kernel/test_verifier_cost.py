"""Every program verifies well inside the verifier's budget, under the agent's own settings.

Older verifiers explore several times the states this one does: 6.1 needed about three
times the host's count for nl_dns_ingress, and at stop 8 a fold path that took 447k
instructions here was past 6.1's 1M budget (E2BIG) while every host test passed. A program
that creeps towards a quarter of the budget here fails this test, before it fails in the guest.
"""

from __future__ import annotations

from netlogger.kernel import cgroup, loader

HOST_SHARE = 4  # at most budget / HOST_SHARE instructions on the test host


def test_every_program_verifies_well_inside_the_budget(scope: cgroup.Cgroup) -> None:
    counts = loader.trial(scope)
    assert "nl_connect4" in counts and all(n > 0 for n in counts.values()), counts
    heavy = {n: c for n, c in counts.items() if c > loader.VERIFIER_BUDGET // HOST_SHARE}
    assert heavy == {}, f"verified instructions past budget/{HOST_SHARE}: {heavy}"
