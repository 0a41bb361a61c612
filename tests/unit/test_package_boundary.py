"""The agent package (netlogger/) never imports the stack package (monitor/).

The stack may import from netlogger what both must agree on (netlogger.trusted_lane); the
reverse would make a host agent carry, and depend on, the telemetry stack. `netlogger monitor`
reaches the stack through the `netlogger.commands` entry point instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).parents[2]
FORBIDDEN = "monitor"
DYNAMIC = {"import_module", "__import__"}


def _top(module: str) -> str:
    return module.split(".")[0]


def imported(source: str) -> set[str]:
    """Top-level package of every import in `source`: statements and import_module("...")."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {_top(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(_top(node.module))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in DYNAMIC and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(_top(first.value))
    return found


def test_the_walker_sees_every_form_of_import() -> None:
    source = (
        "import monitor.cli\n"
        "def f():\n"
        "    from monitor import certs\n"
        "    importlib.import_module('monitor.paths')\n"
        "    __import__('monitor')\n"
        "from . import sibling\n"
    )
    assert imported(source) == {"monitor"}


def test_netlogger_never_imports_monitor() -> None:
    files = sorted((REPO / "netlogger").rglob("*.py"))
    assert len(files) > 30  # the whole package, not an empty glob
    offenders = [str(f.relative_to(REPO)) for f in files if FORBIDDEN in imported(f.read_text())]
    assert offenders == []
