"""SIP over TCP: server factory, connection protocol and outgoing connections.

Every connection, accepted or opened by us, is a ``StreamProtocol`` with a
unique connection id and its own ``Flow``; the flow table (``Transports``)
keeps them.  The protocol cuts the stream into messages with
``StreamFramer``, answers RFC 5626 keep-alive pings, closes connections
that stay idle longer than ``[transport] tcp_idle_timeout``, and tells the
connection's guard (``reticulum.transport.limits``; accepted connections
only) when a message starts and ends, for ``[transport] head_timeout``.

The same classes carry TLS later: only ``transport_name`` differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger

from reticulum.addresses import Flow
from reticulum.transport.framing import BAD_FRAMING, MESSAGE, PING, PONG, TOO_LARGE, StreamFramer
from reticulum.transport.limits import find_guard

if TYPE_CHECKING:  # pragma: no cover
    from reticulum.transport.flows import Transports

__all__ = ["StreamProtocol", "StreamServerFactory", "StreamClientFactory", "PendingConnection"]

log = Logger(namespace="reticulum.transport")


class StreamProtocol(Protocol):
    """One SIP stream connection (either direction)."""

    def __init__(self, transports: "Transports", transport_name: str = "tcp", flow: Optional[Flow] = None) -> None:
        self.transports = transports
        self.transport_name = transport_name
        #: set on connectionMade; preset for outgoing connections
        self.flow: Optional[Flow] = flow
        self.outgoing = flow is not None
        self.framer = StreamFramer(transports.max_message_size)
        self.connected_at = 0.0
        self.last_activity = 0.0
        self.closed = False
        self._idle_call = None
        #: the GuardedConnection of an accepted connection (None for ours)
        self.guard = None

    # -- twisted

    def connectionMade(self) -> None:
        t = self.transports
        now = t.clock.seconds()
        self.connected_at = self.last_activity = now
        if self.flow is None:
            host = self.transport.getHost()
            peer = self.transport.getPeer()
            self.flow = Flow(self.transport_name, (host.host, host.port), (peer.host, peer.port), t.next_conn_id())
        self.guard = find_guard(self.transport)
        t.connection_made(self)
        self._schedule_idle_check(t.idle_timeout)

    def dataReceived(self, data: bytes) -> None:
        t = self.transports
        self.last_activity = t.clock.seconds()
        core = t.core
        flow = self.flow
        guard = self.guard
        framer = self.framer
        for kind, payload in framer.feed(data):
            if kind is MESSAGE:
                if guard is not None:
                    guard.message_done()
                try:
                    core.message_received(payload, flow)
                except Exception:
                    log.failure("core failed on a message from {flow}", flow=str(flow))
            elif kind is PING:
                self.transport.write(PONG)
            else:
                log.info(
                    "{flow}: {reason}; closing the connection",
                    flow=str(flow),
                    reason=self.framer.reason,
                )
                try:
                    if kind is TOO_LARGE:
                        core.message_too_large(payload, flow)
                    elif kind is BAD_FRAMING:
                        core.message_received(payload, flow)
                except Exception:
                    log.failure("core failed on a message from {flow}", flow=str(flow))
                self.transport.loseConnection()
                break
        if guard is not None and framer.buffered:
            guard.message_started()  # part of a message is in: the rest must follow in time

    def connectionLost(self, reason=None) -> None:
        self.closed = True
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        self.transports.connection_lost(self, reason)

    # -- used by the flow table

    def write(self, data: bytes) -> bool:
        if self.closed or self.transport is None:
            return False
        self.last_activity = self.transports.clock.seconds()
        self.transport.write(data)
        return True

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.loseConnection()

    # -- idle timeout

    def _schedule_idle_check(self, delay: float) -> None:
        self._idle_call = self.transports.clock.callLater(delay, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_call = None
        if self.closed:
            return
        timeout = self.transports.idle_timeout
        idle = self.transports.clock.seconds() - self.last_activity
        if idle >= timeout:
            log.info("{flow} idle for {idle:.0f} s; closing", flow=str(self.flow), idle=idle)
            self.transport.loseConnection()
        else:
            self._schedule_idle_check(timeout - idle)


class StreamServerFactory(Factory):
    """Accepts connections on one listening socket."""

    noisy = False

    def __init__(self, transports: "Transports", transport_name: str = "tcp") -> None:
        self.transports = transports
        self.transport_name = transport_name

    def buildProtocol(self, addr) -> StreamProtocol:
        p = StreamProtocol(self.transports, self.transport_name)
        p.factory = self
        return p


class PendingConnection:
    """An outgoing connection being set up: data waits here until it is made."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.queue: List[bytes] = []
        self.connector = None
        self.closed = False

    def write(self, data: bytes) -> bool:
        if self.closed:
            return False
        self.queue.append(data)
        return True

    def close(self) -> None:
        if not self.closed and self.connector is not None:
            self.closed = True
            self.connector.disconnect()


class StreamClientFactory(ClientFactory):
    """Opens one outgoing connection for a PendingConnection."""

    noisy = False

    def __init__(self, transports: "Transports", pending: PendingConnection) -> None:
        self.transports = transports
        self.pending = pending

    def buildProtocol(self, addr) -> StreamProtocol:
        p = StreamProtocol(self.transports, self.pending.flow.transport, flow=self.pending.flow)
        p.factory = self
        return p

    def clientConnectionFailed(self, connector, reason) -> None:
        self.transports.connect_failed(self.pending, reason)

