"""The admin port: HTTP and WebSocket on one twisted.web Site, behind a bearer token.

Routes (every one needs the token except ``/healthz``):

* ``GET /`` and ``/static/*``: the admin page;
* ``GET /api/status``, ``/api/registrations[?user=NAME]``, ``/api/calls``: JSON;
* ``GET /metrics``: Prometheus text format;
* ``/events``: WebSocket, a snapshot then one JSON event per frame.

The token is taken from ``Authorization: Bearer T`` or ``?token=T``; the page and its files
also accept the ``reticulum_admin`` cookie, which the login page (the body of a 401 for
``/``) sets from ``#token=T`` or a prompt. A wrong or missing token gets 401 and nothing
else; a WebSocket handshake without it is refused the same way.

Each WebSocket client has a bounded queue (`QUEUE_LIMIT` events). Events are written
after the SIP work that produced them (``callLater(0)``) and only while the connection's
send buffer keeps up (the client is the transport's push producer); when the queue is
full, events for that client are dropped and counted, and the count is sent as a
``{"type": "dropped", "count": N}`` frame before the next event.
"""
from __future__ import annotations

import hmac
import json
import os
import secrets
from typing import Any, Dict, Optional, cast
from urllib.parse import unquote

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger
from twisted.web import resource, server, static
from twisted.web.resource import IResource
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from reticulum.admin.metrics import CONTENT_TYPE as METRICS_TYPE

__all__ = ["AdminSite", "load_or_create_token", "TOKEN_FILE", "STATIC_DIR", "QUEUE_LIMIT",
           "MAX_CLIENTS", "COOKIE"]

log = Logger(namespace="reticulum.admin")

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
TOKEN_FILE = "admin-token"
COOKIE = b"reticulum_admin"
#: events waiting per WebSocket client before the oldest new ones are dropped
QUEUE_LIMIT = 1000
#: WebSocket clients at once
MAX_CLIENTS = 32
#: largest frame a client may send (subscriptions are small)
MAX_CLIENT_FRAME = 16384


def load_or_create_token(state_dir: str) -> "tuple[str, bool]":
    """The token stored in ``state_dir/admin-token``, made (mode 0600) when missing.
    Returns (token, created)."""
    path = os.path.join(state_dir, TOKEN_FILE)
    try:
        with open(path) as f:
            token = f.read().strip()
        if token:
            return token, False
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(24)
    os.makedirs(state_dir, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token, True


class _Gate:
    """Is this request allowed? (constant-time comparisons of the token)"""

    def __init__(self, token: str):
        self.token = token.encode()

    def _same(self, given: Optional[bytes]) -> bool:
        return given is not None and hmac.compare_digest(given, self.token)

    def allowed(self, request, cookie: bool = False) -> bool:
        header = request.getHeader(b"authorization")
        if header is not None:
            scheme, _, value = header.partition(b" ")
            if scheme.lower() == b"bearer" and self._same(value.strip()):
                return True
        for value in request.args.get(b"token", ()):
            if self._same(value):
                return True
        if cookie:
            value = request.getCookie(COOKIE)
            if value is not None and self._same(unquote(value.decode("latin-1")).encode()):
                return True
        return False


def _json(request, data: Any) -> bytes:
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(data).encode()


class _Unauthorized(resource.Resource):
    isLeaf = True

    def __init__(self, login_page: bool):
        super().__init__()
        self.login_page = login_page

    def render(self, request):
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'Bearer realm="reticulum-admin"')
        request.setHeader(b"cache-control", b"no-store")
        if self.login_page:
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            with open(os.path.join(STATIC_DIR, "login.html"), "rb") as f:
                return f.read()
        request.setHeader(b"content-type", b"text/plain")
        return b"401 Unauthorized: an admin token is required\n"


class _Healthz(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return b"ok\n"


class _Json(resource.Resource):
    isLeaf = True

    def __init__(self, view):
        super().__init__()
        self.view = view

    def render_GET(self, request):
        return _json(request, self.view(request))


class _Metrics(resource.Resource):
    isLeaf = True

    def __init__(self, hub):
        super().__init__()
        self.hub = hub

    def render_GET(self, request):
        request.setHeader(b"content-type", METRICS_TYPE.encode())
        return self.hub.metrics.render()


class _Index(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain")
            return b"404 Not Found\n"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        with open(os.path.join(STATIC_DIR, "index.html"), "rb") as f:
            return f.read()


class _Files(static.File):
    """The page's files; a folder is not listed."""

    def directoryListing(self) -> resource.Resource:
        return resource.NoResource()


def _resource(child: Any) -> IResource:
    """Resources provide IResource (zope's @implementer on twisted.web's Resource, which
    mypy does not read): the cast says so."""
    return cast(IResource, child)


class _Root(resource.Resource):
    def __init__(self, gate: _Gate, hub, ws_factory):
        super().__init__()
        self.gate = gate
        api = resource.Resource()
        api.putChild(b"status", _resource(_Json(lambda request: hub.status())))
        api.putChild(b"registrations", _resource(_Json(lambda request: {
            "registrations": hub.registrations(_arg(request, b"user"))})))
        api.putChild(b"calls", _resource(_Json(lambda request: {"calls": hub.calls()})))
        self.putChild(b"api", _resource(api))
        self.putChild(b"metrics", _resource(_Metrics(hub)))
        self.putChild(b"events", _resource(WebSocketResource(ws_factory)))
        self.putChild(b"static", _resource(_Files(STATIC_DIR)))
        self.putChild(b"", _resource(_Index()))

    def getChildWithDefault(self, path, request):
        # URLs may carry the token: never in a Referer; the page is never framed
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if path == b"healthz" and not request.postpath:
            return _Healthz()
        page = path in (b"", b"static")
        if not self.gate.allowed(request, cookie=page):
            return _Unauthorized(login_page=path == b"" and request.method == b"GET")
        return resource.Resource.getChildWithDefault(self, path, request)


def _arg(request, name: bytes) -> Optional[str]:
    values = request.args.get(name)
    return values[0].decode("utf-8", "replace") if values else None


# -- WebSocket ---------------------------------------------------------------------------------


def _matches(event: Dict[str, Any], wanted: Dict[str, Any]) -> bool:
    types = wanted.get("types")
    if types and event["type"] not in types:
        return False
    call_id = wanted.get("call_id")
    if call_id and event.get("call_id") != call_id:
        return False
    user = wanted.get("user")
    if user:
        users = (event.get("user"), event.get("from_user"), event.get("to_user"))
        if user not in users and not any(
                isinstance(uri, str) and uri.split(":", 1)[-1].split("@", 1)[0] == user
                for uri in (event.get("from"), event.get("to"))):
            return False
    return True


def _filter(data: Any) -> Optional[Dict[str, Any]]:
    """A subscription as sent by a client, checked; None when malformed."""
    if not isinstance(data, dict):
        return None
    out: Dict[str, Any] = {}
    for key in ("call_id", "user"):
        value = data.get(key)
        if value is not None:
            if not isinstance(value, str) or len(value) > 1024:
                return None
            out[key] = value
    types = data.get("types")
    if types is not None:
        if not isinstance(types, list) or len(types) > 16 or \
                not all(isinstance(t, str) for t in types):
            return None
        out["types"] = frozenset(types)
    unknown = set(data) - {"call_id", "user", "types"}
    return None if unknown else out


@implementer(IPushProducer)
class AdminEventsProtocol(WebSocketServerProtocol):
    """One admin WebSocket client: a filter, a bounded queue, a dropped count."""

    #: set by autobahn from the factory's protocol options (setProtocolOptions)
    maxMessagePayloadSize: int

    def onConnect(self, request):
        factory = self.factory
        if len(factory.hub.clients) >= MAX_CLIENTS:
            raise ConnectionDeny(503, "Too many admin clients")
        self.queue: list = []
        self.dropped = 0
        self.wanted: Dict[str, Any] = {}
        self.paused = False
        self._flush_call = None
        return None

    def onOpen(self):
        hub = self.factory.hub
        transport = self.transport
        try:
            if transport.producer is not None:
                transport.unregisterProducer()
            transport.registerProducer(self, True)
        except Exception:  # a transport without flow control: no pausing then
            pass
        self._send_json(hub.snapshot())
        hub.clients.append(self)

    def offer(self, event: Dict[str, Any]) -> None:
        """Called by the hub for every event (on the SIP path: only a filter and an append)."""
        if self.wanted and not _matches(event, self.wanted):
            return
        if len(self.queue) >= QUEUE_LIMIT:
            self.dropped += 1
            self.factory.hub.dropped(1)
            return
        self.queue.append(event)
        if self._flush_call is None and not self.paused:
            self._flush_call = self.factory.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        queue = self.queue
        sent = 0
        while queue and not self.paused:
            if self.dropped:
                self._send_json({"type": "dropped", "count": self.dropped,
                            "time": self.factory.hub.clock()})
                self.dropped = 0
                continue
            batch = queue[:64]
            del queue[:64]
            for event in batch:
                self._send_json(event)
            sent += len(batch)
        if queue and not self.paused and self._flush_call is None:
            self._flush_call = self.factory.reactor.callLater(0, self._flush)

    def _send_json(self, data: Dict[str, Any]) -> None:
        """One event or reply as a JSON text message. (Not `_send`: that is autobahn's own
        method for its send queue.)"""
        # autobahn applies maxMessagePayloadSize both ways; it is meant for what clients send
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            self.sendMessage(json.dumps(data, default=_default).encode("utf-8"), isBinary=False)
        finally:
            self.maxMessagePayloadSize = limit

    # IPushProducer: the connection's send buffer is full / drained again
    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        if (self.queue or self.dropped) and self._flush_call is None:
            self._flush_call = self.factory.reactor.callLater(0, self._flush)

    def stopProducing(self):
        self.paused = True

    def onMessage(self, payload, isBinary):
        try:
            data = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self._send_json({"type": "error", "error": "not JSON"})
            return
        wanted = _filter(data.get("subscribe")) if isinstance(data, dict) else None
        if wanted is None:
            self._send_json({"type": "error", "error": 'expected {"subscribe": {"call_id", "user", '
                                                  '"types"}}'})
            return
        self.wanted = wanted
        self.queue = [event for event in self.queue if _matches(event, wanted)]
        self._send_json({"type": "subscribed", "filter": dict(
            wanted, types=sorted(wanted["types"])) if "types" in wanted else wanted})

    def onClose(self, wasClean, code, reason):
        hub = self.factory.hub
        if self in hub.clients:
            hub.clients.remove(self)
        call = getattr(self, "_flush_call", None)
        if call is not None and call.active():
            call.cancel()
        self._flush_call = None
        self.queue = []


def _default(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


class _EventsFactory(WebSocketServerFactory):
    """The admin WebSocket: its protocols find the hub and the reactor here."""

    protocol = AdminEventsProtocol

    def __init__(self, hub: Any, reactor: Any) -> None:
        super().__init__()
        self.hub = hub
        self.reactor = reactor


class AdminSite(server.Site):
    """The admin port's Site. Requests are not written to the log (URLs carry the token)."""

    def __init__(self, hub, token: str, reactor=None):
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        factory = _EventsFactory(hub, reactor)
        factory.setProtocolOptions(maxFramePayloadSize=MAX_CLIENT_FRAME,
                                   maxMessagePayloadSize=MAX_CLIENT_FRAME,
                                   autoPingInterval=30, autoPingTimeout=15)
        self.gate = _Gate(token)
        super().__init__(_Root(self.gate, hub, factory))
        self.noisy = False

    def log(self, request):
        pass
