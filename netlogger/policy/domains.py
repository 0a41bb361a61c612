"""Domain names in policy rules: what a valid one is, and the form the kernel matches.

A rule names one host (`api.github.com`) or every name below one
(`*.pythonhosted.org`, which does not match `pythonhosted.org` itself). The
kernel matches the question of a DNS answer in an LPM trie keyed on the name
with a dot before each label, byte-reversed (bpf/netlogger.h, nl_domain_key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netlogger.kernel import abi

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")
# The kernel's key holds the dotted name and a terminator in DNS_NAME_MAX bytes.
NAME_MAX = abi.DNS_NAME_MAX - 2


@dataclass(frozen=True)
class Domain:
    base: str  # lowercase, no trailing dot, no "*."
    wildcard: bool  # every name strictly below `base`

    def __str__(self) -> str:
        return f"*.{self.base}" if self.wildcard else self.base

    def key_name(self) -> bytes:
        """The reversed name of this rule's nl_domains key (exact ones end in a NUL)."""
        rev = ("." + self.base).encode()[::-1]
        return rev if self.wildcard else rev + b"\0"

    def matches(self, name: str) -> bool:
        return name.endswith("." + self.base) if self.wildcard else name == self.base


def parse_domain(text: str | None) -> Domain:
    """A rule's `domain:` value, or ValueError saying what is wrong with it."""
    if not isinstance(text, str) or not text:
        raise ValueError("a domain is a name like api.github.com or *.pythonhosted.org")
    if not text.isascii():
        raise ValueError(f"domain {text!r} is not ASCII: write its punycode (xn--) form")
    name = text.lower().removesuffix(".")
    wildcard = name.startswith("*.")
    base = name[2:] if wildcard else name
    if not base:
        raise ValueError(f"domain {text!r} names no host")
    if "*" in base:
        raise ValueError(f"domain {text!r}: a wildcard is only allowed as the first label, `*.`")
    if len(base) > NAME_MAX:
        raise ValueError(f"domain {text!r} is longer than {NAME_MAX} characters")
    for label in base.split("."):
        if not label:
            raise ValueError(f"domain {text!r} has an empty label")
        if len(label) > 63:
            raise ValueError(f"domain {text!r}: label {label!r} is longer than 63 characters")
        if not _LABEL.match(label):
            raise ValueError(
                f"domain {text!r}: label {label!r} may hold only letters, digits, '-' and '_', "
                "and may not start or end with '-'"
            )
    return Domain(base, wildcard)
