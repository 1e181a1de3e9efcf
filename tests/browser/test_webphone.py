"""Two JsSIP phones in headless Chromium call each other through the real server over
WebSocket (RFC 7118): registration, call confirmed on both sides, RTP both ways,
hang-up on both sides.

Chromium gathers WebRTC candidates on every interface, so it runs in a network
namespace of its own (``unshare --net``) where only ``lo`` exists. The server
stays outside, on 127.0.0.1; the page/WebSocket port is carried into the
namespace over a Unix socket: ``UnixRelay`` here (Unix socket -> server), and
call.js inside (127.0.0.1:port in the namespace -> Unix socket).

Needs (``./run.sh test`` installs them): Debian's chromium, node with
``npm ci`` (playwright-core, jssip, esbuild), the JsSIP bundle
(tests/browser/build.sh), root for ``unshare --net``.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import List

import pytest

from tests.integration.harness import Server, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUNDLE = HERE / "build" / "jssip.js"
CHROMIUM = "/usr/bin/chromium"


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


def _requirements() -> None:
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append("chromium (apt-get install chromium)")
    if shutil.which("node") is None:
        missing.append("node")
    if not (ROOT / "node_modules" / "playwright-core").exists():
        missing.append("node_modules (npm ci)")
    if not BUNDLE.exists():
        missing.append("the JsSIP bundle (sh tests/browser/build.sh)")
    if shutil.which("unshare") is None:
        missing.append("unshare (util-linux)")
    if missing:
        pytest.fail("browser test needs: %s; ./run.sh test installs them" % ", ".join(missing))


def test_two_browsers_call_each_other_over_websocket(tmp_path):
    _requirements()
    ws_port = free_port()
    # the default challenges (MD5, SHA-256, MD5): JsSIP answers the last one and knows MD5
    server = Server(tmp_path / "server", listen={"ws": ["127.0.0.1:%d" % ws_port]})
    server.start()
    relay = UnixRelay(tmp_path / "relay.sock", ws_port)
    try:
        script = (
            "ip link set lo up && exec node %s --port %d --unix %s --bundle %s --profile %s --timeout 100%s"
            % (HERE / "call.js", ws_port, relay.path, BUNDLE, tmp_path / "profile",
               " --debug" if os.environ.get("RETICULUM_BROWSER_DEBUG") else "")
        )
        proc = subprocess.run(
            ["unshare", "--net", "--", "sh", "-c", script],
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=115,
        )
        out = proc.stdout.decode(errors="replace").strip().splitlines()
        result = json.loads(out[-1]) if out else {}
        detail = "exit %s\nstdout: %s\nstderr: %s\nserver log:\n%s" % (
            proc.returncode,
            proc.stdout.decode(errors="replace")[-3000:],
            proc.stderr.decode(errors="replace")[-5000:],
            server.read_log()[-8000:],
        )
        print(json.dumps(result))
        assert proc.returncode == 0 and result.get("ok"), detail
        assert result["alice_inbound_bytes"] > 0 and result["bob_inbound_bytes"] > 0
        assert "confirmed" in result["alice_events"] and "confirmed" in result["bob_events"]
        assert any(e.startswith("ended") for e in result["bob_events"])
        assert relay.connections >= 2  # the page loads and both WebSockets went through the relay
        log = server.read_log()
        assert "<- REGISTER" in log and "from ws" in log
        assert "<- BYE" in log
    finally:
        relay.close()
        server.stop()
