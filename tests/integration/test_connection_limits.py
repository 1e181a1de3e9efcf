"""Connection caps and the message deadline against the real server, over real sockets.

Other 127.x source addresses stand for other clients."""
from __future__ import annotations

import base64
import os
import socket
import time

from tests.integration.harness import free_port
from tests.integration.sipclient import build, read_message, status

ATTACKER = "127.0.0.2"
CLIENT = "127.0.0.3"
LATECOMER = "127.0.0.4"


def connect(server, ip, port=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((ip, 0))
    sock.settimeout(5)
    sock.connect((server.host, port or server.port))
    return sock


def options(sock):
    """An OPTIONS on a connection; the status of the answer."""
    local = sock.getsockname()
    sock.sendall(build("OPTIONS", "sip:%s:%d" % sock.getpeername(), local, transport="TCP",
                       from_="<sip:probe@%s>;tag=o" % local[0]))
    return status(read_message(sock)[0])


def closed_by_server(sock, timeout=5.0) -> bool:
    """Does the server close this connection (without a word) within `timeout`?"""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_connections_beyond_the_caps_are_refused_others_are_served(start_server):
    ws_port = free_port()
    server = start_server(listen={"ws": ["127.0.0.1:%d" % ws_port]},
                          transport={"max_connections_per_ip": 5, "max_connections": 8})
    held = []
    try:
        for _ in range(5):
            sock = connect(server, ATTACKER)
            assert options(sock) == 200
            held.append(sock)
        # beyond the per-address cap: closed at once, over TCP and WebSocket alike
        for i in range(20):
            sock = connect(server, ATTACKER, ws_port if i % 2 else None)
            assert closed_by_server(sock), "connection %d from the attacker was kept" % i
            sock.close()
        # another address is still served
        for _ in range(3):
            sock = connect(server, CLIENT)
            assert options(sock) == 200
            held.append(sock)
        # the global cap (8) is reached: a third address is refused too...
        sock = connect(server, LATECOMER)
        assert closed_by_server(sock)
        sock.close()
        # ...until a connection ends
        held.pop(0).close()

        def served():
            s = connect(server, LATECOMER)
            try:
                return options(s) == 200
            except (ConnectionError, socket.timeout):
                return False
            finally:
                s.close()

        assert wait_for(served)
        log = server.read_log()
        # logged once per burst, not once per connection
        assert log.count("%s: connections refused: max_connections_per_ip (5)" % ATTACKER) == 1
        assert "connections refused: max_connections (8)" in log
    finally:
        for sock in held:
            sock.close()


def websocket(server, ip, port):
    """An open SIP WebSocket (the upgrade done) from `ip`."""
    sock = connect(server, ip, port)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                  "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
                  % (port, key)).encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock


def http_get(sock) -> int:
    """GET / on a kept-alive HTTP connection; the status, with the whole body read."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1])


def ws_frame(payload: bytes) -> bytes:
    """One masked text frame (a client's)."""
    mask = os.urandom(4)
    length = len(payload)
    head = bytes([0x81, 0x80 | length]) if length < 126 else \
        bytes([0x81, 0x80 | 126]) + length.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_a_slow_client_is_closed_after_the_head_timeout(start_server):
    ws_port = free_port()
    server = start_server(listen={"ws": ["127.0.0.1:%d" % ws_port]},
                          transport={"head_timeout": 1.5})
    # well-behaved clients: answered, and then free to idle past the deadline
    client = connect(server, CLIENT)
    browser = connect(server, CLIENT, ws_port)
    slow = []
    try:
        assert options(client) == 200
        assert http_get(browser) == 200
        message = build("OPTIONS", "sip:%s:%d" % (server.host, server.port),
                        (ATTACKER, 5060), transport="TCP")
        request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\r\n"
        for port, data in ((server.port, message), (ws_port, request)):
            sock = connect(server, ATTACKER, port)
            slow.append((sock, data))
        # and a WebSocket that trickles a SIP message frame by byte
        slow.append((websocket(server, ATTACKER, ws_port), ws_frame(message)))
        started = time.monotonic()
        sent = 0
        open_ = list(slow)
        while open_ and time.monotonic() - started < 30:
            for sock, data in list(open_):
                try:
                    sock.sendall(data[sent:sent + 1])  # one byte every 0.25 s
                    if closed_by_server(sock, 0.01):
                        open_.remove((sock, data))
                except (BrokenPipeError, ConnectionResetError):
                    open_.remove((sock, data))
            sent += 1
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        assert not open_, "a client trickling one byte at a time was kept for 30 s"
        assert elapsed < 15
        assert sent < min(len(message), len(request))  # closed before they finished
        # the idle, well-behaved clients are still served on their connections
        assert options(client) == 200
        assert http_get(browser) == 200
        assert "no whole message within head_timeout" in server.read_log()
    finally:
        client.close()
        browser.close()
        for sock, _ in slow:
            sock.close()
