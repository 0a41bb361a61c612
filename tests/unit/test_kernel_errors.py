"""libbpf and kernel refusals -> our error types: one map, complete, chosen by operation."""

from __future__ import annotations

import errno

import pytest

from netlogger import errors
from netlogger.kernel import libbpf
from netlogger.kernel.libbpf import Op


def test_every_operation_has_an_error_type() -> None:
    assert set(libbpf.OP_ERRORS) == set(Op)


def test_every_kernel_error_type_is_reachable() -> None:
    """A KernelError subclass nothing maps to is dead; one missing here is unmapped."""
    reachable = set(libbpf.OP_ERRORS.values()) | set(libbpf.ERRNO_ERRORS.values())
    assert reachable == {errors.KernelError, *errors.KernelError.__subclasses__()}


@pytest.mark.parametrize("op", list(Op))
@pytest.mark.parametrize("err", [errno.EPERM, errno.EACCES])
def test_not_allowed_is_a_privilege_error_whatever_the_operation(op: Op, err: int) -> None:
    exc = libbpf.error_for(err, op, "do a thing")
    assert type(exc) is errors.PrivilegeError and exc.errno == err
    assert str(exc).startswith(f"do a thing: {errno.errorcode[err]} (")
    assert errors.CAPABILITY_HINT in str(exc)


@pytest.mark.parametrize("op", list(Op))
def test_the_operation_not_the_wording_picks_the_type(op: Op) -> None:
    # The words would have said "load" to a prefix parser; the Op says otherwise.
    exc = libbpf.error_for(errno.EINVAL, op, "load the pinned link")
    assert type(exc) is libbpf.OP_ERRORS[op]
    assert str(exc).splitlines()[0] == "load the pinned link: EINVAL (Invalid argument)"


def test_hint_follows_the_reason() -> None:
    exc = libbpf.error_for(errno.ENOENT, Op.MOUNT, "mount x", "do y")
    assert str(exc) == "mount x: ENOENT (No such file or directory); do y"
