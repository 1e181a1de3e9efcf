"""The transaction rooms import only downwards: sip, addresses and events from outside (never a
reactor, a transport or a room above), and inside the package timers <- keys <- machine <-
server, client <- layer, wherever an import stands (inside a function or under TYPE_CHECKING
too)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Set

import reticulum.transaction

PACKAGE = Path(reticulum.transaction.__file__).parent

#: what each room may import from the package
INSIDE = {
    "timers": set(),
    "keys": set(),
    "machine": {"timers"},
    "server": {"keys", "machine", "timers"},
    "client": {"keys", "machine", "timers"},
    "layer": {"client", "keys", "machine", "server", "timers"},
    "__init__": {"client", "layer", "machine", "server", "timers"},
}
OUTSIDE = {"reticulum.sip", "reticulum.addresses", "reticulum.events"}


def imports(path: Path) -> Set[str]:
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in ("reticulum", "reticulum.transaction"):
                found.update("%s.%s" % (node.module, alias.name) for alias in node.names)
            else:
                found.add(node.module)
    return found


def test_every_room_is_listed():
    assert {p.stem for p in PACKAGE.glob("*.py")} == set(INSIDE)


def test_rooms_import_only_downwards():
    for path in PACKAGE.glob("*.py"):
        room = path.stem
        for name in imports(path):
            if name.startswith("reticulum.transaction."):
                assert name.split(".")[2] in INSIDE[room], (room, name)
            elif name.startswith("reticulum"):
                assert name.split(".")[:2] in [o.split(".") for o in OUTSIDE], (room, name)
            else:
                assert not name.startswith("twisted"), (room, name)
