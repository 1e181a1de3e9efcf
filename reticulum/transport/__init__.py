"""Transports: UDP, TCP, TLS and WebSocket adapters, stream framing and the flow table.

Transport code moves bytes and never parses SIP beyond framing. What arrives goes to the
``Sink`` given to ``Transports.listen`` (reticulum.transport.sink); nothing here knows who
that is.
"""

from __future__ import annotations

from reticulum.addresses import Flow, ListeningPoint
from reticulum.transport.flows import BindError, Transports

__all__ = ["Flow", "ListeningPoint", "Transports", "BindError"]
