"""Caps on stream connections and a deadline for each message on them.

Every listening stream socket (tcp, tls, ws, wss) is wrapped in a ``GuardFactory``, outermost
(outside TLS and HTTP), so each accepted socket is one ``GuardedConnection`` whatever it
carries:

* ``[transport] max_connections_per_ip``: a source (an IPv4 address, an IPv6 /64) with that
  many connections open has its new ones closed at once, before anything is read;
* ``[transport] max_connections``: all connections together, ours to other hosts included
  (default: the open-files soft limit less ``RESERVED_FILES``; never above that);
* ``[transport] head_timeout``: a new connection must deliver a whole message within it, and
  each later message must be whole within it of its first byte. Between messages a connection
  may idle (``tcp_idle_timeout``); a client trickling bytes is closed. The protocols inside
  say when a message starts and ends (``message_started`` / ``message_done``); for TLS the
  handshake counts as part of the first message, for WebSocket the HTTP upgrade request.

Refusals and closings are logged once per burst and source, not once per connection.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

from reticulum.addresses import source_key

__all__ = ["ConnectionLimits", "GuardFactory", "GuardedConnection", "find_guard",
           "default_max_connections", "RESERVED_FILES"]

log = Logger(namespace="reticulum.transport")

#: open files kept back from the connection cap: listening sockets, SQLite, logs, threads
RESERVED_FILES = 100
#: a burst of refusals from one source ends after this many quiet seconds
BURST_QUIET = 10.0
#: at most this many sources have a burst of refusals remembered; the rest share one line
MAX_BURSTS = 1024


def open_files_limit() -> Optional[int]:
    """The soft limit on open files, or None when there is none (or no way to know)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    return soft


def default_max_connections(soft: Optional[int] = None) -> int:
    """The most connections the open-files limit leaves room for."""
    if soft is None:
        soft = open_files_limit()
    if soft is None:
        return 1 << 20
    return max(16, soft - RESERVED_FILES)


class ConnectionLimits:
    """Counts connections per source and in all; decides who may connect; logs refusals."""

    def __init__(self, clock: Any, per_source: int, total: int, head_timeout: float) -> None:
        self.clock = clock
        self.per_source = per_source
        self.max_total = total
        self.head_timeout = head_timeout
        self.total = 0
        self.by_source: Dict[str, int] = {}
        # (what, source) -> [refused since the first line, last time]
        self._bursts: Dict[Tuple[str, str], List[float]] = {}
        self._burst_timer: Any = None

    # -- accepting

    def admit(self, host: str) -> bool:
        """May a new connection from `host` be accepted?"""
        if self.total >= self.max_total:
            self.refused("connections refused: max_connections (%d) reached" % self.max_total,
                         "*")
            return False
        source = source_key(host)
        if self.by_source.get(source, 0) >= self.per_source:
            self.refused("connections refused: max_connections_per_ip (%d) reached"
                         % self.per_source, source)
            return False
        return True

    def opened(self, source: str) -> None:
        self.total += 1
        self.by_source[source] = self.by_source.get(source, 0) + 1

    def closed(self, source: str) -> None:
        self.total -= 1
        left = self.by_source.get(source, 0) - 1
        if left > 0:
            self.by_source[source] = left
        else:
            self.by_source.pop(source, None)

    # -- connecting out

    def reserve_outgoing(self) -> bool:
        """Count one connection of ours, if the global cap leaves room."""
        if self.total >= self.max_total:
            self.refused("outgoing connections refused: max_connections (%d) reached"
                         % self.max_total, "*")
            return False
        self.total += 1
        return True

    def release_outgoing(self) -> None:
        self.total -= 1

    # -- logging, once per burst

    def refused(self, what: str, source: str) -> None:
        """Log the first of a burst of `what` from `source`; count the rest."""
        now = self.clock.seconds()
        key = (what, source)
        burst = self._bursts.get(key)
        if burst is not None:
            burst[0] += 1
            burst[1] = now
            return
        if len(self._bursts) >= MAX_BURSTS:
            key = (what, "other sources")
            burst = self._bursts.get(key)
            if burst is not None:
                burst[0] += 1
                burst[1] = now
                return
        log.warn("{source}: {what} (logged once per burst)", source=key[1], what=what)
        self._bursts[key] = [0, now]
        if self._burst_timer is None:
            self._burst_timer = self.clock.callLater(BURST_QUIET, self._end_bursts)

    def _end_bursts(self) -> None:
        self._burst_timer = None
        now = self.clock.seconds()
        for key, (count, last) in list(self._bursts.items()):
            if now - last < BURST_QUIET:
                continue
            del self._bursts[key]
            if count:
                log.info("{source}: {count} more {what} (burst over)", source=key[1],
                         count=int(count), what=key[0].split(":", 1)[0])
        if self._bursts:
            self._burst_timer = self.clock.callLater(BURST_QUIET, self._end_bursts)

    def stop(self) -> None:
        if self._burst_timer is not None and self._burst_timer.active():
            self._burst_timer.cancel()
        self._burst_timer = None


class GuardedConnection(ProtocolWrapper):
    """One accepted socket: counted while open, closed when a message takes too long."""

    source = ""
    #: HTTP (ws, wss before the upgrade): any bytes start a message, the request head ends it
    starts_on_data = False
    #: when the message being waited for began (None: none is pending)
    _waiting_since: Optional[float] = None
    _timer: Any = None
    _lost = False
    # twisted's zope interfaces do not type-check as attributes
    transport: Any
    wrappedProtocol: Any
    factory: "GuardFactory"

    def makeConnection(self, transport: Any) -> None:
        # the first message is pending from the start (a TLS handshake, an HTTP upgrade, SIP)
        self.message_started()
        ProtocolWrapper.makeConnection(self, transport)

    def dataReceived(self, data: bytes) -> None:
        if self.starts_on_data and self._waiting_since is None:
            self.message_started()
        self.wrappedProtocol.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        timer = self._timer
        if timer is not None and timer.active():
            timer.cancel()
        self._timer = None
        ProtocolWrapper.connectionLost(self, reason)

    # -- what the protocols inside say

    def message_started(self) -> None:
        """Bytes of a message are in: the whole of it must follow within head_timeout."""
        if self._waiting_since is not None:
            return
        limits = self.factory.limits
        self._waiting_since = limits.clock.seconds()
        if self._timer is None:
            self._timer = limits.clock.callLater(limits.head_timeout, self._check)

    def message_done(self) -> None:
        """A whole message arrived and nothing of the next one yet."""
        self._waiting_since = None

    def _check(self) -> None:
        self._timer = None
        since = self._waiting_since
        if since is None or self._lost:
            return
        limits = self.factory.limits
        left = since + limits.head_timeout - limits.clock.seconds()
        if left > 0:
            self._timer = limits.clock.callLater(left, self._check)
            return
        limits.refused("connections closed: no whole message within head_timeout (%g s)"
                       % limits.head_timeout, self.source)
        self.transport.abortConnection()


class GuardFactory(WrappingFactory):
    """Wraps a listening factory: admission by ``ConnectionLimits`` and the message deadline."""

    protocol = GuardedConnection
    noisy = False

    def __init__(self, wrapped: Any, limits: ConnectionLimits, http: bool = False) -> None:
        super().__init__(wrapped)
        self.limits = limits
        self.http = http

    def buildProtocol(self, addr: Any) -> Any:  # a GuardedConnection, or None to refuse
        if not self.limits.admit(getattr(addr, "host", "")):
            return None  # the reactor closes the socket at once
        p: Any = super().buildProtocol(addr)
        if self.http:
            p.starts_on_data = True
        return p

    def registerProtocol(self, p: GuardedConnection) -> None:
        p.source = source_key(p.transport.getPeer().host)
        self.limits.opened(p.source)

    def unregisterProtocol(self, p: GuardedConnection) -> None:
        self.limits.closed(p.source)


def find_guard(transport: Any) -> Optional[GuardedConnection]:
    """The guard of a protocol's connection (through a TLS layer), or None (ours, outgoing)."""
    for _ in range(4):
        if transport is None:
            return None
        if isinstance(transport, GuardedConnection):
            return transport
        # ProtocolWrapper forwards unknown attributes to its transport: look in the instance
        transport = getattr(transport, "__dict__", {}).get("transport")
    return None
