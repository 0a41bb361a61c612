"""Config file -> Config and compiled policies, or every problem in it, located.

msgspec stops at the first error; people fixing a file want all of them. So
the structure is checked field by field (`_shape`), then the values are
checked and the policies compiled; only a file with no problem is returned.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from netlogger.config import source
from netlogger.config.model import Config, Policy
from netlogger.config.source import Path_, Source
from netlogger.errors import ConfigError
from netlogger.policy.compile import PolicySet, compile_policies
from netlogger.units import parse_duration, parse_size

_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)
_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
Located = tuple[Path_, str]


@dataclass(frozen=True)
class Checked:
    config: Config
    policies: PolicySet
    source: Source


def _split_msgspec(message: str) -> tuple[Path_, str]:
    match = _AT.match(message)
    assert match is not None
    text, at = match.group(1), match.group(2) or ""
    parts: list[str | int] = [m.group(1) or int(m.group(2)) for m in _PART.finditer(at)]
    return tuple(parts), text


def _shape(value: Any, typ: Any, path: Path_) -> list[Located]:
    """Every structural problem of `value` as `typ`, descending through structs and containers."""
    if isinstance(typ, type) and issubclass(typ, msgspec.Struct) and isinstance(value, dict):
        info = msgspec.structs.fields(typ)
        known = {f.encode_name: f for f in info}
        problems: list[Located] = [
            ((*path, key), f"unknown field; expected one of: {', '.join(sorted(known))}")
            for key in value
            if key not in known
        ]
        problems += [
            (path, f"missing required field `{f.encode_name}`")
            for f in info
            if f.required and f.encode_name not in value
        ]
        for key, item in value.items():
            if key in known:
                problems += _shape(item, known[key].type, (*path, key))
        return problems
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is list and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _shape(item, args[0], (*path, i))]
    if origin is dict and isinstance(value, dict):
        return [p for key, item in value.items() for p in _shape(item, args[1], (*path, key))]
    try:
        msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        sub, text = _split_msgspec(str(exc))
        return [((*path, *sub), text)]
    return []


def _values(config: Config, policies: PolicySet) -> list[Located]:
    problems: list[Located] = []
    try:
        parse_size(config.limits.ring_size)
    except ValueError as exc:
        problems.append((("limits", "ring_size"), str(exc)))
    for i, sink in enumerate(config.sinks):
        values = [(key, parse_size) for key in ("max_bytes", "spool_max_bytes")]
        values += [(key, parse_duration) for key in ("timeout", "retry_initial", "retry_max")]
        for key, parse in values:
            if hasattr(sink, key):
                try:
                    parse(getattr(sink, key))
                except ValueError as exc:
                    problems.append((("sinks", i, key), str(exc)))
    known = ", ".join(sorted(policies.policies)) or "none defined"
    for i, enrollment in enumerate(config.enroll):
        if enrollment.policy not in policies.policies:
            problems.append((("enroll", i, "policy"), f"no policy {enrollment.policy!r} ({known})"))
    if config.containers and config.containers.default_policy not in policies.policies:
        problems.append(
            (
                ("containers", "default_policy"),
                f"no policy named {config.containers.default_policy!r} ({known})",
            )
        )
    return problems


def check_source(src: Source, policies_only: bool = False) -> Checked:
    """Validate parsed YAML; raise ConfigError listing every problem."""
    if not isinstance(src.data, dict):
        raise ConfigError([src.problem((), "the file must be a mapping of keys to values")])
    data = src.data
    if policies_only and set(data) - {"policies"}:
        extra = sorted(set(data) - {"policies"})
        raise ConfigError(
            [src.problem((k,), "a policy file holds only `policies:`") for k in extra]
        )
    problems = _shape(data, Config, ())
    if problems:
        # Policies that are well-formed are still compiled, so their problems show up too.
        raw = data.get("policies")
        broken = {path[:2] for path, _ in problems if path[:1] == ("policies",)}
        sound = {
            name: msgspec.convert(value, Policy)
            for name, value in (raw.items() if isinstance(raw, dict) else [])
            if ("policies", name) not in broken and ("policies",) not in broken
        }
        problems += compile_policies(sound)[1]
        raise ConfigError(sorted((src.problem(p, t) for p, t in problems), key=lambda p: p.line))
    config = msgspec.convert(data, Config)
    policies, located = compile_policies(config.policies)
    located += _values(config, policies)
    if located:
        raise ConfigError(sorted((src.problem(p, t) for p, t in located), key=lambda p: p.line))
    return Checked(config, policies, src)


def check_file(path: Path, policies_only: bool = False) -> Checked:
    return check_source(source.load(path), policies_only)


def load_run_config(config_file: Path | None, policy_file: Path | None) -> Checked:
    """The agent's config, with the policies of `policy_file` in place of its own."""
    checked = check_file(config_file) if config_file else check_source(Source("<defaults>", {}))
    if policy_file is None:
        return checked
    policy = check_file(policy_file, policies_only=True)
    config = msgspec.structs.replace(checked.config, policies=policy.config.policies)
    problems = _values(config, policy.policies)
    if problems:
        raise ConfigError([checked.source.problem(path, text) for path, text in problems])
    return Checked(config, policy.policies, checked.source)
