"""SIP over UDP: one DatagramProtocol per listening socket."""

from __future__ import annotations

from typing import Any, Tuple

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from reticulum.addresses import Flow
from reticulum.transport.sink import Delivery

__all__ = ["UDPProtocol", "MAX_DATAGRAM"]

log = Logger(namespace="reticulum.transport")

#: receive buffer per datagram: larger than any UDP payload, so nothing is cut
MAX_DATAGRAM = 65536


class UDPProtocol(DatagramProtocol):
    """Hands every datagram, as one message of its flow, to the ``Delivery`` (which drops
    keep-alives and sends a datagram over ``[transport] max_message_size`` up as too large)."""

    noisy = False
    #: twisted's zope interfaces do not type-check as attributes; the reactor's UDP port
    transport: Any

    def __init__(self, delivery: Delivery, local: Tuple[str, int]) -> None:
        self.delivery = delivery
        #: the configured (host, port) of this socket: the ``local`` of its flows
        self.local = local

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.delivery.packet(data, Flow("udp", self.local, (addr[0], addr[1])))

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
