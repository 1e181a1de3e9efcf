"""Which way the imports point.

Dependencies in reticulum/ go one way: sip <- addresses <- transaction <- registrar, auth,
location, dialog <- proxy <- core <- service. This walks every module with `ast` and reads
every import in it (top level, inside functions, under `if TYPE_CHECKING:`: all of them count),
then fails on an import circle, on a transport that reaches the core, the proxy or the
service, and on a sans-IO room that reaches the service, the core, the reactor or a socket.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Sequence, Set, Tuple

PACKAGE = Path(__file__).resolve().parent.parent / "reticulum"

# The rooms that stay plain Python: no reactor, no socket, no service or core above them.
SANS_IO = ("reticulum.sip", "reticulum.addresses", "reticulum.statetable", "reticulum.transaction*",
           "reticulum.registrar", "reticulum.auth", "reticulum.location", "reticulum.dialog",
           "reticulum.proxy*")
ABOVE_SANS_IO = ("reticulum.service", "reticulum.core")
IO = ("twisted.internet", "socket")
TRANSPORTS = ("reticulum.transport",)
ABOVE_TRANSPORTS = ("reticulum.core", "reticulum.proxy*", "reticulum.service",
                    "reticulum.transaction*", "reticulum.registrar", "reticulum.auth")


class Import(NamedTuple):
    importer: str  # the importing module
    target: str  # a module of the package, or the dotted name an outside import reads
    file: str  # the importer's file, from the package's parent folder
    line: int

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def modules_in(package: Path) -> Dict[str, Path]:
    """Every module of the package by dotted name; a package's __init__ is the package."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, modules: Dict[str, Path], file: str) -> Iterator[Import]:
    """Every import statement anywhere in one module, resolved.

    `from a.b import c` names the module a.b.c when that is a module of the package, else
    a.b; outside the package it reads a.b.c (so `from twisted import internet` is seen)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, file, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                dotted = f"{base}.{alias.name}"
                if dotted in modules or base not in modules:
                    yield Import(name, dotted, file, node.lineno)
                elif base != name:  # a package reading a name from its own __init__
                    yield Import(name, base, file, node.lineno)


def all_imports(package: Path = PACKAGE) -> List[Import]:
    modules = modules_in(package)
    return [imp for name, path in modules.items()
            for imp in imports_of(name, path, modules, path.relative_to(package.parent).as_posix())]


def graph(imports: Sequence[Import], modules: Set[str]) -> Dict[str, Dict[str, Import]]:
    """importer -> {imported module of the package -> the first import of it}."""
    edges: Dict[str, Dict[str, Import]] = {name: {} for name in modules}
    for imp in imports:
        if imp.target in modules:
            edges[imp.importer].setdefault(imp.target, imp)
    return edges


def strongly_connected(edges: Dict[str, Dict[str, Import]]) -> List[List[str]]:
    """Tarjan's strongly connected components with more than one module, or a self-import."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def shortest_circle(start: str, members: Set[str],
                    edges: Dict[str, Dict[str, Import]]) -> List[str]:
    """The shortest way from `start` back to itself inside one component."""
    came_from: Dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges[node]):
                if nxt not in members or nxt in came_from:
                    continue
                came_from[nxt] = node
                if nxt == start:
                    path = [start]
                    while path[-1] != start or len(path) == 1:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is in a component but on no circle")


def circles(imports: Sequence[Import], modules: Set[str]) -> List[List[str]]:
    """Each distinct shortest circle through a module of a strongly connected component,
    as [a, b, ..., a]."""
    edges = graph(imports, modules)
    seen: Set[Tuple[str, ...]] = set()
    out = []
    for component in strongly_connected(edges):
        for start in component:
            circle = shortest_circle(start, set(component), edges)
            ring = circle[:-1]
            first = ring.index(min(ring))
            key = tuple(ring[first:] + ring[:first])
            if key not in seen:
                seen.add(key)
                out.append(list(key) + [key[0]])
    return out


def describe_circles(found: List[List[str]], imports: Sequence[Import],
                     modules: Set[str]) -> str:
    edges = graph(imports, modules)
    lines = []
    for circle in found:
        lines.append("import circle: " + " -> ".join(circle))
        for importer, imported in zip(circle, circle[1:]):
            lines.append(f"    {edges[importer][imported].where()} imports {imported}")
    return "\n".join(lines)


def matches(module: str, patterns: Sequence[str]) -> bool:
    """`a.b` matches a.b and a.b.*; `a.b*` matches anything that starts with a.b."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if module.startswith(pattern[:-1]):
                return True
        elif module == pattern or module.startswith(pattern + "."):
            return True
    return False


def forbidden(imports: Sequence[Import], rooms: Sequence[str],
              targets: Sequence[str]) -> List[Import]:
    return [imp for imp in imports if matches(imp.importer, rooms) and matches(imp.target, targets)]


def describe(found: Sequence[Import]) -> str:
    return "\n".join(f"{imp.where()}: {imp.importer} imports {imp.target}" for imp in found)


def names_outside(tree: ast.Module, name: str, function: str) -> List[int]:
    """Lines where `name` is used outside the top-level function `function` (imports aside)."""
    allowed = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            allowed = {id(n) for n in ast.walk(node)}
    return sorted(node.lineno for node in ast.walk(tree)
                  if isinstance(node, ast.Name) and node.id == name and id(node) not in allowed)


# ---------------------------------------------------------------------------- the package


def test_no_import_circle():
    imports = all_imports()
    modules = set(modules_in(PACKAGE))
    found = circles(imports, modules)
    assert not found, "\n" + describe_circles(found, imports, modules)


def test_transports_do_not_import_the_rooms_above_them():
    found = forbidden(all_imports(), TRANSPORTS, ABOVE_TRANSPORTS)
    assert not found, "\n" + describe(found)


def test_sans_io_rooms_do_not_import_the_service_or_the_core():
    found = forbidden(all_imports(), SANS_IO, ABOVE_SANS_IO)
    assert not found, "\n" + describe(found)


def test_sans_io_rooms_do_not_import_the_reactor_or_sockets():
    # One exception: addresses.own_address asks the kernel which address this host sends
    # from (what advertised_host writes for a wildcard bind, 0.0.0.0 or ::), with a UDP
    # socket that only connect()s: nothing is sent. It is a question about the host, asked
    # once per listening address and cached, not I/O on the message path; the check below
    # holds the socket to that one function.
    found = [imp for imp in forbidden(all_imports(), SANS_IO, IO)
             if not (imp.importer == "reticulum.addresses" and imp.target == "socket")]
    assert not found, "\n" + describe(found)
    path = PACKAGE / "addresses.py"
    outside = names_outside(ast.parse(path.read_text(encoding="utf-8")), "socket",
                            "own_address")
    assert not outside, f"reticulum/addresses.py uses socket outside own_address: {outside}"


def dynamic_imports(package: Path) -> List[str]:
    """Imports the walk cannot resolve: __import__(...) and importlib.import_module(...)."""
    found = []
    for name, path in modules_in(package).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else ""
            if called in ("__import__", "import_module"):
                found.append(f"{name}:{node.lineno}")
    return found


def test_every_import_is_one_the_walk_can_read():
    assert dynamic_imports(PACKAGE) == []


def test_the_walk_sees_the_package():
    """Guards the checks above against passing because the walk found nothing."""
    imports = all_imports()
    modules = modules_in(PACKAGE)
    assert {"reticulum", "reticulum.sip", "reticulum.sip.message", "reticulum.addresses",
            "reticulum.service"} <= set(modules)
    edges = {(imp.importer, imp.target) for imp in imports}
    assert ("reticulum.sip", "reticulum.sip.message") in edges  # relative import in __init__
    assert ("reticulum.auth", "reticulum.addresses") in edges
    assert ("reticulum.addresses", "socket") in edges


# ---------------------------------------------------------------------------- the checker


def write(root: Path, files: Dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / "pkg"


def test_a_circle_through_a_function_and_type_checking_is_found_and_named_in_order(tmp_path):
    package = write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": """
            def later():
                from pkg import b
            """,
        "pkg/b.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg.sub.c import thing
            """,
        "pkg/sub/__init__.py": "from .c import thing\n",
        "pkg/sub/c.py": "from .. import a\nthing = 1\n",
        "pkg/d.py": "import pkg.a\n",  # points into the circle, is not on it
    })
    imports = all_imports(package)
    modules = set(modules_in(package))
    found = circles(imports, modules)
    assert found == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    text = describe_circles(found, imports, modules)
    assert "import circle: pkg.a -> pkg.b -> pkg.sub.c -> pkg.a" in text
    assert "pkg/b.py:4 imports pkg.sub.c" in text


def test_no_circle_when_imports_point_one_way(tmp_path):
    package = write(tmp_path, {
        "pkg/__init__.py": "from . import low\n",
        "pkg/low.py": "import os\n",
        "pkg/high.py": "from pkg.low import x\nfrom pkg import low\n",
    })
    assert circles(all_imports(package), set(modules_in(package))) == []


def test_every_circle_of_a_component_is_reported(tmp_path):
    package = write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/hub.py": "from pkg import one, two\n",
        "pkg/one.py": "import pkg.hub\n",
        "pkg/two.py": "from pkg.hub import anything\n",
    })
    assert circles(all_imports(package), set(modules_in(package))) == [
        ["pkg.hub", "pkg.one", "pkg.hub"], ["pkg.hub", "pkg.two", "pkg.hub"]]


def test_forbidden_imports_are_found_in_functions_and_by_prefix(tmp_path):
    package = write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/transport/__init__.py": "",
        "pkg/transport/tcp.py": """
            def late():
                from pkg.proxy_rules import x
            """,
        "pkg/proxy_rules.py": "from twisted import internet\nfrom twisted.logger import Logger\n",
    })
    imports = all_imports(package)
    assert [(i.importer, i.target) for i in forbidden(imports, ("pkg.transport",), ("pkg.proxy*",))] \
        == [("pkg.transport.tcp", "pkg.proxy_rules")]
    assert [(i.importer, i.target) for i in forbidden(imports, ("pkg.proxy*",), IO)] \
        == [("pkg.proxy_rules", "twisted.internet")]


def test_a_dynamic_import_is_found(tmp_path):
    package = write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import importlib\nmod = importlib.import_module('pkg.b')\n",
        "pkg/b.py": "def f():\n    return __import__('os')\n",
    })
    assert dynamic_imports(package) == ["pkg.a:2", "pkg.b:2"]


def test_a_name_used_outside_its_one_function_is_found():
    tree = ast.parse(textwrap.dedent("""
        import socket
        def advertised_host():
            return socket.AF_INET
        def other():
            return socket.socket
        """))
    assert names_outside(tree, "socket", "advertised_host") == [6]


# Inside the transaction package, rooms import only downwards: timers <- keys <- machine <-
# server, client <- layer; from outside only these, and never Twisted.
TRANSACTION_ROOMS = {
    "timers": set(),
    "keys": set(),
    "machine": {"timers"},
    "server": {"keys", "machine", "timers"},
    "client": {"keys", "machine", "timers"},
    "layer": {"client", "keys", "machine", "server", "timers"},
    "": {"client", "layer", "machine", "server", "timers"},  # the package's __init__
}
TRANSACTION_OUTSIDE = ("reticulum.sip", "reticulum.addresses", "reticulum.events",
                       "reticulum.statetable")
# The transport protocols see the flow table only as a ConnectionTable (transport/connection.py)
TRANSPORT_PROTOCOLS = ("tcp", "tls", "udp", "ws", "connection", "sink", "limits", "framing")


def imports_by_module(imports: Sequence[Import]) -> Dict[str, Set[str]]:
    found: Dict[str, Set[str]] = {}
    for imp in imports:
        found.setdefault(imp.importer, set()).add(imp.target)
    return found


def test_the_transaction_rooms_import_only_downwards():
    modules = imports_by_module(all_imports())
    rooms = {name[len("reticulum.transaction"):].lstrip("."): targets
             for name, targets in modules.items()
             if name == "reticulum.transaction" or name.startswith("reticulum.transaction.")}
    assert set(rooms) == set(TRANSACTION_ROOMS)
    for room, targets in rooms.items():
        for target in targets:
            if target.startswith("reticulum.transaction."):
                assert target.split(".")[2] in TRANSACTION_ROOMS[room], (room, target)
            elif target.startswith("reticulum"):
                assert matches(target, TRANSACTION_OUTSIDE), (room, target)
            else:
                assert not target.startswith("twisted"), (room, target)


def test_the_transport_protocols_know_no_flow_table():
    modules = imports_by_module(all_imports())
    for name in TRANSPORT_PROTOCOLS:
        found = modules.get("reticulum.transport." + name, set())
        assert "reticulum.transport.flows" not in found, name
    flows = modules["reticulum.transport.flows"]
    for name in ("tcp", "tls", "udp", "ws", "sink", "connection"):
        assert "reticulum.transport." + name in flows, name


def room_graph(imports: Sequence[Import]) -> Dict[str, Set[str]]:
    """Which room imports which: a module's room is its first name under reticulum/."""
    def room(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else parts[0]

    edges: Dict[str, Set[str]] = {}
    for imp in imports:
        if imp.target.startswith("reticulum.") and room(imp.importer) != room(imp.target):
            edges.setdefault(room(imp.importer), set()).add(room(imp.target))
    return edges


if __name__ == "__main__":  # python tests/test_imports.py: the arrows, as docs/architecture.md draws them
    for importer, targets in sorted(room_graph(all_imports()).items()):
        print("%-12s -> %s" % (importer, ", ".join(sorted(targets))))
