"""Where a SIP URI leads: RFC 3263 (locating SIP servers).

Two parts, so that deciding stays plain Python and only asking touches threads:

* `reticulum.dns.rfc3263` decides: NAPTR -> SRV -> A/AAAA (RFC 3263 §4), SRV priority and
  weight (RFC 2782), the failover order, a cache honouring TTLs (failures kept briefly), one
  query per name however many requests wait for it. Answers come in through a `lookup`
  object, time through the injected clock.
* `reticulum.dns.lookup` asks: dnspython's resolver in a bounded thread pool, answers handed
  back on the reactor thread.

This module holds the values everyone shares: `Target`, `is_ip`, and the rule for URIs that
need no lookup at all (IP literals).
"""
from __future__ import annotations

import functools
import ipaddress
from typing import NamedTuple, Optional

RELIABLE = frozenset(("tcp", "tls", "ws", "wss", "sctp"))
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}


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


from reticulum.dns.rfc3263 import (  # noqa: E402  (it imports Target from here)
    FAILED, INSECURE, NOT_FOUND, Answer, NoLookup, Resolution, Resolver)

__all__ = ["Target", "RELIABLE", "DEFAULT_PORTS", "is_ip", "uri_transport", "resolve_uri",
           "Answer", "Resolution", "Resolver", "NoLookup", "NOT_FOUND", "FAILED", "INSECURE"]
