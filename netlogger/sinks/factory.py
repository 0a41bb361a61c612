"""Sink specs (config or `--sink`) -> sink objects, all checked before any starts."""

from __future__ import annotations

import sys
from pathlib import Path

from netlogger.config.model import ConsoleSink, JsonlSink, OtlpSink, Sink
from netlogger.errors import UsageError
from netlogger.sinks.base import Sink as SinkObject
from netlogger.sinks.console import ConsoleSink as Console
from netlogger.sinks.jsonl import JsonlSink as Jsonl
from netlogger.units import parse_size


def parse_spec(text: str) -> Sink:
    """`console`, `jsonl:PATH` or `otlp:ENDPOINT`, as given to `run --sink`."""
    kind, _, arg = text.partition(":")
    if kind == "console" and not arg:
        return ConsoleSink()
    if kind == "jsonl" and arg:
        return JsonlSink(path=arg)
    if kind == "otlp" and arg:
        return OtlpSink(endpoint=arg)
    raise UsageError(f"bad --sink {text!r}: use console, jsonl:PATH or otlp:ENDPOINT")


def build(spec: Sink, host_name: str, state_dir: Path) -> SinkObject:
    if isinstance(spec, ConsoleSink):
        color = {"auto": None, "always": True, "never": False}[spec.color]
        return Console(sys.stdout, color)
    if isinstance(spec, JsonlSink):
        return Jsonl(Path(spec.path), parse_size(spec.max_bytes), spec.keep)
    from netlogger.sinks import otlp  # the OpenTelemetry SDK loads only when asked for

    return otlp.from_config(spec, host_name, state_dir)
