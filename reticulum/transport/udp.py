"""SIP over UDP: one DatagramProtocol per listening socket."""

from __future__ import annotations

from typing import TYPE_CHECKING, Tuple

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from reticulum.addresses import Flow
from reticulum.transport.framing import message_head

if TYPE_CHECKING:  # pragma: no cover
    from reticulum.transport.flows import Transports

__all__ = ["UDPProtocol", "MAX_DATAGRAM"]

log = Logger(namespace="reticulum.transport")

#: receive buffer per datagram: larger than any UDP payload, so nothing is cut
MAX_DATAGRAM = 65536


class UDPProtocol(DatagramProtocol):
    """Hands every datagram to the core as one message.

    Datagrams made only of CR/LF (keep-alives) are dropped without an answer,
    CR/LF before a message is skipped, and datagrams larger than
    ``[transport] max_message_size`` go to ``core.message_too_large`` with
    their header block.
    """

    noisy = False

    def __init__(self, transports: "Transports", local: Tuple[str, int]) -> None:
        self.transports = transports
        #: the configured (host, port) of this socket: the ``local`` of its flows
        self.local = local

    def datagramReceived(self, data: bytes, addr) -> None:
        if not data:
            return
        c = data[0]
        if c == 13 or c == 10:
            data = data.lstrip(b"\r\n")
            if not data:
                return  # keep-alive
        core = self.transports.core
        if core is None:
            return
        flow = Flow("udp", self.local, (addr[0], addr[1]))
        limit = self.transports.max_message_size
        try:
            if len(data) > limit:
                core.message_too_large(message_head(data, limit), flow)
            else:
                core.message_received(data, flow)
        except Exception:
            log.failure("core failed on a datagram from {flow}", flow=str(flow))

    def write(self, data: bytes, addr: Tuple[str, int]) -> bool:
        """Send one datagram; False when the socket refused it."""
        transport = self.transport
        if transport is None:
            return False
        try:
            transport.write(data, addr)
        except Exception as e:
            log.warn(
                "udp {local} could not send {size} bytes to {host}:{port}: {error}",
                local=self.local,
                size=len(data),
                host=addr[0],
                port=addr[1],
                error=e,
            )
            return False
        return True
