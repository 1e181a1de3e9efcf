"""The core: where framed bytes from every transport become SIP messages and decisions.

`Core` parses, validates, logs and stamps `received`/`rport` (RFC 3581), then hands requests
and responses to the proxy. It owns the stores and the clock-driven chores (binding sweeps).
It never touches a socket: everything leaves through `Transports` (see docs/architecture.md),
and every timer goes through the injected clock.
"""
from __future__ import annotations

import functools
import os
import socket

from twisted.logger import Logger

from reticulum import events
from reticulum.dialog import DialogTracker
from reticulum.dns import RELIABLE, NoLookup, Resolver, Target, is_ip
from reticulum.proxy import Proxy
from reticulum.sip import ParseError, Request, Response, make_response, parse
from reticulum.transaction import Timers, TransactionLayer

SWEEP_INTERVAL = 30.0
DEFAULT_SIP_PORT = 5060
#: the largest UDP payload over IPv4 (65,535 less the IP and UDP headers); IPv6 allows 20 more
MAX_UDP_PAYLOAD = 65507
MAX_UDP6_PAYLOAD = 65527


@functools.lru_cache(maxsize=64)
def advertised_host(host: str) -> str:
    """The address we write into Via and Record-Route for a listening address.

    A wildcard bind has no address of its own; we take the one the host would use for
    outgoing traffic (a UDP connect() sends nothing)."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    family = socket.AF_INET6 if host == "::" else socket.AF_INET
    probe = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            return s.getsockname()[0]
    except OSError:
        return "::1" if family == socket.AF_INET6 else "127.0.0.1"


def canonical_host(host: str) -> str:
    """A host as compared: lower case, no brackets, no trailing dot (`RETICULUM.LOCAL.` is
    `reticulum.local`)."""
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") else host


class Core:
    """Receives every framed message, sends every message; the proxy decides in between."""

    log = Logger()
    #: the reticulum.cluster.Cluster this node belongs to (set by the service), or None
    cluster = None

    def __init__(self, config, clock, transports, location=None, accounts=None, resolver=None,
                 lookup=None):
        self.config = config
        self.clock = clock
        self.transports = transports
        mode = getattr(getattr(config, "log", None), "messages", "summary")
        self.log_messages = mode not in ("off", False)
        self.log_full = mode == "full"  # whole messages, for sngrep-like reading
        timers = config.timers
        self.transactions = TransactionLayer(
            clock, Timers(t1=timers.t1, t2=timers.t2, t4=timers.t4), self.send_message
        )
        self.dialogs = DialogTracker(clock, session_lifetime=config.dialog.session_lifetime)
        self.location = location if location is not None else self._make_location()
        self.accounts = accounts if accounts is not None else self._make_accounts()
        self.public_name = getattr(getattr(config, "server", None), "public_name", None)
        # DNS: `lookup` asks (the service's thread pool), the resolver decides (RFC 3263)
        self.resolver = resolver if resolver is not None else \
            self.make_resolver(lookup if lookup is not None else NoLookup())
        self.proxy = Proxy(self)
        self._sweeper = None
        self._local_addresses: set[tuple[str, int]] | None = None
        # canonical name (lower case, no trailing dot) -> the domain as configured
        self._domains = {canonical_host(d): d for d in config.domains}
        self._is_local: dict = {}  # (host, port, transport) -> is_local_address()
        self._points: dict = {}  # (transport, IPv6?) -> listening_point()
        self._udp_flows: dict = {}  # (host, port) -> the UDP flow send_to chose for it

    # -- stores --------------------------------------------------------------------------------

    def _database_path(self) -> str:
        return os.path.join(self.config.state_dir, "reticulum.sqlite3")

    def _make_location(self):
        from reticulum.location import MemoryLocation, SqliteLocation

        if self.config.registrar.store == "memory":
            return MemoryLocation()
        return SqliteLocation(self._database_path(), clock=self.clock)

    def make_resolver(self, lookup):
        """RFC 3263 over `lookup` (DNS), for the transports and address families we send on."""
        dns = self.config.dns
        listening = self.transports.listening
        transports = {point.transport for point in listening} or {"udp"}
        families = ("A", "AAAA") if any(":" in point.host for point in listening) else ("A",)
        return Resolver(lookup, self.clock, static=dns.static, transports=transports,
                        families=families, timeout=dns.timeout)

    def _make_accounts(self):
        from reticulum.accounts import AccountStore

        return AccountStore(self._database_path(), realms=list(self.config.domains))

    def start(self) -> None:
        """Load the stores (start-up, before anything listens) and seed `[users]`."""
        os.makedirs(self.config.state_dir, exist_ok=True)
        self.location.start()
        self.accounts.start()
        for name, password in (self.config.users or {}).items():
            self.accounts.set_password(name, password)
        self.proxy.start()
        self._sweeper = self.clock.callLater(SWEEP_INTERVAL, self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        self._sweeper = None
        self.location.stop()
        self.accounts.stop()

    def _sweep(self) -> None:
        removed = self.location.sweep(self.clock.seconds())
        if removed:
            self.log.info("Removed {count} expired bindings", count=removed)
        self._sweeper = self.clock.callLater(SWEEP_INTERVAL, self._sweep)

    # -- addresses -----------------------------------------------------------------------------

    def local_addresses(self) -> set[tuple[str, int]]:
        """Every (host, port) this server answers on, advertised names included."""
        if self._local_addresses is None:
            found = set()
            for point in self.transports.listening:
                found.add((point.host, point.port))
                found.add((advertised_host(point.host), point.port))
                if self.public_name:
                    found.add((self.public_name, point.port))
            self._local_addresses = found
        return self._local_addresses

    def is_local_domain(self, host: str | None) -> bool:
        """Is `host` one of the domains served here (case and a trailing dot ignored)?"""
        if host in self._domains:
            return True
        return bool(host) and canonical_host(host) in self._domains

    def local_domain(self, uri) -> str | None:
        """The served domain `uri` names, or None. Our own listening addresses (with or
        without the port) are aliases of the first domain, as Kamailio's `myself` is:
        `alice@192.0.2.10:5060` is `alice@<first domain>`."""
        host = uri.host
        if not host:
            return None
        domain = self._domains.get(host)  # a parsed URI's host is lower case already
        if domain is None and host[-1] == ".":
            domain = self._domains.get(host[:-1])
        if domain is not None:
            return domain
        if self.is_local_address(host, uri.port, uri.params.get("transport")):
            return self.config.domains[0]
        return None

    def is_local_address(self, host: str, port: int | None, transport: str | None = None) -> bool:
        """Does host[:port] name this server (one of its listening addresses)? Without a
        port, any of our ports on that host counts."""
        key = (host, port, transport)
        known = self._is_local.get(key)
        if known is None:
            known = self._find_local_address(host, port, transport)
            if len(self._is_local) < 4096:  # hosts come from the wire: keep it bounded
                self._is_local[key] = known
        return known

    def _find_local_address(self, host: str, port: int | None, transport: str | None) -> bool:
        host = canonical_host(host)
        if host == "localhost":
            host = "127.0.0.1"
        addresses = self.local_addresses()
        if port is None:
            if any(h == host for h, _ in addresses):
                return True
            wildcard = any(h in ("0.0.0.0", "::") for h, _ in addresses)
            return wildcard and host in self._host_addresses()
        if (host, port) in addresses:
            return True
        # A wildcard bind answers on every address of the host.
        wildcard = any(h in ("0.0.0.0", "::") and p == port for h, p in addresses)
        return wildcard and host in self._host_addresses()

    def _host_addresses(self) -> set[str]:
        found = {"127.0.0.1", "::1"}
        for point in self.transports.listening:
            found.add(advertised_host(point.host))
        return found

    def is_us(self, uri) -> bool:
        """Is this URI the server itself (a served domain or one of our addresses)?"""
        return self.local_domain(uri) is not None

    def listening_point(self, transport: str, family_host: str | None = None, local=None):
        """Our listening point for sending over `transport`, as we name it to peers (its host
        is `[server] public_name` when set): the one a flow's `local` address is, else one of
        the peer's address family. Several addresses may listen for one transport."""
        key = (transport, local) if local is not None else \
            (transport, family_host is not None and ":" in family_host)
        try:
            return self._points[key]
        except KeyError:
            pass
        point = None
        if local is not None:
            for candidate in self.transports.listening:
                if candidate.transport == transport and \
                        (candidate.host, candidate.port) == tuple(local):
                    point = candidate
                    break
        if point is None and local is not None:
            point = self.listening_point(transport, family_host)  # named already
        else:
            if point is None:
                point = self._find_listening_point(transport, key[1])
            if point is not None and self.public_name:
                point = type(point)(point.transport, self.public_name, point.port)
        if len(self._points) < 256:
            self._points[key] = point
        return point

    def _find_listening_point(self, transport: str, v6: bool):
        fallback = None
        for point in self.transports.listening:
            if point.transport != transport:
                continue
            if (":" in point.host) == v6:
                return point
            fallback = fallback or point
        return fallback

    # -- receiving -----------------------------------------------------------------------------

    def receive_bytes(self, data: bytes, flow) -> None:
        """One framed message from a transport: parse, validate, stamp, dispatch."""
        try:
            # a WebSocket frame holds one whole message, like a datagram (RFC 7118 §5)
            message = parse(data, stream=flow.transport in ("tcp", "tls"))
            message.validate()
        except ParseError as error:
            self._malformed(data, flow, error)
            return
        except Exception:  # a parser bug must never take a connection's neighbours down
            self.log.failure("Parser failure on message from {peer}", peer=flow.remote)
            return
        if isinstance(message, Request):
            self._stamp_via(message, flow)
            self._log_in(message, flow)
            try:
                self.proxy.handle_request(message, flow)
            except Exception:
                self.log.failure("Failed to handle {method} from {peer}",
                                 method=message.method, peer=flow.remote)
                self._answer_internal_error(message, flow)
        else:
            self._log_in(message, flow)
            try:
                self.proxy.handle_response(message, flow)
            except Exception:
                self.log.failure("Failed to handle response {status} from {peer}",
                                 status=message.status, peer=flow.remote)

    def message_too_large(self, head: bytes, flow) -> None:
        self.log.warn("Message too large from {transport} {peer}", transport=flow.transport,
                      peer=flow.remote)
        self._malformed(head, flow, ParseError("Message Too Large", status=413))

    def flow_closed(self, flow) -> None:
        """A connection ended: requests waiting on it fail now (§18.4), its bindings go."""
        self.transactions.transport_error(flow)
        self.proxy.flow_closed(flow)

    def flow_failed(self, flow) -> None:
        self.transactions.transport_error(flow)
        self.transactions.transport_error(Target(flow.transport, flow.remote[0], flow.remote[1]))
        self.proxy.flow_closed(flow)

    def _malformed(self, data: bytes, flow, error: ParseError) -> None:
        partial = getattr(error, "partial", None)
        if partial is None:
            try:
                partial = parse(data, stream=True)
            except ParseError as again:
                partial = again.partial
            except Exception:
                partial = None
        self.log.warn("Malformed message from {transport} {peer}: {reason}",
                      transport=flow.transport, peer=flow.remote, reason=error.reason)
        if not isinstance(partial, Request) or partial.method == "ACK":
            return  # a response (or an ACK) that cannot be parsed is dropped
        try:
            response = make_response(partial, getattr(error, "status", 400) or 400, error.reason)
        except Exception:
            self.log.info("Could not answer a malformed request from {peer}", peer=flow.remote)
            return
        try:
            self._stamp_via(partial, flow)
            dest = self.response_destination(partial, flow)
        except Exception:
            dest = flow  # a Via we cannot read: answer where it came from
        self.send_message(response, dest)

    def _answer_internal_error(self, request, flow) -> None:
        if request.method == "ACK":
            return
        try:
            self.send_message(make_response(request, 500), self.response_destination(request, flow))
        except Exception:
            pass

    @staticmethod
    def _stamp_via(request, flow) -> None:
        """RFC 3261 §18.2.1 `received` and RFC 3581 `rport` on the top Via. With `rport`,
        `received` is added even when it equals the sent-by host (RFC 3581 §4: MUST)."""
        via = request.via
        host, port = flow.remote
        changed = False
        if "rport" in via.params:
            via.params["received"] = host
            via.params["rport"] = str(port)
            changed = True
        elif via.host != host:
            via.params["received"] = host
            changed = True
        if changed:
            request.remove_first("Via")
            request.add("Via", str(via), first=True)

    # -- sending -------------------------------------------------------------------------------

    def response_destination(self, request, flow):
        """RFC 3261 §18.2.2 and RFC 3581: where responses to this request go."""
        via = request.via
        if flow.reliable:
            return flow
        if via.params.get("rport"):
            return flow
        host = via.params.get("received") or via.host
        port = via.port or DEFAULT_SIP_PORT
        if (host, port) == tuple(flow.remote):
            return flow
        return Target("udp", host, port)

    def via_destination(self, via):
        """Where a response goes when no flow is left: the Via's own address (§18.2.2)."""
        transport = via.transport.lower()
        host = via.params.get("received") or via.host
        rport = via.params.get("rport")
        port = int(rport) if rport else (via.port or (5061 if transport == "tls" else 5060))
        return Target(transport, host, port)

    def send_message(self, message, dest) -> bool:
        """Serialize and send to a flow or a Target; False when it could not leave."""
        data = message.to_bytes()
        if len(data) > MAX_UDP_PAYLOAD and dest.transport == "udp":
            limit = MAX_UDP6_PAYLOAD if ":" in (
                dest.host if isinstance(dest, Target) else dest.remote[0]) else MAX_UDP_PAYLOAD
            if len(data) > limit:
                return self._too_large_for_udp(message, len(data), dest)
        if isinstance(dest, Target):
            if dest.host in ("255.255.255.255",) or not is_ip(dest.host):
                self.log.warn("Refusing to send to {host}", host=dest.host)
                return False
            if dest.transport == "udp":
                # A UDP flow is always usable: once the flow table has chosen the socket for
                # an address, send on that flow directly (send_to picks a socket each time).
                key = (dest.host, dest.port)
                flow = self._udp_flows.get(key)
                if flow is not None and self.transports.send(data, flow):
                    self._log_out(message, flow)
                    return True
                flow = self.transports.send_to(data, "udp", dest.host, dest.port)
                if flow is not None and len(self._udp_flows) < 4096:
                    self._udp_flows[key] = flow
                elif flow is None:
                    self._udp_flows.pop(key, None)
            elif dest.name is not None and dest.transport == "tls":
                # RFC 5922: the peer's certificate must name the SIP domain we looked up
                flow = self.transports.send_to(data, "tls", dest.host, dest.port,
                                               server_name=dest.name)
            else:
                flow = self.transports.send_to(data, dest.transport, dest.host, dest.port)
            ok = flow is not None
        else:
            flow = dest
            ok = self.transports.send(data, flow)
            if not ok and flow.reliable and not isinstance(message, Request):
                # §18.2.2: the connection is gone; open a new one to the Via's address.
                target = self.via_destination(message.via)
                if target.transport in RELIABLE and is_ip(target.host):
                    flow = self.transports.send_to(data, target.transport, target.host,
                                                   target.port)
                    ok = flow is not None
        if ok:
            self._log_out(message, flow)
        return ok

    def _too_large_for_udp(self, message, size: int, dest) -> bool:
        """What cannot fit in one datagram is never dropped in silence (RFC 3261 §18.1.1).

        A request fails at once (its branch ends with 503, the caller gets 500); a response is replaced
        by a 513 with the same Via, From, To, Call-ID and CSeq, so the client hears something.
        Nothing switches to TCP on its own: the Via names UDP, and a phone that reached us over
        UDP (behind NAT, say) may take no connection; large messages need a TCP registration."""
        peer = _peer((dest.host, dest.port) if isinstance(dest, Target) else dest.remote)
        self.log.warn("{what} {call_id} to udp {peer} is {size} bytes, too large for UDP",
                      what=_describe(message), call_id=message.get("Call-ID"), peer=peer,
                      size=size)
        if isinstance(message, Request) or message.status == 513:
            return False
        reply = Response(513, "Message Too Large")
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in message.get_all(name):
                reply.add(name, value)
        return self.send_message(reply, dest)

    # -- logging -------------------------------------------------------------------------------

    def _log_in(self, message, flow) -> None:
        if events.listening:
            events.emit("message", direction="in", message=message, flow=flow)
        if self.log_messages:
            self.log.info("<- {what} {call_id} from {transport} {peer}{full}",
                          what=_describe(message), call_id=message.get("Call-ID"),
                          transport=flow.transport, peer=_peer(flow.remote),
                          full=_full_text(message) if self.log_full else "")

    def _log_out(self, message, flow) -> None:
        if events.listening and flow is not None:
            events.emit("message", direction="out", message=message, flow=flow)
        if self.log_messages and flow is not None:
            self.log.info("-> {what} {call_id} to {transport} {peer}{full}",
                          what=_describe(message), call_id=message.get("Call-ID"),
                          transport=flow.transport, peer=_peer(flow.remote),
                          full=_full_text(message) if self.log_full else "")


def _describe(message) -> str:
    if isinstance(message, Request):
        return message.method
    cseq = (message.get("CSeq") or "").split()
    return "%d %s/%s" % (message.status, message.reason, cseq[-1] if cseq else "?")


def _full_text(message) -> str:
    """The whole message, indented under its summary line (`[log] messages = "full"`)."""
    text = message.to_bytes().decode("utf-8", "replace").rstrip("\r\n")
    return "\n    " + text.replace("\r\n", "\n    ")


def _peer(address) -> str:
    host, port = address[0], address[1]
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
