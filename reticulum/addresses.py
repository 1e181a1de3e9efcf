"""Addresses: where messages come from and go to, and which of them are this server.

Every room shares these values and none of them does anything: a `Flow` is where a message
came from (one connection, or a UDP socket and a peer), a `Target` is an address to send to
when no flow is chosen yet, a `ListeningPoint` is one configured socket. `LocalAddresses`
answers "is this us?" for the proxy and the registrar, computed once from the listening
points and the served domains. Hosts are IP literals here, IPv6 without brackets.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass
from typing import Dict, NamedTuple, Optional, Sequence, Set, Tuple, Union

__all__ = [
    "Flow", "ListeningPoint", "Target", "Destination", "LocalAddresses",
    "TRANSPORTS", "STREAM_TRANSPORTS", "RELIABLE", "DEFAULT_PORTS", "DEFAULT_SIP_PORT",
    "hostport", "canonical_host", "advertised_host", "own_address", "is_ip", "source_key",
]

#: every SIP transport name a Flow may carry
TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
#: the connection-oriented ones we carry
STREAM_TRANSPORTS = ("tcp", "tls", "ws", "wss")
#: transports that deliver reliably (RFC 3261 §17: no retransmission); SCTP counts when a
#: peer's Via names it, though we listen on none
RELIABLE = frozenset(STREAM_TRANSPORTS + ("sctp",))
DEFAULT_SIP_PORT = 5060
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}


def hostport(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 host."""
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


def canonical_host(host: str) -> str:
    """A host as compared: lower case, no brackets, no trailing dot (`RETICULUM.LOCAL.` is
    `reticulum.local`)."""
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") else host


@functools.lru_cache(maxsize=4096)  # asked for every request sent; ip_address() is slow
def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


#: a source key made of something that is no address is cut to this length
_SOURCE_KEY_MAX = 64


@functools.lru_cache(maxsize=4096)  # asked for every digest challenge and accepted connection
def source_key(ip: str) -> str:
    """Who a peer is, for counting: an IPv4 address, or the /64 of an IPv6 address (one
    host holds a whole /64). Connection caps and digest failures and nonces count by it."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip[:_SOURCE_KEY_MAX]
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return "%s/64" % ipaddress.IPv6Address(int(address) >> 64 << 64)


@functools.lru_cache(maxsize=64)
def advertised_host(host: str) -> str:
    """The address we write into Via and Record-Route for a listening address.

    A wildcard bind has no address of its own; we take the one the host would use for
    outgoing traffic, else loopback."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    if host == "::":
        return own_address(ipv6=True) or "::1"
    return own_address(ipv6=False) or "127.0.0.1"


def own_address(ipv6: bool) -> Optional[str]:
    """The IPv6 or IPv4 address this host would send from, or None (no route). A UDP
    connect() chooses it and sends nothing."""
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    probe = "2001:db8::1" if ipv6 else "192.0.2.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            return s.getsockname()[0]
    except OSError:
        return None


@dataclass(frozen=True)
class Flow:
    """Where a message came from / goes to.

    A UDP flow is just (local socket, remote address) and is always usable.
    A connection-oriented flow names one connection (``conn``); once that
    connection closes the flow is dead.
    """

    transport: str  # "udp" | "tcp" | "tls" | "ws" | "wss"
    local: Tuple[str, int]
    remote: Tuple[str, int]
    conn: int = 0

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    @property
    def host(self) -> str:
        """The peer's address, as a Target names it."""
        return self.remote[0]

    @property
    def port(self) -> int:
        return self.remote[1]

    def __str__(self) -> str:
        conn = "#%d " % self.conn if self.conn else ""
        return "%s %s%s<->%s" % (self.transport, conn, hostport(*self.local), hostport(*self.remote))


class Target(NamedTuple):
    """One place to send a request: a transport, an IP address and a port.

    `name` is the SIP domain the address was found for: what a TLS peer must prove it is
    (RFC 5922); None for an address given as such."""

    transport: str
    host: str
    port: int
    name: Optional[str] = None

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE


#: where a message is sent: an existing flow, or an address the flow table picks a flow for.
#: Both have `transport`, `host`, `port` and `reliable`; only a Flow has `conn`.
Destination = Union[Flow, Target]


@dataclass(frozen=True)
class ListeningPoint:
    """One configured listening address: transport, host (as configured), port."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return "%s %s" % (self.transport, hostport(self.host, self.port))


class LocalAddresses:
    """Which hosts, ports and domains are this server, and how we name ourselves to peers.

    `listening` is read when first asked (ports bound to 0 are known only after binding) and
    the answers are kept: hosts come from the wire, so every cache is bounded."""

    def __init__(self, listening: Sequence[ListeningPoint], domains: Sequence[str],
                 public_name: Optional[str] = None):
        self.listening = listening
        self.domains = list(domains)
        self.public_name = public_name
        # canonical name (lower case, no trailing dot) -> the domain as configured
        self._domains = {canonical_host(d): d for d in self.domains}
        self._addresses: Optional[Set[Tuple[str, int]]] = None
        self._is_local: Dict[Tuple[str, Optional[int], Optional[str]], bool] = {}
        self._points: Dict[tuple, Optional[ListeningPoint]] = {}

    def addresses(self) -> Set[Tuple[str, int]]:
        """Every (host, port) this server answers on, advertised names included."""
        if self._addresses is None:
            found = set()
            for point in self.listening:
                found.add((point.host, point.port))
                found.add((advertised_host(point.host), point.port))
                if self.public_name:
                    found.add((self.public_name, point.port))
            self._addresses = found
        return self._addresses

    def local_domain(self, uri) -> Optional[str]:
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
            return self.domains[0]
        return None

    def is_us(self, uri) -> bool:
        """Is this URI the server itself (a served domain or one of our addresses)?"""
        return self.local_domain(uri) is not None

    def is_local_address(self, host: str, port: Optional[int],
                         transport: Optional[str] = None) -> bool:
        """Does host[:port] name this server (one of its listening addresses)? Without a
        port, any of our ports on that host counts."""
        key = (host, port, transport)
        known = self._is_local.get(key)
        if known is None:
            known = self._find_local_address(host, port)
            if len(self._is_local) < 4096:
                self._is_local[key] = known
        return known

    def points_at_us(self, uri) -> bool:
        """Would a request sent to this URI (a Contact, say) arrive at one of our own listening
        addresses? Without a port, the transport's default port is meant."""
        port = uri.port
        if port is None:
            tls = uri.scheme == "sips" or uri.transport == "tls"
            port = DEFAULT_PORTS["tls"] if tls else DEFAULT_SIP_PORT
        return self.is_local_address(uri.host or "", port, uri.transport)

    def _find_local_address(self, host: str, port: Optional[int]) -> bool:
        host = canonical_host(host)
        if host == "localhost":
            host = "127.0.0.1"
        addresses = self.addresses()
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

    def _host_addresses(self) -> Set[str]:
        found = {"127.0.0.1", "::1"}
        for point in self.listening:
            found.add(advertised_host(point.host))
        return found

    def listening_point(self, transport: str, family_host: Optional[str] = None,
                        local=None) -> Optional[ListeningPoint]:
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
            for candidate in self.listening:
                if candidate.transport == transport and \
                        (candidate.host, candidate.port) == tuple(local):
                    point = candidate
                    break
        if point is None and local is not None:
            point = self.listening_point(transport, family_host)  # named already
        else:
            if point is None:
                point = self._find_listening_point(transport, bool(key[1]))
            if point is not None and self.public_name:
                point = ListeningPoint(point.transport, self.public_name, point.port)
        if len(self._points) < 256:
            self._points[key] = point
        return point

    def _find_listening_point(self, transport: str, v6: bool) -> Optional[ListeningPoint]:
        fallback = None
        for point in self.listening:
            if point.transport != transport:
                continue
            if (":" in point.host) == v6:
                return point
            fallback = fallback or point
        return fallback


def response_destination(request, flow: Flow) -> Destination:
    """RFC 3261 §18.2.2 and RFC 3581: where the responses to a request that came on `flow`
    go: back on the flow when it is a connection, has `rport` or came from the Via's own
    address; else to the Via's `received` (or sent-by) address over UDP."""
    if flow.reliable:
        return flow
    via = request.via
    if via.params.get("rport"):
        return flow
    host = via.params.get("received") or via.host
    port = via.port or DEFAULT_SIP_PORT
    if (host, port) == tuple(flow.remote):
        return flow
    return Target("udp", host, port)


def via_destination(via) -> Target:
    """Where a response goes when no flow is left for it: the Via's own address (§18.2.2,
    with RFC 3581 `received`/`rport`)."""
    transport = via.transport.lower()
    host = via.params.get("received") or via.host
    rport = via.params.get("rport")
    port = int(rport) if rport else (
        via.port or (DEFAULT_PORTS["tls"] if transport == "tls" else DEFAULT_SIP_PORT))
    return Target(transport, host, port)
