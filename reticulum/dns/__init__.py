"""Where a SIP URI leads: RFC 3263 (locating SIP servers).

Two parts, so that deciding stays plain Python and only asking touches threads:

* `reticulum.dns.rfc3263` decides: NAPTR -> SRV -> A/AAAA (RFC 3263 §4), SRV priority and
  weight (RFC 2782), the failover order, a cache honouring TTLs (failures kept briefly), one
  query per name however many requests wait for it. Answers come in through a `lookup`
  object, time through the injected clock.
* `reticulum.dns.lookup` asks: dnspython's resolver in a bounded thread pool, answers handed
  back on the reactor thread.

This module holds the rule for URIs that need no lookup at all (IP literals); `Target`, the
answer, is an address like any other (`reticulum.addresses`).
"""
from __future__ import annotations

from reticulum.addresses import DEFAULT_PORTS, Target, is_ip
from reticulum.dns.rfc3263 import (
    FAILED, INSECURE, NOT_FOUND, Answer, NoLookup, Resolution, Resolver)


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


__all__ = ["uri_transport", "resolve_uri",
           "Answer", "Resolution", "Resolver", "NoLookup", "NOT_FOUND", "FAILED", "INSECURE"]
