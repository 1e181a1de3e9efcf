"""What the browser tests share: Chromium runs in a network namespace of its own
(``unshare --net``) where only ``lo`` exists, because it gathers WebRTC candidates on every
interface. The server stays outside, on 127.0.0.1; its port is carried into the namespace
over a Unix socket: ``UnixRelay`` here (Unix socket -> server), and the node script inside
(127.0.0.1:port in the namespace -> Unix socket, tests/browser/common.js).

Needs (``./run.sh test`` installs them): Debian's chromium, node with ``npm ci``
(playwright-core, jssip, esbuild), the JsSIP bundle (tests/browser/build.sh) for the tests
that inject it, root for ``unshare --net``.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUNDLE = HERE / "build" / "jssip.js"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = HERE / "artifacts"


class UnixRelay:
    """Listens on a Unix socket; every connection is piped to 127.0.0.1:port."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = str(path)
        self.port = port
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(64)
        self.connections = 0
        self._open: List[socket.socket] = []
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                inner, _ = self.sock.accept()
            except OSError:
                return
            try:
                outer = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                outer.settimeout(None)
            except OSError:
                inner.close()
                continue
            self.connections += 1
            self._open += [inner, outer]
            threading.Thread(target=self._pipe, args=(inner, outer), daemon=True).start()
            threading.Thread(target=self._pipe, args=(outer, inner), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stopped = True
        self.sock.close()
        for s in self._open:
            try:
                s.close()
            except OSError:
                pass
        try:
            os.unlink(self.path)
        except OSError:
            pass


def requirements(bundle: bool = True) -> None:
    """Fail (not skip) with what is missing: a browser test that skips proves nothing."""
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append("chromium (apt-get install chromium)")
    if shutil.which("node") is None:
        missing.append("node")
    if not (ROOT / "node_modules" / "playwright-core").exists():
        missing.append("node_modules (npm ci)")
    if bundle and not BUNDLE.exists():
        missing.append("the JsSIP bundle (sh tests/browser/build.sh)")
    if shutil.which("unshare") is None:
        missing.append("unshare (util-linux)")
    if missing:
        pytest.fail("browser test needs: %s; ./run.sh test installs them" % ", ".join(missing))


def in_namespace(script: str, *args: Any) -> List[str]:
    """The command running ``node tests/browser/SCRIPT ARGS`` in a network namespace of its
    own with only ``lo`` up (``--debug`` added when RETICULUM_BROWSER_DEBUG is set)."""
    words = [shlex.quote(str(w)) for w in [HERE / script, *args]]
    if os.environ.get("RETICULUM_BROWSER_DEBUG"):
        words.append("--debug")
    return ["unshare", "--net", "--", "sh", "-c", "ip link set lo up && exec node " + " ".join(words)]


def run_script(server: Any, timeout: float, script: str, *args: Any,
               stdout_tail: int = 3000) -> Tuple[subprocess.CompletedProcess, Dict[str, Any], str]:
    """Runs a script that prints one JSON line {"ok": ..., "steps": [...]} last; returns the
    process, that result and a description (its output and the server's log) for asserts."""
    proc = subprocess.run(
        in_namespace(script, *args), cwd=str(ROOT), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
    )
    out = proc.stdout.decode(errors="replace").strip().splitlines()
    result = json.loads(out[-1]) if out else {}
    detail = "exit %s\nstdout: %s\nstderr: %s\nserver log:\n%s" % (
        proc.returncode,
        proc.stdout.decode(errors="replace")[-stdout_tail:],
        proc.stderr.decode(errors="replace")[-5000:],
        server.read_log()[-8000:],
    )
    return proc, result, detail
