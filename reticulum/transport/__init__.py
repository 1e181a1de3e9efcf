"""Transports: UDP and TCP adapters, stream framing and the flow table.

Transport code moves bytes and never parses SIP beyond framing.
"""

from __future__ import annotations

from reticulum.addresses import Flow, ListeningPoint
from reticulum.transport.flows import BindError, Transports

__all__ = ["Flow", "ListeningPoint", "Transports", "BindError"]
