"""The flow table: the core's only way out to the network.

``Transports`` binds the configured listening sockets, keeps every live
connection by id, and implements the contract of docs/architecture.md::

    listen(sink)

    listening: list[ListeningPoint]
    send(data, flow) -> bool
    send_to(data, transport, host, port) -> Flow
    alive(flow) -> bool

Flows:

* UDP: ``local`` is the listening socket's configured (host, port) (so a
  socket bound to 0.0.0.0 gives flows with local ``("0.0.0.0", 5060)``).
  ``send_to`` sends from a listening UDP socket of the destination's address
  family, preferring one that can reach it (loopback for loopback).
* TCP: accepted connections have the real local address of the connection.
  Outgoing ones get, before they connect, the TCP listening address of the
  same family (or the wildcard address with port 0 when there is none); the
  flow object stays the same for the connection's whole life.

What arrives goes to the ``Sink`` given to ``listen`` (the core), through the
table's ``Delivery`` (reticulum.transport.sink), which the protocols get instead
of the sink. The protocols (tcp, tls, udp, ws) know the table only as a
``ConnectionTable`` (reticulum.transport.connection); this module imports them,
never the other way round.

Failures of outgoing sends are reported asynchronously (never inside
``send_to``) through the sink's ``flow_failed(flow)``.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IReactorSocket
from twisted.logger import Logger

from reticulum import events
from reticulum.addresses import Flow, ListeningPoint, hostport as _hostport
from reticulum.transport.connection import Connection, PendingConnection
from reticulum.transport.limits import ConnectionLimits, GuardFactory, RESERVED_FILES, default_max_connections, open_files_limit
from reticulum.transport.sink import Delivery, Sink
from reticulum.transport.tcp import StreamClientFactory, StreamServerFactory
from reticulum.transport.tls import client_factory as tls_client_factory, server_factory as tls_server_factory
from reticulum.transport.udp import MAX_DATAGRAM, UDPProtocol

__all__ = ["Transports", "BindError", "SUPPORTED_LISTEN"]

log = Logger(namespace="reticulum.transport")

#: the [listen] keys this version can serve
SUPPORTED_LISTEN = ("udp", "tcp", "tls", "ws", "wss")

_SOCKET_BUFFER = 4 * 1024 * 1024
_LISTEN_BACKLOG = 1024


class BindError(Exception):
    """A listening address could not be bound; the message names it."""


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _normalize_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::")


class Transports:
    """Listening sockets and connections; see the module docstring."""

    def __init__(self, config: Any, reactor: Any = None, clock: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.config = config
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        #: hands what arrives to the sink; it has none until listen()
        self.delivery = Delivery(config.transport.max_message_size)
        self.idle_timeout: float = config.transport.tcp_idle_timeout
        self.connect_timeout: float = max(1.0, 64 * config.timers.t1)
        self.limits = ConnectionLimits(
            self.clock,
            per_source=config.transport.max_connections_per_ip,
            total=self._max_connections(config.transport.max_connections),
            head_timeout=config.transport.head_timeout,
        )
        self.listening: List[ListeningPoint] = []
        for name, (host, port) in config.listen.items():
            if name in SUPPORTED_LISTEN:
                self.listening.append(ListeningPoint(name, host, port))
        self._listeners: Dict[str, Callable[[str, int], Any]] = {
            "udp": self._listen_udp,
            "tcp": self._listen_tcp,
            "tls": self._listen_tls,
            "ws": self._listen_ws,
            "wss": self._listen_wss,
        }
        self._tls: Any = None  # reticulum.certs.TLSContexts, made on first use
        self._ports: List[Any] = []  # twisted listening ports
        self._udp: Dict[Tuple[str, int], UDPProtocol] = {}
        self._conns: Dict[int, Connection] = {}  # open or being opened
        self._by_remote: Dict[tuple, int] = {}  # (transport, host, port[, name]) -> conn id
        self._named: Dict[int, tuple] = {}  # conn id -> its key with a verified name
        self._ids = itertools.count(1)
        self._outgoing: set = set()  # conn ids of our connections, counted by self.limits
        self._reuse_port = False
        self._own: List[Tuple[str, int]] = []

    def share_ports(self, own: Tuple[str, int]) -> None:
        """Several worker processes serve the configured addresses (SO_REUSEPORT); this one
        also listens on the UDP address ``own``, which it names in what it sends
        (reticulum.workers)."""
        self._reuse_port = True
        self._own.append(own)
        self.listening.insert(0, ListeningPoint("udp", own[0], own[1]))

    @staticmethod
    def _max_connections(configured: Optional[int]) -> int:
        """The global cap: as configured, but never more than the open-files limit allows."""
        room = default_max_connections()
        if configured is None:
            return room
        if configured > room:
            log.warn(
                "transport.max_connections = {configured} does not fit the open-files limit "
                "({soft}, of which {reserved} are kept for other files): using {room}",
                configured=configured, soft=open_files_limit(), reserved=RESERVED_FILES, room=room,
            )
            return room
        return configured

    # ------------------------------------------------------------------
    # listening

    def listen(self, sink: Sink) -> None:
        """From now on hand what arrives to ``sink``; bind every configured listening
        address, synchronously.

        Raises BindError naming the first address that cannot be bound;
        what was bound before is released again.
        """
        self.delivery.sink = sink
        # a worker's own UDP socket first: requests it sends leave from there (ties in
        # _udp_socket_for go to the first), so their responses come back to it
        for name, (host, port) in [("udp", a) for a in self._own] + self.config.listen.items():
            if name == "admin":
                continue  # served by reticulum.admin
            if name not in SUPPORTED_LISTEN:
                log.warn(
                    "listen.{name} {addr}: this transport is not available yet; ignored",
                    name=name,
                    addr=_hostport(host, port),
                )
                continue
            try:
                self._listeners[name](host, port)
            except BindError:
                for p in self._ports:
                    p.stopListening()
                self._ports = []
                self._udp.clear()
                raise
            log.info("listening on {transport} {addr}", transport=name, addr=_hostport(host, port))

    def _bound_socket(self, name: str, host: str, port: int, kind: int) -> socket.socket:
        family = _family(host)
        s = socket.socket(family, kind)
        try:
            if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
                # so that [::]:5060 and 0.0.0.0:5060 can both be configured
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if self._reuse_port:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if kind == socket.SOCK_STREAM:
                if os.name == "posix":
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            else:
                for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    try:
                        s.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
                    except OSError:
                        pass
            s.bind((host, port))
            if kind == socket.SOCK_STREAM:
                s.listen(_LISTEN_BACKLOG)
            s.setblocking(False)
        except OSError as e:
            s.close()
            reason = e.strerror or str(e)
            if e.errno == errno.EADDRINUSE:
                reason = "address already in use"
            elif e.errno == errno.EADDRNOTAVAIL:
                reason = "no such local address"
            elif e.errno == errno.EACCES:
                reason = "permission denied"
            raise BindError("cannot listen on %s %s: %s" % (name, _hostport(host, port), reason)) from None
        return s

    def _listen_udp(self, host: str, port: int) -> None:
        proto = UDPProtocol(self.delivery, (host, port))
        if IReactorSocket.providedBy(self.reactor):
            s = self._bound_socket("udp", host, port, socket.SOCK_DGRAM)
            try:
                p = self.reactor.adoptDatagramPort(s.fileno(), _family(host), proto, maxPacketSize=MAX_DATAGRAM)
            finally:
                s.close()
        else:  # pragma: no cover - reactors without adopt*
            from twisted.internet.error import CannotListenError

            try:
                p = self.reactor.listenUDP(port, proto, interface=host, maxPacketSize=MAX_DATAGRAM)
            except CannotListenError as e:
                raise BindError("cannot listen on udp %s: %s" % (_hostport(host, port), e.socketError)) from None
        self._ports.append(p)
        self._udp[(host, port)] = proto

    def tls_contexts(self) -> Any:
        """The TLS certificate and options (reticulum.certs), loaded or made once."""
        if self._tls is None:
            from reticulum.certs import TLSContexts

            try:
                self._tls = TLSContexts(self.config)
            except ValueError as e:
                raise BindError(str(e)) from None
        return self._tls

    def _listen_tls(self, host: str, port: int) -> None:
        self._listen_tcp(host, port, tls_server_factory(self, self.tls_contexts()), "tls")

    def _listen_ws(self, host: str, port: int, contexts: Any = None) -> None:
        # imported here, not above: importing autobahn's Twisted side picks Twisted as
        # txaio's one framework for the whole process, which only a ws listener may do
        # (the tests drive asyncio WebSocket clients in the same process as the table)
        from reticulum.transport.ws import site_factory

        name = "ws" if contexts is None else "wss"
        config = self.config
        factory = site_factory(self, name, host, port, config.websocket, config.domains, self.reactor, contexts)
        self._listen_tcp(host, port, factory, name)

    def _listen_wss(self, host: str, port: int) -> None:
        self._listen_ws(host, port, self.tls_contexts())

    def _listen_tcp(self, host: str, port: int, factory: Any = None, name: str = "tcp") -> None:
        if factory is None:
            factory = StreamServerFactory(self, "tcp")
        factory = GuardFactory(factory, self.limits, http=name in ("ws", "wss"))
        if IReactorSocket.providedBy(self.reactor):
            s = self._bound_socket(name, host, port, socket.SOCK_STREAM)
            try:
                p = self.reactor.adoptStreamPort(s.fileno(), _family(host), factory)
            finally:
                s.close()
        else:  # pragma: no cover
            from twisted.internet.error import CannotListenError

            try:
                p = self.reactor.listenTCP(port, factory, backlog=_LISTEN_BACKLOG, interface=host)
            except CannotListenError as e:
                raise BindError("cannot listen on %s %s: %s" % (name, _hostport(host, port), e.socketError)) from None
        self._ports.append(p)

    def stop(self) -> defer.Deferred:
        """Stop listening and close every connection; fires when the ports are closed."""
        ds = []
        for p in self._ports:
            d = p.stopListening()
            if d is not None:
                ds.append(d)
        self._ports = []
        self._udp.clear()
        for conn in list(self._conns.values()):
            conn.close()
        self.limits.stop()
        return defer.DeferredList(ds, consumeErrors=True)

    # ------------------------------------------------------------------
    # the contract

    def send(self, data: bytes, flow: Flow) -> bool:
        """Send on an existing flow; False when it is gone."""
        if flow.transport == "udp":
            proto = self._udp.get(flow.local)
            if proto is None:
                return False
            return proto.write(data, flow.remote)
        conn = self._conns.get(flow.conn)
        if conn is None or conn.flow != flow:
            return False
        return conn.write(data)

    def send_to(self, data: bytes, transport: str, host: str, port: int,
                server_name: Optional[str] = None) -> Flow:
        """Send to (host, port) over ``transport``, reusing a live connection.

        ``server_name``: the SIP domain a TLS peer must prove it is (RFC 5922) when
        ``[tls] verify_peers`` is on; such a connection is reused only for that name.
        Returns the flow used.  A failure is reported later through
        the sink's ``flow_failed(flow)``.
        """
        transport = transport.lower()
        host = _normalize_host(host)
        if transport == "udp":
            return self._send_udp(data, host, port)
        if transport in ("tcp", "tls"):
            if transport != "tls" or not self.config.tls.verify_peers:
                server_name = None
            return self._send_stream(data, transport, host, port, server_name)
        flow = Flow(transport, self._unbound_local(host), (host, port), next(self._ids))
        log.warn("cannot send to {flow}: transport {t} is not available", flow=str(flow), t=transport)
        self._report_failure(flow)
        return flow

    def alive(self, flow: Flow) -> bool:
        if flow.transport == "udp":
            return flow.local in self._udp
        conn = self._conns.get(flow.conn)
        return conn is not None and conn.flow == flow and not conn.closed

    # ------------------------------------------------------------------
    # extras

    def close_flow(self, flow: Flow) -> None:
        """Close the connection of a connection-oriented flow (no-op for UDP)."""
        conn = self._conns.get(flow.conn) if flow.reliable else None
        if conn is not None and conn.flow == flow:
            conn.close()

    def connections(self) -> List[Flow]:
        """The flows of every connection currently open or being opened."""
        return [c.flow for c in self._conns.values() if c.flow is not None]

    def next_conn_id(self) -> int:
        return next(self._ids)

    # ------------------------------------------------------------------
    # UDP out

    def _udp_socket_for(self, host: str) -> Optional[UDPProtocol]:
        family = _family(host)
        loop = _is_loopback(host)
        best = None
        best_score = -1
        for (lhost, lport), proto in self._udp.items():
            if _family(lhost) != family:
                continue
            if _is_wildcard(lhost):
                score = 2
            elif _is_loopback(lhost) == loop:
                score = 3 if lhost == host else 2
            else:
                score = 1
            if score > best_score:
                best, best_score = proto, score
        return best

    def _send_udp(self, data: bytes, host: str, port: int) -> Flow:
        proto = self._udp_socket_for(host)
        if proto is None:
            flow = Flow("udp", self._unbound_local(host), (host, port))
            log.warn("cannot send to {flow}: no UDP socket of that address family", flow=str(flow))
            self._report_failure(flow)
            return flow
        flow = Flow("udp", proto.local, (host, port))
        if not proto.write(data, (host, port)):
            self._report_failure(flow)
        return flow

    # ------------------------------------------------------------------
    # streams out

    def _unbound_local(self, host: str, transport: Optional[str] = None) -> Tuple[str, int]:
        family = _family(host)
        for lp in self.listening:
            if (transport is None or lp.transport == transport) and _family(lp.host) == family:
                return (lp.host, lp.port)
        return ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)

    def _send_stream(self, data: bytes, transport: str, host: str, port: int,
                     server_name: Optional[str] = None) -> Flow:
        key: tuple = (transport, host, port)
        if server_name:
            key = key + (server_name.lower(),)
        conn_id = self._by_remote.get(key)
        if conn_id is not None:
            conn = self._conns.get(conn_id)
            if conn is not None and not conn.closed and conn.flow is not None:
                conn.write(data)
                return conn.flow
        flow = Flow(transport, self._unbound_local(host, transport), (host, port), next(self._ids))
        if not self.limits.reserve_outgoing():
            self._report_failure(flow)
            return flow
        self._outgoing.add(flow.conn)
        pending = PendingConnection(flow)
        pending.queue.append(data)
        self._conns[flow.conn] = pending
        self._by_remote[key] = flow.conn
        if server_name:
            self._named[flow.conn] = key
        log.info(
            "{transport} connection #{conn} to {remote}: connecting",
            transport=transport,
            conn=flow.conn,
            remote=_hostport(host, port),
        )
        try:
            factory: Any = StreamClientFactory(self, pending)
            if transport == "tls":
                factory = tls_client_factory(self, pending, self.tls_contexts(), server_name or host)
            pending.connector = self.reactor.connectTCP(host, port, factory, timeout=self.connect_timeout)
        except Exception as e:
            log.warn("{flow}: cannot connect: {error}", flow=str(flow), error=e)
            self._forget(flow)
            pending.closed = True
            self._report_failure(flow)
        return flow

    # ------------------------------------------------------------------
    # called by the connection protocols

    def connection_made(self, proto: Connection, local: Tuple[str, int]) -> None:
        flow = proto.flow
        if flow is None:  # pragma: no cover - protocols set their flow first
            return
        pending = self._conns.get(flow.conn)
        self._conns[flow.conn] = proto
        key = (flow.transport, flow.remote[0], flow.remote[1])
        self._by_remote.setdefault(key, flow.conn)
        if events.listening:
            events.emit("connection", action="opened", flow=flow, outgoing=pending is not None)
        if isinstance(pending, PendingConnection):
            log.info("{flow} connected from {local}", flow=str(flow), local=_hostport(*local))
            if pending.closed:
                proto.close()
                return
            for data in pending.queue:
                proto.write(data)
            pending.queue = []
        else:
            log.info(
                "{transport} connection #{conn} from {remote} to {local} opened",
                transport=flow.transport,
                conn=flow.conn,
                remote=_hostport(*flow.remote),
                local=_hostport(*flow.local),
            )

    def connection_lost(self, proto: Connection, why: str = "") -> None:
        flow = proto.flow
        if flow is None:
            return
        if self._conns.get(flow.conn) is not proto:
            return
        self._forget(flow)
        log.info("{flow} closed{why}", flow=str(flow), why=(" (%s)" % why) if why else "")
        self.delivery.closed(flow)
        if events.listening:  # after the sink: its bindings are gone by now
            events.emit("connection", action="closed", flow=flow)

    def connect_failed(self, pending: PendingConnection, why: str) -> None:
        flow = pending.flow
        dropped = len(pending.queue)
        pending.queue = []
        pending.closed = True
        if self._conns.get(flow.conn) is pending:
            self._forget(flow)
        self._release(flow.conn)
        log.info(
            "{flow}: connection failed ({reason}); {dropped} queued message(s) dropped",
            flow=str(flow),
            reason=why or "?",
            dropped=dropped,
        )
        self.delivery.failed(flow)

    # ------------------------------------------------------------------

    def _forget(self, flow: Flow) -> None:
        self._conns.pop(flow.conn, None)
        self._release(flow.conn)
        named = self._named.pop(flow.conn, None)
        if named is not None and self._by_remote.get(named) == flow.conn:
            del self._by_remote[named]
        key = (flow.transport, flow.remote[0], flow.remote[1])
        if self._by_remote.get(key) == flow.conn:
            del self._by_remote[key]

    def _release(self, conn_id: int) -> None:
        """One of our connections is over: it no longer counts against max_connections."""
        if conn_id in self._outgoing:
            self._outgoing.discard(conn_id)
            self.limits.release_outgoing()

    def _report_failure(self, flow: Flow) -> None:
        self.clock.callLater(0, self.delivery.failed, flow)
