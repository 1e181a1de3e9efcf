"""Where a SIP URI leads: RFC 3263 target selection.

Pure functions: they turn a URI into an ordered list of `Target`s. Names that need DNS are not
resolved here yet; IP literals (and ``localhost``) are, with the transport and port rules of
RFC 3263 §4.1 and §4.2 for the case where no NAPTR/SRV lookup is needed.
"""
from __future__ import annotations

import functools
import ipaddress
from typing import NamedTuple

RELIABLE = frozenset(("tcp", "tls", "ws", "wss", "sctp"))
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}


class Target(NamedTuple):
    """One place to send a request: a transport, an IP address and a port."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE


@functools.lru_cache(maxsize=4096)  # asked for every request sent; ip_address() is slow
def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def uri_transport(uri) -> str:
    """The transport a URI asks for (RFC 3263 §4.1 without NAPTR): its parameter, else the
    scheme's default."""
    transport = (uri.params.get("transport") or "").lower()
    if transport:
        return transport
    return "tls" if uri.scheme == "sips" else "udp"


def resolve_uri(uri) -> list[Target]:
    """Targets for a URI whose host needs no DNS; an empty list when it would need a lookup."""
    host = uri.params.get("maddr") or uri.host
    if host == "localhost":
        host = "127.0.0.1"
    if not host or not is_ip(host):
        return []
    transport = uri_transport(uri)
    if uri.scheme == "sips" and transport == "udp":
        return []
    port = uri.port or DEFAULT_PORTS.get(transport, 5060)
    return [Target(transport, host, port)]
