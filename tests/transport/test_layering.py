"""The transports depend on the sink and connection interfaces, never on the flow table's
class or on the rooms above them: every import in reticulum/transport/, wherever it stands
(inside a function or under TYPE_CHECKING too), is checked."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

import reticulum.transport

PACKAGE = Path(reticulum.transport.__file__).parent

#: the rooms above the transports
ABOVE = ("reticulum.core", "reticulum.proxy", "reticulum.service", "reticulum.transaction",
         "reticulum.registrar", "reticulum.auth")
#: the protocols: they see the table only as a ConnectionTable
PROTOCOLS = ("tcp", "tls", "udp", "ws", "connection", "sink", "limits", "framing")


def imports(path: Path) -> Set[str]:
    """Every module `path` imports, as dotted names (``from a import b`` gives a and a.b)."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update("%s.%s" % (node.module, alias.name) for alias in node.names)
    return found


def transport_modules() -> Dict[str, Set[str]]:
    return {p.stem: imports(p) for p in sorted(PACKAGE.glob("*.py"))}


def test_the_protocols_know_no_flow_table():
    modules = transport_modules()
    for name in PROTOCOLS:
        assert "reticulum.transport.flows" not in modules[name], name
        assert not any(m.startswith("reticulum.transport.flows") for m in modules[name]), name


def test_nothing_in_transport_imports_the_rooms_above():
    for name, found in transport_modules().items():
        bad = sorted(m for m in found if m.startswith(ABOVE))
        assert bad == [], "%s imports %s" % (name, bad)


def test_the_flow_table_imports_the_protocols():
    found = transport_modules()["flows"]
    for name in ("tcp", "tls", "udp", "ws", "sink", "connection"):
        assert "reticulum.transport.%s" % name in found, name
