"""The one way up from the transports: the ``Sink`` that takes what they receive, and the
``Delivery`` that hands it over.

The flow table is given its sink when it starts listening (``Transports.listen(sink)``: the
core, in the server) and gives its protocols the ``Delivery`` around it; they never see the
sink itself. Everything received passes here, so this is the one place where a sink that
raises is caught: the failure is logged with the flow, and neither that connection nor any
other goes down with it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

from twisted.logger import Logger

from reticulum.addresses import Flow
from reticulum.transport.framing import message_head

__all__ = ["Sink", "Delivery"]

log = Logger(namespace="reticulum.transport")


class Sink(Protocol):
    """Who takes what the transports receive (the core; a recorder in tests)."""

    def message_received(self, data: bytes, flow: Flow) -> None:
        """One whole SIP message; on a stream also the head of one whose framing is broken
        (the connection closes after it)."""

    def message_too_large(self, head: bytes, flow: Flow) -> None:
        """A message over ``[transport] max_message_size``; ``head`` is its header block."""

    def flow_closed(self, flow: Flow) -> None:
        """A connection ended; its flow is gone for good."""

    def flow_failed(self, flow: Flow) -> None:
        """Sending on a flow failed (refused, TLS handshake, no socket); never reported
        inside ``send_to``."""


def _hand(call: Callable[..., Any], *args: Any) -> None:
    """Call the sink; the flow is the last argument. The one guard around the sink."""
    try:
        call(*args)
    except Exception:
        log.failure("{what} failed for {flow}", what=call.__name__, flow=str(args[-1]))


class Delivery:
    """Hands what the protocols receive to the sink (none until the table listens)."""

    __slots__ = ("sink", "max_message_size")

    def __init__(self, max_message_size: int, sink: Optional[Sink] = None) -> None:
        self.sink = sink
        self.max_message_size = max_message_size

    def packet(self, data: bytes, flow: Flow) -> None:
        """A UDP datagram or a WebSocket message: one SIP message each (RFC 3261 §18.3,
        RFC 7118 §5). Packets of only CR/LF are keep-alives and get no answer, CR/LF before
        a message is skipped, and one over ``max_message_size`` goes up as its head."""
        sink = self.sink
        if not data or sink is None:
            return
        c = data[0]
        if c == 13 or c == 10:
            data = data.lstrip(b"\r\n")
            if not data:
                return  # keep-alive
        limit = self.max_message_size
        if len(data) > limit:
            _hand(sink.message_too_large, message_head(data, limit), flow)
        else:
            _hand(sink.message_received, data, flow)

    def message(self, data: bytes, flow: Flow) -> None:
        """A message a stream framer cut out."""
        sink = self.sink
        if sink is not None:
            _hand(sink.message_received, data, flow)

    def too_large(self, head: bytes, flow: Flow) -> None:
        sink = self.sink
        if sink is not None:
            _hand(sink.message_too_large, head, flow)

    def closed(self, flow: Flow) -> None:
        sink = self.sink
        if sink is not None:
            _hand(sink.flow_closed, flow)

    def failed(self, flow: Flow) -> None:
        sink = self.sink
        if sink is not None:
            _hand(sink.flow_failed, flow)
