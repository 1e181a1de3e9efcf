"""SIP over WebSocket and secure WebSocket (RFC 7118), with autobahn on Twisted.

Each ``[listen] ws`` / ``wss`` address is one twisted.web ``Site``:

* a request carrying ``Upgrade: websocket`` (on any path; JsSIP uses ``/``)
  becomes a WebSocket connection, a ``SIPWebSocketProtocol``;
* any other request is answered with the webphone's static files
  (``reticulum/webphone/static/``), so page and WebSocket share an origin.

WSS is the same Site inside TLS with the server certificate (``reticulum.certs``).

The opening handshake must offer the ``sip`` subprotocol (else 400), and an
``Origin`` in ``[websocket] allowed_origins`` when that list is not empty
(else 403).  Every frame, text or binary, carries one SIP message; frames of
only CR/LF are keep-alives.  A frame over ``[websocket] max_frame_size`` ends
the connection with a clean close (status 1009).  The server pings every
``PING_INTERVAL`` seconds and drops a peer that does not answer within
``PING_TIMEOUT``.

Every open WebSocket is one connection of the flow table with its own
``Flow`` (transport ``ws``/``wss``); the only way to reach a browser is that
flow, and when it closes the sink's ``flow_closed(flow)`` drops its bindings.  A
WebSocket is never opened by the server: ``send_to`` over ws/wss fails.
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Optional, Sequence

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web import resource, server, static

from reticulum.addresses import Flow
from reticulum.config import WebSocketConfig
from reticulum.transport.connection import ConnectionTable
from reticulum.transport.limits import find_guard
from reticulum.webphone import CONTENT_TYPES, STATIC_DIR, static_path

__all__ = [
    "SIPWebSocketProtocol",
    "SIPWebSocketFactory",
    "site_factory",
    "origin_allowed",
    "SUBPROTOCOL",
]

log = Logger(namespace="reticulum.transport")

SUBPROTOCOL = "sip"
PING_INTERVAL = 30.0
PING_TIMEOUT = 15.0
OPEN_HANDSHAKE_TIMEOUT = 10.0
CLOSE_HANDSHAKE_TIMEOUT = 2.0


def _normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: Optional[str], allowed: List[str]) -> bool:
    """Is a handshake with this Origin header accepted?  An empty list allows any;
    ``"*"`` in the list allows any; a missing Origin (non-browser client) is
    allowed only when the list allows any."""
    if not allowed or "*" in allowed:
        return True
    if not origin:
        return False
    return _normalize_origin(origin) in {_normalize_origin(a) for a in allowed}


class SIPWebSocketProtocol(WebSocketServerProtocol):
    """One WebSocket carrying SIP; a connection of the flow table."""

    #: set on open (class defaults keep idle instances small)
    flow: Optional[Flow] = None
    closed = False
    #: the connection's GuardedConnection: told when a SIP message starts and ends
    guard: Any = None
    #: twisted's zope interfaces do not type-check as attributes
    transport: Any

    # -- the handshake

    def onConnect(self, request: Any) -> Any:
        factory = self.factory
        if SUBPROTOCOL not in [p.lower() for p in (request.protocols or [])]:
            log.info(
                "websocket from {peer}: refused, no '{sub}' subprotocol offered",
                peer=request.peer,
                sub=SUBPROTOCOL,
            )
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, "the 'sip' WebSocket subprotocol is required")
        if not origin_allowed(request.origin, factory.allowed_origins):
            log.info("websocket from {peer}: origin {origin!r} refused", peer=request.peer, origin=request.origin)
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")
        return SUBPROTOCOL

    def onOpen(self) -> None:
        t = self.factory.table
        host = self.transport.getHost()
        peer = self.transport.getPeer()
        self.flow = Flow(self.factory.transport_name, (host.host, host.port), (peer.host, peer.port), t.next_conn_id())
        _forget_handshake(self)
        t.connection_made(self, (host.host, host.port))
        guard = self.guard = find_guard(self.transport)
        if guard is not None:
            guard.starts_on_data = False  # from now on frames say where messages are
            guard.message_done()  # the upgrade request was the first message

    # -- messages

    def dataReceived(self, data: bytes) -> None:
        WebSocketServerProtocol.dataReceived(self, data)
        guard = self.guard
        if guard is not None and _message_pending(self):
            guard.message_started()  # part of a frame or message is in

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        guard = self.guard
        if guard is not None:
            guard.message_done()
        flow = self.flow
        if flow is not None:
            self.factory.table.delivery.packet(payload, flow)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.closed = True
        if self.flow is not None:
            why = ""
            if code is not None and code not in (1000, 1001):
                why = "close code %s%s" % (code, (" " + reason) if reason else "")
            self.factory.table.connection_lost(self, why)

    # -- used by the flow table

    def write(self, data: bytes) -> bool:
        if self.closed or self.transport is None or self.state != WebSocketServerProtocol.STATE_OPEN:
            return False
        try:
            data.decode("utf-8")
            binary = False
        except UnicodeDecodeError:
            binary = True
        self.sendMessage(data, isBinary=binary)
        return True

    def close(self) -> None:
        if self.closed:
            return
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.sendClose(code=1001, reason="server going away")
        elif self.transport is not None:
            self.dropConnection(abort=True)


# -- autobahn's parser state
#
# autobahn keeps a protocol's opening handshake and its frame parser's state in plain
# instance attributes and documents no way to read or release them (its issue #640,
# "Reduce WebSocket connection memory footprint", is open). These two functions are the
# only places that touch them.

#: what autobahn keeps of the opening handshake for the life of the connection
_HANDSHAKE_ATTRIBUTES = ("http_request_data", "http_headers", "http_request_uri",
                         "http_request_params", "http_response_data")


def _forget_handshake(protocol: WebSocketServerProtocol) -> None:
    """The opening handshake is over: drop the request and response autobahn kept (nothing
    reads them after onOpen; they would stay for the life of the connection)."""
    attributes = vars(protocol)
    for name in _HANDSHAKE_ATTRIBUTES:
        attributes.pop(name, None)


def _message_pending(protocol: WebSocketServerProtocol) -> bool:
    """Is part of a frame, or of a fragmented message, in and waiting for the rest?"""
    return bool(protocol.data or protocol.current_frame is not None or protocol.inside_message)


class SIPWebSocketFactory(WebSocketServerFactory):
    """The WebSocket side of one listening address."""

    protocol = SIPWebSocketProtocol

    def __init__(self, table: ConnectionTable, transport_name: str, host: str, port: int,
                 settings: WebSocketConfig, reactor: Any) -> None:
        scheme = "wss" if transport_name == "wss" else "ws"
        h = "[%s]" % host if ":" in host else host
        WebSocketServerFactory.__init__(
            self,
            url="%s://%s:%d" % (scheme, h, port),
            protocols=[SUBPROTOCOL],
            server="Reticulum",
            reactor=reactor,
        )
        self.noisy = False
        self.table = table
        self.transport_name = transport_name
        self.allowed_origins = list(settings.allowed_origins)
        self.setProtocolOptions(
            maxFramePayloadSize=settings.max_frame_size,
            maxMessagePayloadSize=settings.max_frame_size,
            failByDrop=False,
            openHandshakeTimeout=OPEN_HANDSHAKE_TIMEOUT,
            closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT,
            autoPingInterval=PING_INTERVAL,
            autoPingTimeout=PING_TIMEOUT,
            webStatus=False,
        )


class _WebSocketResource(WebSocketResource):
    """Hands the connection over to autobahn, dropping the HTTP channel's timer."""

    def render(self, request: Any) -> Any:
        channel = request.channel
        try:
            channel.setTimeout(None)
        except Exception:  # pragma: no cover
            pass
        return WebSocketResource.render(self, request)


#: every file revalidates (Last-Modified / If-Modified-Since): an upgraded webphone is
#: picked up at the next load, and an unchanged one costs a 304
CACHE_CONTROL = b"no-cache"

#: the page may talk to its own origin and to WebSockets only, and never be framed
#: (a framed page could trick a person into granting the microphone)
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"permissions-policy", b"microphone=(self), camera=(), geolocation=()"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
    ),
)


class _StaticFiles(resource.Resource):
    """The webphone's files (GET and HEAD): only regular files of known types inside the
    folder, each with its Content-Type, a revalidating cache policy and security headers.
    A leaf: it reads the whole request path itself, so no traversal step can escape."""

    isLeaf = True

    def __init__(self, root: str, domains: Sequence[str] = ()) -> None:
        resource.Resource.__init__(self)
        self.root = root
        #: ``/config.json``: what the page cannot learn from its origin (the SIP domains,
        #: when it was opened by IP address); nothing secret
        self.config_json = json.dumps({"domains": list(domains)}).encode()

    def render(self, request: Any) -> Any:
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"method not allowed\n"
        if request.path == b"/config.json":
            request.setHeader(b"content-type", CONTENT_TYPES[".json"].encode())
            request.setHeader(b"cache-control", CACHE_CONTROL)
            request.setHeader(b"x-content-type-options", b"nosniff")
            return b"" if request.method == b"HEAD" else self.config_json
        path = static_path(self.root, request.path)
        if path is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"x-content-type-options", b"nosniff")
            return b"not found\n"
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        request.setHeader(b"cache-control", CACHE_CONTROL)
        f: Any = static.File(path)  # Any: its stubs type the content type as None
        f.type = CONTENT_TYPES[os.path.splitext(path)[1].lower()]
        f.encoding = None
        return f.render(request)


def _is_upgrade(request: Any) -> bool:
    upgrade = request.getHeader(b"upgrade")
    return upgrade is not None and b"websocket" in upgrade.lower()


class _Root(resource.Resource):
    """WebSocket upgrades on any path; static files otherwise."""

    def __init__(self, ws: resource.Resource, files: resource.Resource) -> None:
        resource.Resource.__init__(self)
        self.ws = ws
        self.files = files

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        if _is_upgrade(request):
            return self.ws
        return self.files  # a leaf that reads the whole path

    def render(self, request: Any) -> Any:
        if _is_upgrade(request):
            return self.ws.render(request)
        return self.files.render(request)


class _Request(server.Request):
    """Tells the connection's guard when an HTTP request head is complete."""

    def gotLength(self, length: Any) -> None:
        server.Request.gotLength(self, length)
        guard = find_guard(getattr(self.channel, "transport", None))
        if guard is not None:
            guard.message_done()


class _Site(server.Site):
    noisy = False
    requestFactory = _Request

    def log(self, request: Any) -> None:  # quiet: no access log lines
        pass


def site_factory(
    table: ConnectionTable, transport_name: str, host: str, port: int,
    settings: WebSocketConfig, domains: Sequence[str], reactor: Any, contexts: Any = None
) -> Any:
    """The listening factory for one ws/wss address: ``settings`` is ``[websocket]``,
    ``domains`` what the page is told this server serves (wss: ``contexts`` is a
    ``reticulum.certs.TLSContexts``)."""
    ws_factory = SIPWebSocketFactory(table, transport_name, host, port, settings, reactor)
    files = _StaticFiles(STATIC_DIR, domains)
    ws: Any = _WebSocketResource(ws_factory)  # Any: autobahn's resource is no twisted Resource
    root = _Root(ws, files)
    site: Any = _Site(root)  # Any: mypy cannot see zope's IProtocolFactory
    site.displayTracebacks = False
    if transport_name == "wss":
        wrapped = TLSMemoryBIOFactory(contexts.ws_server_options(), False, site)
        wrapped.noisy = False
        return wrapped
    return site
