"""The values shared by transports and the core: flows and listening points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

__all__ = ["Flow", "ListeningPoint", "STREAM_TRANSPORTS", "TRANSPORTS"]

#: every SIP transport name a Flow may carry
TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
#: the connection-oriented ones
STREAM_TRANSPORTS = ("tcp", "tls", "ws", "wss")


def _hostport(host: str, port: int) -> str:
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


@dataclass(frozen=True)
class Flow:
    """Where a message came from / goes to.

    A UDP flow is just (local socket, remote address) and is always usable.
    A connection-oriented flow names one connection (``conn``); once that
    connection closes the flow is dead.  Hosts are IP literals, IPv6 without
    brackets.
    """

    transport: str  # "udp" | "tcp" | "tls" | "ws" | "wss"
    local: Tuple[str, int]
    remote: Tuple[str, int]
    conn: int = 0

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        conn = "#%d " % self.conn if self.conn else ""
        return "%s %s%s<->%s" % (self.transport, conn, _hostport(*self.local), _hostport(*self.remote))


@dataclass(frozen=True)
class ListeningPoint:
    """One configured listening address: transport, host (as configured), port."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return "%s %s" % (self.transport, _hostport(self.host, self.port))
