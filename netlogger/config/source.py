"""YAML text -> plain data, plus the line each value came from.

PyYAML's node tree keeps positions that its plain objects lose; problems are
reported as file:line, so the loader walks the nodes itself. The walk is also
where the document is bounded: a duplicate key is a problem (YAML says keys
are unique; PyYAML lets the last one win silently), and aliases may expand to
at most MAX_EXPANDED values, so a billion-laughs document is refused after a
bounded amount of work instead of being expanded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from netlogger.errors import ConfigError, Problem

Path_ = tuple[str | int, ...]

MAX_BYTES = 1 << 20
MAX_EXPANDED = 10_000  # values reached a second time, through an alias
MAX_DEPTH = 32  # a config nests about six deep


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting before it costs anything.

    PyYAML composes recursively (Python's stack) and scans flow collections in
    time quadratic in their depth, so a megabyte of `[` would otherwise keep it
    busy for hours.
    """

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", self.get_mark()
            )
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth = getattr(self, "depth", 0) + 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested deeper than {MAX_DEPTH} levels",
                    self.get_mark(),
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


@dataclass
class Source:
    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # found while reading (duplicates)

    def line_of(self, path: Path_) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 0)

    def problem(self, path: Path_, message: str) -> Problem:
        return Problem(self.file, self.line_of(path), dotted(path), message)


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Walk:
    """One pass over the node tree: plain data, lines, duplicate keys, the alias bound."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.seen: set[int] = set()
        self.expanded = 0
        self.scalars = SafeConstructor()

    def value(self, node: yaml.Node, path: Path_) -> Any:
        if len(path) > MAX_DEPTH:  # only an alias inside itself gets here
            raise ConfigError(
                [self.source.problem(path[:1], f"nested deeper than {MAX_DEPTH} levels")]
            )
        if id(node) in self.seen:
            self.expanded += 1
            if self.expanded > MAX_EXPANDED:
                raise ConfigError(
                    [
                        self.source.problem(
                            path[:1],
                            f"aliases expand to more than {MAX_EXPANDED} values; "
                            "write the document out instead",
                        )
                    ]
                )
        self.seen.add(id(node))
        self.source.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.scalars.construct_object(node)

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.source.problems.append(
                    Problem(self.source.file, line, dotted(path), "keys must be plain values")
                )
                continue
            key = self.scalars.construct_object(key_node)
            at = (*path, key)
            if key in out:
                first = self.source.lines[at]
                self.source.problems.append(
                    Problem(
                        self.source.file,
                        line,
                        dotted(at),
                        f"duplicate key; the first is at line {first}: keep one",
                    )
                )
                continue
            self.source.lines[at] = line
            out[key] = self.value(value_node, at)
        return out


def load(path: Path) -> Source:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(str(path), 0, "", f"cannot read: {exc.strerror}")]) from None
    if len(data) > MAX_BYTES:
        raise ConfigError(
            [Problem(str(path), 0, "", f"larger than {MAX_BYTES >> 20} MiB; a config is smaller")]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start]
        raise ConfigError(
            [Problem(str(path), line, "", f"not UTF-8: byte 0x{byte:02x}; save the file as UTF-8")]
        ) from None
    return parse(text, str(path))


def _yaml_problem(exc: yaml.YAMLError, text: str, file: str) -> Problem:
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return Problem(file, line, "", f"not valid YAML: {exc.reason} (#x{exc.character:04x})")
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark else 0
    reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return Problem(file, line, "", f"not valid YAML: {reason}")


def parse(text: str, file: str) -> Source:
    source = Source(file, None)
    try:
        node = yaml.compose(text, Loader=_Loader)
        source.data = {} if node is None else _Walk(source).value(node, ())
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc, text, file)]) from None
    return source
