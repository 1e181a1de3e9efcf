"""The webphone's static files on the ws/wss ports: only files of known types inside the folder,
with their content types, a revalidating cache policy and security headers; traversal attempts
over a real socket get 404."""
from __future__ import annotations

import os
import socket
import urllib.request

import pytest

from reticulum.webphone import STATIC_DIR, static_path
from tests.transport.test_ws import WSEchoServer


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "static"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<p>hi</p>")
    (root / "app.js").write_text("1")
    (root / "sub" / "x.css").write_text("a{}")
    (root / ".secret.js").write_text("no")
    (root / "notes.py").write_text("no")
    (tmp_path / "outside.js").write_text("no")
    os.symlink(str(tmp_path / "outside.js"), str(root / "link.js"))
    return str(root)


def test_static_path_serves_files_of_known_types_inside_the_folder(folder):
    assert static_path(folder, b"/") == os.path.join(os.path.realpath(folder), "index.html")
    assert static_path(folder, b"/app.js").endswith("app.js")
    assert static_path(folder, b"/sub/x.css").endswith(os.path.join("sub", "x.css"))
    assert static_path(folder, b"/%61pp.js").endswith("app.js")


@pytest.mark.parametrize("raw", [
    b"/../outside.js", b"/sub/../../outside.js", b"/%2e%2e/outside.js", b"/..%2foutside.js",
    b"/sub/..%5c..%5coutside.js", b"/.secret.js", b"/notes.py", b"/link.js", b"/sub", b"/sub/",
    b"//etc/passwd", b"/app.js%00.html", b"/missing.js", b"/%ff.js", b"relative.js", b"/./app.js",
])
def test_static_path_refuses_everything_else(folder, raw):
    assert static_path(folder, raw) is None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = WSEchoServer(tmp_path_factory.mktemp("static"))
    yield s
    s.stop()


def raw_get(port: int, target: bytes, method: bytes = b"GET", extra: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_pages_have_their_types_cache_policy_and_security_headers(server):
    base = "http://127.0.0.1:%d" % server.ws_port
    for path, ctype in (("/", "text/html; charset=utf-8"), ("/app.js", "text/javascript; charset=utf-8"),
                        ("/style.css", "text/css; charset=utf-8"), ("/icon.svg", "image/svg+xml")):
        with urllib.request.urlopen(base + path, timeout=5) as r:
            assert r.headers["Content-Type"] == ctype, path
            assert r.headers["Cache-Control"] == "no-cache"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["Last-Modified"]
            body = r.read()
        assert body == open(os.path.join(STATIC_DIR, path[1:] or "index.html"), "rb").read()
    with urllib.request.urlopen(base + "/config.json", timeout=5) as r:
        assert r.headers["Content-Type"] == "application/json"
        assert set(__import__("json").loads(r.read())) == {"domains"}


def test_an_unchanged_file_is_revalidated_with_304(server):
    answer = raw_get(server.ws_port, b"/app.js", extra=b"If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n")
    assert answer.startswith(b"HTTP/1.1 304")


@pytest.mark.parametrize("target", [
    b"/../../../../etc/passwd", b"/%2e%2e/%2e%2e/%2e%2e/etc/passwd", b"/..%2f..%2f..%2fetc%2fpasswd",
    b"/static/../../setup.cfg", b"/../ws.py", b"/__init__.py", b"/.git/config", b"/%00",
])
def test_traversal_over_the_socket_gets_404(server, target):
    answer = raw_get(server.ws_port, target)
    assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
    assert b"root:" not in answer and b"[metadata]" not in answer


def test_only_get_and_head(server):
    assert raw_get(server.ws_port, b"/", method=b"POST").startswith(b"HTTP/1.1 405")
    head = raw_get(server.ws_port, b"/", method=b"HEAD")
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
