"""Real sockets on loopback: the transports in a real reactor (a subprocess)
with an echoing fake core (tests/transport/echo_server.py)."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.transport.conftest import free_port

REPO = Path(__file__).resolve().parents[2]

MSG = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK1\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)


def ipv6_loopback() -> bool:
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


HAVE_V6 = ipv6_loopback()


class EchoServer:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.v6port = free_port("::1") if HAVE_V6 else None
        udp = ["127.0.0.1:%d" % self.port]
        tcp = ["127.0.0.1:%d" % self.port]
        if HAVE_V6:
            udp.append("[::1]:%d" % self.v6port)
            tcp.append("[::1]:%d" % self.v6port)
        config = tmp_path / "echo.toml"
        config.write_text(
            'state_dir = "state"\n'
            "[listen]\nudp = %s\ntcp = %s\n"
            "[transport]\nmax_message_size = 4096\ntcp_idle_timeout = 2\n"
            "[timers]\nt1 = 0.05\nt2 = 4.0\n" % (json.dumps(udp), json.dumps(tcp))
        )
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.seen: list = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.transport.echo_server", str(config)],
            cwd=str(REPO),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(lambda e: e["event"] == "ready", 20)

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                pass

    def wait_for(self, pred, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        for e in self.seen:
            if pred(e):
                self.seen.remove(e)
                return e
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and self.events.empty():
                raise AssertionError(
                    "event not seen; got %r; stderr: %s" % (self.seen, self._stderr())
                )
            try:
                e = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if pred(e):
                return e
            self.seen.append(e)

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    server = EchoServer(tmp_path_factory.mktemp("echo"))
    yield server
    server.stop()


def udp_socket(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(5)
    return s


def recv_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_udp_echo(echo):
    s = udp_socket()
    s.sendto(MSG, ("127.0.0.1", echo.port))
    data, addr = s.recvfrom(65535)
    assert data == b"ECHO " + MSG
    assert addr == ("127.0.0.1", echo.port)
    e = echo.wait_for(lambda e: e["event"] == "receive" and e["flow"]["remote"][1] == s.getsockname()[1])
    assert e["flow"]["transport"] == "udp"
    assert e["flow"]["local"] == ["127.0.0.1", echo.port]
    assert e["flow"]["conn"] == 0
    s.close()


def test_udp_keepalive_not_answered(echo):
    s = udp_socket()
    s.settimeout(0.5)
    s.sendto(b"\r\n\r\n", ("127.0.0.1", echo.port))
    with pytest.raises(socket.timeout):
        s.recvfrom(100)
    s.close()


def test_udp_too_large(echo):
    s = udp_socket()
    s.sendto(MSG.replace(b"hello", b"x" * 5000), ("127.0.0.1", echo.port))
    data, _ = s.recvfrom(65535)
    assert data.startswith(b"SIP/2.0 413")
    e = echo.wait_for(lambda e: e["event"] == "too_large" and e["flow"]["remote"][1] == s.getsockname()[1])
    assert e["size"] < 4096
    s.close()


@pytest.mark.skipif(not HAVE_V6, reason="no IPv6 loopback")
def test_udp_ipv6_echo(echo):
    s = udp_socket("::1")
    s.sendto(MSG, ("::1", echo.v6port))
    data, addr = s.recvfrom(65535)
    assert data == b"ECHO " + MSG
    assert addr[:2] == ("::1", echo.v6port)
    s.close()


def test_tcp_echo_framing_and_pong(echo):
    with socket.create_connection(("127.0.0.1", echo.port), timeout=5) as s:
        s.sendall(MSG + MSG[:20])
        assert recv_exactly(s, len(MSG) + 5) == b"ECHO " + MSG
        s.sendall(MSG[20:])
        assert recv_exactly(s, len(MSG) + 5) == b"ECHO " + MSG
        s.sendall(b"\r\n\r\n")
        assert recv_exactly(s, 2) == b"\r\n"
        port = s.getsockname()[1]
    e = echo.wait_for(lambda e: e["event"] == "closed" and e["flow"]["remote"][1] == port)
    assert e["flow"]["transport"] == "tcp"
    assert e["flow"]["conn"] > 0


def test_tcp_too_large_answered_then_closed(echo):
    with socket.create_connection(("127.0.0.1", echo.port), timeout=5) as s:
        s.sendall(b"INVITE sip:x SIP/2.0\r\nX: " + b"a" * 5000)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"SIP/2.0 413")


def test_tcp_idle_connection_closed(echo):
    with socket.create_connection(("127.0.0.1", echo.port), timeout=10) as s:
        started = time.monotonic()
        assert s.recv(10) == b""
        assert 1.5 < time.monotonic() - started < 8


@pytest.mark.skipif(not HAVE_V6, reason="no IPv6 loopback")
def test_tcp_ipv6_echo(echo):
    with socket.create_connection(("::1", echo.v6port), timeout=5) as s:
        s.sendall(MSG)
        assert recv_exactly(s, len(MSG) + 5) == b"ECHO " + MSG


def test_send_to_tcp_connects_once_and_reuses(echo):
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(5)
    lst.settimeout(5)
    port = lst.getsockname()[1]
    u = udp_socket()
    try:
        u.sendto(b"SENDTO tcp 127.0.0.1 %d\nfirst" % port, ("127.0.0.1", echo.port))
        conn, _ = lst.accept()
        conn.settimeout(5)
        assert recv_exactly(conn, 5) == b"first"
        first = echo.wait_for(lambda e: e["event"] == "sent_to" and e["flow"]["remote"] == ["127.0.0.1", port])
        u.sendto(b"SENDTO tcp 127.0.0.1 %d\nsecond" % port, ("127.0.0.1", echo.port))
        assert recv_exactly(conn, 6) == b"second"
        second = echo.wait_for(lambda e: e["event"] == "sent_to" and e["flow"]["remote"] == ["127.0.0.1", port])
        assert first["flow"] == second["flow"]
        assert first["flow"]["local"] == ["127.0.0.1", echo.port]
        # what the peer sends back arrives on the same flow
        conn.sendall(MSG)
        assert recv_exactly(conn, len(MSG) + 5) == b"ECHO " + MSG
        e = echo.wait_for(lambda e: e["event"] == "receive" and e["flow"]["remote"] == ["127.0.0.1", port])
        assert e["flow"] == first["flow"]
        lst.settimeout(0.3)
        with pytest.raises(socket.timeout):
            lst.accept()
        conn.close()
        echo.wait_for(lambda e: e["event"] == "closed" and e["flow"] == first["flow"])
    finally:
        u.close()
        lst.close()


def test_send_to_tcp_refused_reports_failure(echo):
    port = free_port()
    u = udp_socket()
    try:
        u.sendto(b"SENDTO tcp 127.0.0.1 %d\nlost" % port, ("127.0.0.1", echo.port))
        e = echo.wait_for(lambda e: e["event"] == "failed" and e["flow"]["remote"] == ["127.0.0.1", port])
        assert e["flow"]["transport"] == "tcp"
    finally:
        u.close()


def test_send_to_udp_from_listening_socket(echo):
    target = udp_socket()
    u = udp_socket()
    try:
        port = target.getsockname()[1]
        u.sendto(b"SENDTO udp 127.0.0.1 %d\npayload" % port, ("127.0.0.1", echo.port))
        data, addr = target.recvfrom(100)
        assert data == b"payload"
        assert addr == ("127.0.0.1", echo.port)
    finally:
        u.close()
        target.close()
