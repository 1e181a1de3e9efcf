"""SIP over TCP: server factory, connection protocol and outgoing connections.

Every connection, accepted or opened by us, is a ``StreamProtocol`` with a
unique connection id and its own ``Flow``; the flow table (``Transports``)
keeps them (through ``reticulum.transport.connection``: this module never
sees the table's class).  The protocol cuts the stream into messages with
``StreamFramer``, answers RFC 5626 keep-alive pings, closes connections
that stay idle longer than ``[transport] tcp_idle_timeout``, and tells the
connection's guard (``reticulum.transport.limits``; accepted connections
only) when a message starts and ends, for ``[transport] head_timeout``.
What it receives goes to the table's ``Delivery`` (``reticulum.transport.sink``).

TLS uses the same classes (``reticulum.transport.tls``): only ``transport_name`` differs.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger

from reticulum.addresses import Flow
from reticulum.transport.connection import ConnectionTable, PendingConnection, failure_text
from reticulum.transport.framing import BAD_FRAMING, MESSAGE, PING, PONG, TOO_LARGE, StreamFramer
from reticulum.transport.limits import GuardedConnection, find_guard

__all__ = ["StreamProtocol", "StreamServerFactory", "StreamClientFactory"]

log = Logger(namespace="reticulum.transport")


class StreamProtocol(Protocol):
    """One SIP stream connection (either direction)."""

    #: twisted's zope interfaces do not type-check as attributes; the reactor's TCP transport
    transport: Any

    def __init__(self, table: ConnectionTable, transport_name: str = "tcp", flow: Optional[Flow] = None) -> None:
        self.table = table
        self.transport_name = transport_name
        #: set on connectionMade; preset for outgoing connections
        self.flow: Optional[Flow] = flow
        self.outgoing = flow is not None
        self.framer = StreamFramer(table.delivery.max_message_size)
        self.last_activity = 0.0
        self.closed = False
        self._idle_call: Any = None
        #: the GuardedConnection of an accepted connection (None for ours)
        self.guard: Optional[GuardedConnection] = None

    # -- twisted

    def connectionMade(self) -> None:
        t = self.table
        self.last_activity = t.clock.seconds()
        host = self.transport.getHost()
        if self.flow is None:
            peer = self.transport.getPeer()
            self.flow = Flow(self.transport_name, (host.host, host.port), (peer.host, peer.port), t.next_conn_id())
        self.guard = find_guard(self.transport)
        t.connection_made(self, (host.host, host.port))
        self._schedule_idle_check(t.idle_timeout)

    def dataReceived(self, data: bytes) -> None:
        t = self.table
        self.last_activity = t.clock.seconds()
        delivery = t.delivery
        flow = self.flow
        if flow is None:  # pragma: no cover - no data before connectionMade
            return
        guard = self.guard
        framer = self.framer
        for kind, payload in framer.feed(data):
            if kind is MESSAGE:
                if guard is not None:
                    guard.message_done()
                delivery.message(payload, flow)
            elif kind is PING:
                self.transport.write(PONG)
            else:
                log.info(
                    "{flow}: {reason}; closing the connection",
                    flow=str(flow),
                    reason=self.framer.reason,
                )
                if kind is TOO_LARGE:
                    delivery.too_large(payload, flow)
                elif kind is BAD_FRAMING:
                    delivery.message(payload, flow)  # answered 400, then closed
                self.transport.loseConnection()
                break
        if guard is not None and framer.buffered:
            guard.message_started()  # part of a message is in: the rest must follow in time

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        self.table.connection_lost(self, failure_text(reason))

    # -- used by the flow table

    def write(self, data: bytes) -> bool:
        if self.closed or self.transport is None:
            return False
        self.last_activity = self.table.clock.seconds()
        self.transport.write(data)
        return True

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.loseConnection()

    # -- idle timeout

    def _schedule_idle_check(self, delay: float) -> None:
        self._idle_call = self.table.clock.callLater(delay, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_call = None
        if self.closed:
            return
        timeout = self.table.idle_timeout
        idle = self.table.clock.seconds() - self.last_activity
        if idle >= timeout:
            log.info("{flow} idle for {idle:.0f} s; closing", flow=str(self.flow), idle=idle)
            self.transport.loseConnection()
        else:
            self._schedule_idle_check(timeout - idle)


class StreamServerFactory(Factory):
    """Accepts connections on one listening socket."""

    noisy = False

    def __init__(self, table: ConnectionTable, transport_name: str = "tcp") -> None:
        self.table = table
        self.transport_name = transport_name

    def buildProtocol(self, addr: Any) -> StreamProtocol:
        p = StreamProtocol(self.table, self.transport_name)
        p.factory = self
        return p


class StreamClientFactory(ClientFactory):
    """Opens one outgoing connection for a PendingConnection."""

    noisy = False

    def __init__(self, table: ConnectionTable, pending: PendingConnection) -> None:
        self.table = table
        self.pending = pending

    def buildProtocol(self, addr: Any) -> StreamProtocol:
        p = StreamProtocol(self.table, self.pending.flow.transport, flow=self.pending.flow)
        p.factory = self
        return p

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.table.connect_failed(self.pending, failure_text(reason))

