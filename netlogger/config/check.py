"""Config file -> Config and compiled policies, or every problem in it, located.

`validate` is the one check: `policy check` calls it, `run` calls it before it
touches anything (and a reload will). It refuses everything `run` would refuse
about the config's values, so a file that passes starts.

msgspec stops at the first error; people fixing a file want all of them in one
pass. So the structure is checked field by field (`_shape`); the parts that are
broken are then cut away (`_prune`, a cut field takes its default) and the rest
is value-checked and its policies compiled, so a schema error never hides the
value errors beside it. Only a file with no problem is returned.
"""

from __future__ import annotations

import mmap
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from netlogger.config import source
from netlogger.config.model import Config, JsonlSink, Limits, OtlpSink, Sink
from netlogger.config.source import Path_, Source
from netlogger.errors import CgroupError, ConfigError, Problem, UsageError
from netlogger.policy.compile import PolicySet, compile_policies
from netlogger.units import parse_duration, parse_size

Located = tuple[Path_, str]

RING_MAX = 1 << 31  # max_entries is a u32, and the size a power of two
RATE_MAX = 1_000_000_000  # the kernel spaces records by 1e9 // rate ns; more would be 0: no limit
# The kernel keeps tat <= now + tolerance + interval in a u64; at most 2**63 leaves 292
# years of uptime before it could wrap.
TOLERANCE_MAX = 1 << 63
CLI_FLAGS = {
    "scope": "--scope",
    "pin_root": "--pin-root",
    "control_socket": "--control-socket",
    "metrics": "--metrics",
    "sinks": "--sink",
}
_DROP: Any = object()  # a part `_prune` cut away


@dataclass(frozen=True)
class Checked:
    config: Config
    policies: PolicySet
    source: Source


# -- structure -------------------------------------------------------------


def _struct_of(value: Any, typ: Any) -> tuple[Any, Located | None]:
    """The type to read `value` as: an optional's None or type, or a tagged union's member."""
    args = typing.get_args(typ)
    if typing.get_origin(typ) not in (typing.Union, types.UnionType):
        return typ, None
    if value is None and type(None) in args:
        return type(None), None
    members = [a for a in args if a is not type(None)]
    if len(members) == 1:
        return members[0], None
    if not all(isinstance(a, type) and issubclass(a, msgspec.Struct) for a in members):
        return typ, None
    tags = {a.__struct_config__.tag: a for a in members}
    tag_field = members[0].__struct_config__.tag_field
    if not isinstance(value, dict):
        return typ, None
    if tag_field not in value:
        return None, ((), f"missing required field `{tag_field}`")
    if value[tag_field] not in tags:
        return None, ((tag_field,), _not_one_of(value[tag_field], list(tags)))
    return tags[value[tag_field]], None


def _not_one_of(value: Any, accepted: list[Any]) -> str:
    return f"{value!r} is not one of {', '.join(map(str, accepted))}"


def _known(typ: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    return {f.encode_name: f for f in msgspec.structs.fields(typ)}


def _shape(value: Any, typ: Any, path: Path_) -> list[Located]:
    """Every structural problem of `value` as `typ`, descending through structs and containers."""
    typ, problem = _struct_of(value, typ)
    if problem is not None:
        return [((*path, *problem[0]), problem[1])]
    if isinstance(typ, type) and issubclass(typ, msgspec.Struct) and isinstance(value, dict):
        known, tag_field = _known(typ), typ.__struct_config__.tag_field
        problems: list[Located] = [
            ((*path, key), f"unknown field; expected one of: {', '.join(sorted(known))}")
            for key in value
            if key not in known and key != tag_field
        ]
        problems += [
            (path, f"missing required field `{f.encode_name}`")
            for f in known.values()
            if f.required and f.encode_name not in value
        ]
        for key, item in value.items():
            if key in known:
                problems += _shape(item, known[key].type, (*path, key))
        return problems
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is typing.Literal:
        return [] if value in args else [(path, _not_one_of(value, list(args)))]
    if origin is list and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _shape(item, args[0], (*path, i))]
    if origin is dict and isinstance(value, dict):
        return [
            p
            for key, item in value.items()
            for p in (
                _shape(item, args[1], (*path, key))
                if isinstance(key, str)
                else [((*path, key), f"{key!r} is not a name: write it in quotes")]
            )
        ]
    try:
        msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        text, _, _ = str(exc).partition(" - at `$")
        return [(path, text)]
    return []


def _prune(value: Any, typ: Any, path: Path_, bad: set[Path_], kept: dict[Path_, list[int]]) -> Any:
    """`value` without its parts at `bad` paths (and structs left without a required field).

    `kept` records, for each list, the original index of each item that stayed.
    """
    if path in bad:
        return _DROP
    typ, problem = _struct_of(value, typ)
    if problem is not None:
        return _DROP
    if isinstance(typ, type) and issubclass(typ, msgspec.Struct) and isinstance(value, dict):
        known, tag_field = _known(typ), typ.__struct_config__.tag_field
        out = {k: v for k, v in value.items() if k == tag_field}
        for key, item in value.items():
            if key in known:
                pruned = _prune(item, known[key].type, (*path, key), bad, kept)
                if pruned is not _DROP:
                    out[key] = pruned
        required = {f.encode_name for f in known.values() if f.required}
        return out if required <= set(out) else _DROP
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is list and isinstance(value, list):
        items = [(i, _prune(item, args[0], (*path, i), bad, kept)) for i, item in enumerate(value)]
        kept[path] = [i for i, item in items if item is not _DROP]
        return [item for _, item in items if item is not _DROP]
    if origin is dict and isinstance(value, dict):
        entries = {k: _prune(v, args[1], (*path, k), bad, kept) for k, v in value.items()}
        return {k: v for k, v in entries.items() if v is not _DROP and isinstance(k, str)}
    try:
        msgspec.convert(value, typ)
    except msgspec.ValidationError:
        return _DROP
    return value


def _original(path: Path_, kept: dict[Path_, list[int]]) -> Path_:
    """A path into pruned data -> the same place in the file."""
    out: Path_ = ()
    for part in path:
        out = (*out, kept[out][part] if isinstance(part, int) and out in kept else part)
    return out


# -- values ----------------------------------------------------------------


FOLD_WINDOW_MIN, FOLD_WINDOW_MAX = 0.001, 10.0  # seconds
DNS_TTL_MAX = 7 * 86400  # seconds; DNS itself caps a TTL at 2^31 - 1


def _limits(limits: Limits) -> list[Located]:
    """The limits as the kernel takes them (kernel/loader.py Settings.config), never wrapped."""
    problems: list[Located] = []
    try:
        ring = parse_size(limits.ring_size)
        if ring < mmap.PAGESIZE or ring & (ring - 1) or ring > RING_MAX:
            problems.append(
                (
                    ("limits", "ring_size"),
                    f"{limits.ring_size!r} is not a power of two from the page size "
                    f"({mmap.PAGESIZE} bytes) to 2GiB, which the kernel needs; like 8MiB",
                )
            )
    except ValueError as exc:
        problems.append((("limits", "ring_size"), str(exc)))
    rate, burst = limits.allowed_per_sec, limits.allowed_burst
    if not 0 <= rate <= RATE_MAX:
        problems.append(
            (("limits", "allowed_per_sec"), f"{rate} is not 0 (no limit) to {RATE_MAX}")
        )
    if burst < 1:
        problems.append((("limits", "allowed_burst"), f"{burst} is not at least 1"))
    elif 0 < rate <= RATE_MAX:
        interval = 1_000_000_000 // rate
        most = TOLERANCE_MAX // interval
        if burst > most:
            problems.append(
                (
                    ("limits", "allowed_burst"),
                    f"{burst} at allowed_per_sec {rate} overflows the kernel's 64-bit "
                    f"tolerance; at most {most}",
                )
            )
    try:
        window = parse_duration(limits.fold_window)
        if not FOLD_WINDOW_MIN <= window <= FOLD_WINDOW_MAX:
            problems.append(
                (
                    ("limits", "fold_window"),
                    f"{limits.fold_window!r} is not from 1ms to 10s; turn folding off "
                    "with `fold: false`",
                )
            )
    except ValueError as exc:
        problems.append((("limits", "fold_window"), str(exc)))
    return problems + _dns_ttl(limits)


def _dns_ttl(limits: Limits) -> list[Located]:
    problems: list[Located] = []
    seconds: dict[str, float] = {}
    for key in ("dns_ttl_floor", "dns_ttl_cap"):
        text = getattr(limits, key)
        try:
            value = parse_duration(text)
        except ValueError as exc:
            problems.append((("limits", key), str(exc)))
            continue
        if value != int(value) or value > DNS_TTL_MAX:
            problems.append(
                (("limits", key), f"{text!r} is not a whole number of seconds from 0s to 7d")
            )
            continue
        seconds[key] = value
    if len(seconds) == 2 and seconds["dns_ttl_floor"] > seconds["dns_ttl_cap"]:
        problems.append(
            (
                ("limits", "dns_ttl_floor"),
                f"{limits.dns_ttl_floor!r} is above dns_ttl_cap {limits.dns_ttl_cap!r}",
            )
        )
    return problems


def fold_window_ns(limits: Limits) -> int:
    """The kernel's fold window for checked limits; 0 turns folding off."""
    return int(parse_duration(limits.fold_window) * 1e9) if limits.fold else 0


def dns_ttl_s(limits: Limits) -> tuple[int, int]:
    """(floor, cap) of an admitted address's lifetime, in seconds, for checked limits."""
    return int(parse_duration(limits.dns_ttl_floor)), int(parse_duration(limits.dns_ttl_cap))


def _parsed(
    at: Path_, parse: Callable[[Any], float], text: Any
) -> tuple[float | None, list[Located]]:
    try:
        return parse(text), []
    except ValueError as exc:
        return None, [(at, str(exc))]


def _sink(i: int, sink: Sink, state_dir: Path) -> list[Located]:
    at: Path_ = ("sinks", i)
    if isinstance(sink, JsonlSink):
        size, problems = _parsed((*at, "max_bytes"), parse_size, sink.max_bytes)
        if size is not None and size < 1:
            problems.append(((*at, "max_bytes"), f"{sink.max_bytes!r} is not more than 0"))
        if sink.keep < 1:
            problems.append(
                (
                    (*at, "keep"),
                    f"{sink.keep} is not at least 1 (without a rotated file to keep, the "
                    "file would grow past max_bytes)",
                )
            )
        return problems
    if isinstance(sink, OtlpSink):
        values: list[tuple[str, Callable[[Any], float]]] = [("spool_max_bytes", parse_size)]
        values += [(key, parse_duration) for key in ("timeout", "retry_initial", "retry_max")]
        problems = [
            p for key, parse in values for p in _parsed((*at, key), parse, getattr(sink, key))[1]
        ]
        if problems:
            return problems
        from netlogger.sinks.otlp import settings as otlp_settings  # loaded only when asked for

        try:
            otlp_settings.from_config(sink, state_dir)
        except UsageError as exc:
            return [(at, str(exc).removeprefix("otlp sink: "))]
    return []


def _cgroup(at: Path_, path: str) -> list[Located]:
    from netlogger.kernel import cgroup

    try:
        cgroup.resolve(path)
    except CgroupError as exc:
        return [(at, str(exc))]
    return []


def _values(config: Config, policies: PolicySet) -> list[Located]:
    problems = _limits(config.limits)
    if config.scope is not None:
        problems += _cgroup(("scope",), config.scope)
    if config.metrics is not None:
        from netlogger.metrics import parse_address

        try:
            parse_address(config.metrics)
        except UsageError as exc:
            problems.append((("metrics",), str(exc)))
    for i, sink in enumerate(config.sinks):
        problems += _sink(i, sink, Path(config.state_dir))
    known = ", ".join(sorted(policies.named())) or "none defined"
    for i, enrollment in enumerate(config.enroll):
        problems += _cgroup(("enroll", i, "cgroup"), enrollment.cgroup)
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


# -- the check -------------------------------------------------------------


@dataclass
class _Origins:
    """Where each top-level key came from: the config file, a policy file, or a flag."""

    base: Source
    keys: dict[str, Source | str]

    def problem(self, path: Path_, message: str) -> Problem:
        origin = self.keys.get(str(path[0])) if path else None
        if isinstance(origin, str):
            return Problem("command line", 0, origin, message)
        return (origin or self.base).problem(path, message)


def _item_of(value_path: Path_, broken: Path_) -> bool:
    """A list item's own verdict depends on a field of it that was cut away."""
    return (
        len(value_path) < len(broken)
        and broken[: len(value_path)] == value_path
        and isinstance(value_path[-1], int)
    )


def _check(data: Any, origins: _Origins, reading: list[Problem]) -> tuple[Config, PolicySet]:
    """Every problem of `data` (and those found while reading it) in one ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError([origins.problem((), "the file must be a mapping of keys to values")])
    shape = _shape(data, Config, ())
    kept: dict[Path_, list[int]] = {}
    config = msgspec.convert(_prune(data, Config, (), {p for p, _ in shape}, kept), Config)
    policies, located = compile_policies(config.policies)
    located += _values(config, policies)
    values = [(_original(p, kept), text) for p, text in located]
    values = [(p, t) for p, t in values if not any(_item_of(p, b) for b, _ in shape)]
    problems = reading + [origins.problem(p, t) for p, t in shape + values]
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.file, p.line)))
    return config, policies


def _policies_only(src: Source) -> list[Problem]:
    extra = sorted(set(src.data) - {"policies"}) if isinstance(src.data, dict) else [""]
    return [src.problem((k,) if k else (), "a policy file holds only `policies:`") for k in extra]


def check_source(src: Source) -> Checked:
    """Validate parsed YAML; raise ConfigError listing every problem."""
    config, policies = _check(src.data, _Origins(src, {}), src.problems)
    return Checked(config, policies, src)


def check_file(path: Path) -> Checked:
    return check_source(source.load(path))


def validate(
    config_file: Path | None,
    policy_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Checked:
    """The config `run` would start with, or ConfigError listing every problem in it.

    `policy_file` replaces the config's policies; `flags` (config key -> value, as
    `run`'s options give them: CLI_FLAGS) replace the config's values.
    """
    base = source.load(config_file) if config_file else Source("<defaults>", {})
    data = dict(base.data) if isinstance(base.data, dict) else base.data
    keys: dict[str, Source | str] = {}
    reading = list(base.problems)
    if policy_file is not None:
        policy = source.load(policy_file)
        keys["policies"] = policy
        reading += policy.problems + _policies_only(policy)
        if isinstance(data, dict) and isinstance(policy.data, dict):
            data.pop("policies", None)
            data.update({k: v for k, v in policy.data.items() if k == "policies"})
    for key, value in (flags or {}).items():
        keys[key] = CLI_FLAGS[key]
        if isinstance(data, dict):
            data[key] = msgspec.to_builtins(value)
    config, policies = _check(data, _Origins(base, keys), reading)
    return Checked(config, policies, base)
