"""SIP over WebSocket (RFC 7118) on loopback: the real ws/wss listeners in a
reactor subprocess (tests/transport/echo_server.py: an echoing fake core),
driven by an autobahn WebSocket client.

``WSClient`` (autobahn on asyncio, in a thread of its own) is shared with
the integration tests.  The server side runs autobahn on Twisted in another
process: txaio serves one framework per process.
"""

from __future__ import annotations

import asyncio
import json
import queue
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import pytest
import txaio

txaio.use_asyncio()

from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol  # noqa: E402

from tests.transport.conftest import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

SIP = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/WS abc.invalid;branch=z9hG4bK1\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)


_LOOP: Optional[asyncio.AbstractEventLoop] = None
_LOOP_LOCK = threading.Lock()


def client_loop() -> asyncio.AbstractEventLoop:
    """The one asyncio loop (in a daemon thread) every WSClient of this process runs on."""
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="ws-clients", daemon=True).start()
            txaio.config.loop = loop
            _LOOP = loop
        return _LOOP


class WSClient:
    """A blocking WebSocket client (autobahn, asyncio loop in a thread).

    ``url`` like ``ws://127.0.0.1:8080/``; ``protocols`` offered in the
    handshake; ``cafile`` to check a wss server's certificate (else it is not
    checked).  After construction either ``opened`` is set or ``closed`` is
    (handshake refused: ``close_reason`` says why).
    """

    def __init__(
        self,
        url: str,
        protocols: Sequence[str] = ("sip",),
        origin: Optional[str] = None,
        timeout: float = 5.0,
        cafile: Optional[str] = None,
        max_frame: int = 0,
    ) -> None:
        self.url = url
        self.messages: "queue.Queue[Tuple[bytes, bool]]" = queue.Queue()
        self.pongs: "queue.Queue[bytes]" = queue.Queue()
        self.opened = threading.Event()
        self.closed = threading.Event()
        self.subprotocol: Optional[str] = None
        self.was_clean: Optional[bool] = None
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        self.protocol: Any = None
        self.local: Optional[Tuple[str, int]] = None
        self.loop = client_loop()
        client = self

        class Protocol(WebSocketClientProtocol):
            def onConnect(self, response: Any) -> None:
                client.subprotocol = response.protocol

            def onOpen(self) -> None:
                client.protocol = self
                client.opened.set()

            def onMessage(self, payload: bytes, isBinary: bool) -> None:
                client.messages.put((payload, isBinary))

            def onPong(self, payload: bytes) -> None:
                client.pongs.put(payload)

            def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
                client.was_clean = wasClean
                client.close_code = code
                client.close_reason = reason
                client.closed.set()

        factory = WebSocketClientFactory(url, protocols=list(protocols) or None, origin=origin, loop=self.loop)
        factory.protocol = Protocol
        if max_frame:
            factory.setProtocolOptions(maxFramePayloadSize=max_frame)
        secure = url.startswith("wss:")
        ctx = None
        if secure:
            ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
            if not cafile:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        host, port = factory.host, factory.port

        async def connect() -> Any:
            transport, _ = await self.loop.create_connection(
                factory, host, port, ssl=ctx, server_hostname=host if secure else None
            )
            return transport.get_extra_info("sockname")

        fut = asyncio.run_coroutine_threadsafe(connect(), self.loop)
        sockname = fut.result(timeout)
        self.local = (sockname[0], sockname[1])
        deadline = time.monotonic() + timeout
        while not (self.opened.is_set() or self.closed.is_set()):
            if time.monotonic() > deadline:
                raise AssertionError("no WebSocket handshake answer from %s" % url)
            time.sleep(0.01)

    # -- sending

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args, **kwargs)
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(5)

    def send(self, data: bytes, binary: bool = False) -> None:
        assert self.protocol is not None, "not open"
        self._call(self.protocol.sendMessage, data, isBinary=binary)

    def send_raw_frame(self, data: bytes, binary: bool = False) -> None:
        """One frame, no size check on our side (to go over the server's limit)."""
        self._call(self.protocol.sendMessage, data, isBinary=binary)

    def close(self, code: int = 1000) -> None:
        if self.protocol is not None and not self.closed.is_set():
            self._call(self.protocol.sendClose, code=code)
            self.closed.wait(5)
        self.shutdown()

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        if self.protocol is not None:
            self._call(self.protocol.dropConnection, abort=True)
            self.closed.wait(5)
        self.shutdown()

    def shutdown(self) -> None:
        if self.protocol is not None and not self.closed.is_set():
            self._call(self.protocol.dropConnection, abort=True)

    # -- receiving

    def recv(self, timeout: float = 5.0) -> bytes:
        payload, _ = self.recv_frame(timeout)
        return payload

    def recv_frame(self, timeout: float = 5.0) -> Tuple[bytes, bool]:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no WebSocket message within %.1f s (closed: %s)" % (timeout, self.closed.is_set())) from None


def raw_handshake(port: int, protocol: Optional[str] = "sip", origin: Optional[str] = None, path: str = "/") -> bytes:
    """A WebSocket opening handshake by hand; returns the HTTP status line and headers."""
    lines = [
        "GET %s HTTP/1.1" % path,
        "Host: 127.0.0.1:%d" % port,
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if protocol:
        lines.append("Sec-WebSocket-Protocol: %s" % protocol)
    if origin:
        lines.append("Origin: %s" % origin)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.partition(b"\r\n\r\n")[0]


# ---------------------------------------------------------------------------
# the server: transports with an echoing core, in a subprocess


class WSEchoServer:
    def __init__(self, tmp_path: Path, origins: Sequence[str] = (), max_frame: int = 4096) -> None:
        self.ws_port = free_port()
        self.wss_port = free_port()
        self.tmp_path = tmp_path
        config = tmp_path / "echo.toml"
        config.write_text(
            'state_dir = "state"\n'
            "[listen]\n"
            'ws = ["127.0.0.1:%d"]\n'
            'wss = ["127.0.0.1:%d"]\n'
            "[transport]\nmax_message_size = 2048\n"
            "[websocket]\nmax_frame_size = %d\nallowed_origins = %s\n"
            % (self.ws_port, self.wss_port, max_frame, json.dumps(list(origins)))
        )
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.seen: List[dict] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.transport.echo_server", str(config)],
            cwd=str(REPO),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(lambda e: e["event"] in ("ready", "bind_error"), 20)

    @property
    def certificate(self) -> str:
        return str(self.tmp_path / "state" / "tls" / "certificate.pem")

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                pass

    def wait_for(self, pred: Any, timeout: float = 5.0) -> dict:
        for e in self.seen:
            if pred(e):
                self.seen.remove(e)
                return e
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("event not seen; got %r" % (self.seen,))
            try:
                e = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError("echo server exited: %s" % self.proc.stderr.read().decode(errors="replace"))
                continue
            if pred(e):
                return e
            self.seen.append(e)

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
    server = WSEchoServer(tmp_path_factory.mktemp("wsecho"))
    yield server
    server.stop()


def ws_url(echo: WSEchoServer, secure: bool = False) -> str:
    if secure:
        return "wss://127.0.0.1:%d/" % echo.wss_port
    return "ws://127.0.0.1:%d/" % echo.ws_port


# ---------------------------------------------------------------------------
# the handshake


def test_handshake_with_sip_subprotocol(echo):
    c = WSClient(ws_url(echo))
    try:
        assert c.opened.is_set()
        assert c.subprotocol == "sip"
        head = raw_handshake(echo.ws_port)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"sec-websocket-protocol: sip" in head.lower()
    finally:
        c.close()


def test_handshake_without_sip_subprotocol_is_refused(echo):
    head = raw_handshake(echo.ws_port, protocol=None)
    assert head.startswith(b"HTTP/1.1 400"), head
    head = raw_handshake(echo.ws_port, protocol="chat")
    assert head.startswith(b"HTTP/1.1 400"), head
    c = WSClient(ws_url(echo), protocols=())
    assert not c.opened.is_set() and c.closed.is_set()
    assert "400" in (c.close_reason or ""), c.close_reason
    c.shutdown()


def test_handshake_offering_sip_among_others_picks_sip(echo):
    head = raw_handshake(echo.ws_port, protocol="chat, sip")
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"sec-websocket-protocol: sip" in head.lower()


def test_the_websocket_is_also_answered_on_other_paths(echo):
    assert raw_handshake(echo.ws_port, path="/ws").startswith(b"HTTP/1.1 101")


# ---------------------------------------------------------------------------
# messages


def test_text_and_binary_frames_each_carry_one_message(echo):
    c = WSClient(ws_url(echo))
    try:
        c.send(SIP)
        payload, binary = c.recv_frame()
        assert payload == b"ECHO " + SIP and binary is False
        e = echo.wait_for(lambda e: e["event"] == "receive" and e["flow"]["remote"][1] == c.local[1])
        assert e["flow"]["transport"] == "ws"
        assert e["flow"]["local"] == ["127.0.0.1", echo.ws_port]
        assert e["flow"]["conn"] > 0
        assert e["size"] == len(SIP)
        # two messages in two binary frames: two deliveries, in order
        c.send(SIP.replace(b"hello", b"one!!"), binary=True)
        c.send(SIP.replace(b"hello", b"two!!"), binary=True)
        assert c.recv().endswith(b"one!!")
        assert c.recv().endswith(b"two!!")
        # a body that is not UTF-8 goes back in a binary frame
        c.send(SIP.replace(b"hello", b"\xff\xfe\x00\x01\x02"), binary=True)
        payload, binary = c.recv_frame()
        assert binary is True and payload.endswith(b"\xff\xfe\x00\x01\x02")
    finally:
        c.close()
    e = echo.wait_for(lambda e: e["event"] == "closed" and e["flow"]["remote"][1] == c.local[1])
    assert e["flow"]["transport"] == "ws"


def test_crlf_frames_are_keepalives(echo):
    c = WSClient(ws_url(echo))
    try:
        c.send(b"\r\n\r\n")
        c.send(b"\r\n" + SIP)
        assert c.recv() == b"ECHO " + SIP  # the keep-alive got no answer, the message did
    finally:
        c.close()


def test_ping_is_answered_with_pong(echo):
    c = WSClient(ws_url(echo))
    try:
        c._call(c.protocol.sendPing, b"are you there")
        assert c.pongs.get(timeout=5) == b"are you there"
    finally:
        c.close()


def test_frame_over_the_limit_closes_cleanly(echo):
    c = WSClient(ws_url(echo))
    c.send_raw_frame(SIP + b"x" * 5000)
    assert c.closed.wait(5)
    assert c.was_clean is True
    assert c.close_code == 1009  # message too big
    e = echo.wait_for(lambda e: e["event"] == "closed" and e["flow"]["remote"][1] == c.local[1])
    assert e["flow"]["transport"] == "ws"
    assert not any(e["event"] == "receive" and e["flow"]["remote"][1] == c.local[1] for e in echo.seen)
    c.shutdown()


def test_message_over_max_message_size_gets_413(echo):
    c = WSClient(ws_url(echo))
    try:
        c.send(SIP.replace(b"hello", b"y" * 3000).replace(b"Content-Length: 5", b"Content-Length: 3000"))
        assert c.recv().startswith(b"SIP/2.0 413")
    finally:
        c.close()


def test_server_closing_a_websocket_reports_the_flow_closed(echo):
    c = WSClient(ws_url(echo))
    c.abort()
    e = echo.wait_for(lambda e: e["event"] == "closed" and e["flow"]["remote"][1] == c.local[1])
    assert e["flow"]["transport"] == "ws"


def test_send_to_over_ws_fails_a_websocket_is_never_opened(echo):
    c = WSClient(ws_url(echo))
    try:
        c.send(b"SENDTO ws 127.0.0.1 9\n" + SIP)
        e = echo.wait_for(lambda e: e["event"] == "failed")
        assert e["flow"]["transport"] == "ws"
    finally:
        c.close()


# ---------------------------------------------------------------------------
# WSS and the web page


def test_wss_handshake_and_echo(echo):
    c = WSClient(ws_url(echo, secure=True), cafile=echo.certificate)
    try:
        assert c.opened.is_set() and c.subprotocol == "sip"
        c.send(SIP)
        assert c.recv() == b"ECHO " + SIP
        e = echo.wait_for(lambda e: e["event"] == "receive" and e["flow"]["remote"][1] == c.local[1])
        assert e["flow"]["transport"] == "wss"
        assert e["flow"]["local"] == ["127.0.0.1", echo.wss_port]
    finally:
        c.close()


def test_static_page_on_the_same_port(echo):
    with urllib.request.urlopen("http://127.0.0.1:%d/" % echo.ws_port, timeout=5) as r:
        assert r.status == 200
        assert "text/html" in r.headers["Content-Type"]
        assert b"Reticulum" in r.read()
    ctx = ssl.create_default_context(cafile=echo.certificate)
    with urllib.request.urlopen("https://127.0.0.1:%d/index.html" % echo.wss_port, timeout=5, context=ctx) as r:
        assert r.status == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen("http://127.0.0.1:%d/no-such-file.js" % echo.ws_port, timeout=5)
    assert e.value.code == 404


def test_tls_below_1_2_is_refused(echo):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with socket.create_connection(("127.0.0.1", echo.wss_port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"GET / HTTP/1.1\r\n\r\n")
                s.recv(10)


# ---------------------------------------------------------------------------
# origins


@pytest.fixture(scope="module")
def strict_echo(tmp_path_factory):
    server = WSEchoServer(tmp_path_factory.mktemp("wsstrict"), origins=["https://phone.example.org"])
    yield server
    server.stop()


def test_allowed_origins(strict_echo):
    assert raw_handshake(strict_echo.ws_port, origin="https://phone.example.org").startswith(b"HTTP/1.1 101")
    assert raw_handshake(strict_echo.ws_port, origin="https://PHONE.example.org/").startswith(b"HTTP/1.1 101")
    assert raw_handshake(strict_echo.ws_port, origin="https://evil.example.com").startswith(b"HTTP/1.1 403")
    assert raw_handshake(strict_echo.ws_port, origin=None).startswith(b"HTTP/1.1 403")
