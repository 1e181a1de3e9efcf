"""RFC 3261 §17 transactions, with the RFC 6026 "Accepted" states. Sans-IO.

Rooms: `timers` (Table 4 values and the timer queues), `keys` (which transaction a message
belongs to), `machine` (the table format and its one dispatcher), `server` and `client` (the
four state machines, each one table), `layer` (`TransactionLayer`: the tables of live
transactions, matching, transport errors).
"""
from __future__ import annotations

from reticulum.transaction.client import ClientTransaction
from reticulum.transaction.layer import TransactionLayer
from reticulum.transaction.machine import TransactionStateError
from reticulum.transaction.server import ServerTransaction
from reticulum.transaction.timers import Timers

__all__ = [
    "Timers",
    "TransactionLayer",
    "ServerTransaction",
    "ClientTransaction",
    "TransactionStateError",
]
