"""What a stream connection and the flow table know of each other.

The protocols (tcp, tls, ws) build connections and the flow table (flows) keeps them; both
depend on this module and neither on the other. The table hands each protocol a
``ConnectionTable`` (itself) and keeps every ``Connection`` by its flow's connection id.
"""

from __future__ import annotations

from typing import Any, List, Optional, Protocol, Tuple

from reticulum.addresses import Flow
from reticulum.transport.sink import Delivery

__all__ = ["Connection", "ConnectionTable", "PendingConnection", "failure_text"]


class Connection(Protocol):
    """A connection the table keeps: open, or still being opened (``PendingConnection``)."""

    closed: bool

    @property
    def flow(self) -> Optional[Flow]:
        """Set once the connection is made (from the start for ours)."""

    def write(self, data: bytes) -> bool:
        """Send, or queue until connected; False when closed."""

    def close(self) -> None:
        """Close; the table hears of it through ``connection_lost``."""


class PendingConnection:
    """An outgoing connection being set up: data waits here until it is made."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.queue: List[bytes] = []
        self.connector: Any = None
        self.closed = False

    def write(self, data: bytes) -> bool:
        if self.closed:
            return False
        self.queue.append(data)
        return True

    def close(self) -> None:
        if not self.closed and self.connector is not None:
            self.closed = True
            self.connector.disconnect()


class ConnectionTable(Protocol):
    """What a connection protocol may ask of the flow table."""

    @property
    def clock(self) -> Any:
        """``IReactorTime``: the idle timer and activity times."""

    @property
    def idle_timeout(self) -> float:
        """``[transport] tcp_idle_timeout``."""

    @property
    def delivery(self) -> Delivery:
        """Where received messages and flow events go."""

    def next_conn_id(self) -> int:
        """A new connection id, unique in this process."""

    def connection_made(self, conn: Connection, local: Tuple[str, int]) -> None:
        """``conn`` is open; ``local`` is its socket's own address."""

    def connection_lost(self, conn: Connection, why: str = "") -> None:
        """``conn`` is closed; ``why`` says why when it is not a plain close."""

    def connect_failed(self, pending: PendingConnection, why: str) -> None:
        """An outgoing connection could not be made."""


def failure_text(reason: Any) -> str:
    """The error message of a Twisted ``Failure``, or "" for none."""
    if reason is None or getattr(reason, "value", None) is None:
        return ""
    return str(reason.getErrorMessage())
