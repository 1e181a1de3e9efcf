"""What every transaction state machine shares: states, events, the table format, the one
dispatcher, and the error for an event a state does not allow (in the manner of h11's
``_state.py``).

A machine is ONE table ``{state: {event: (new state, (action, ...))}}``. `Transaction.fire`
looks the event up under the current state, sets the new state, then runs the actions in
order; nothing else changes a state. An action is a method ``_<name>(message)`` of the
transaction class; it may return

- an event, fired right after this one's actions: a timer that is zero on a reliable
  transport (D, I, J, K) fires at once, a send that fails is a transport error;
- ``False``: the message is not absorbed (an ACK for a 2xx, which the proxy forwards).

Entering ``terminated`` always ends the transaction (timers stopped, the layer forgets it,
the TU hears ``*_terminated``), even when an action raised.

An event the table does not list for the current state raises `TransactionStateError` from
`fire`; `step`, the way in for the TU, the wire and the clock, hands it to the layer, which
logs it once, and nothing else happens. `describe` draws a table as text: the module
docstrings of `client` and `server` show those drawings, and a test checks that they match.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Protocol, Tuple

from reticulum import events
from reticulum.transaction.timers import Timer, Timers

__all__ = [
    "TransactionStateError", "Transaction", "Table", "compile_table", "describe",
    "TRYING", "CALLING", "PROCEEDING", "COMPLETED", "CONFIRMED", "ACCEPTED", "TERMINATED",
]

# States (plain strings so they log and compare cheaply; the admin view shows them).
TRYING = "trying"
CALLING = "calling"
PROCEEDING = "proceeding"
COMPLETED = "completed"
CONFIRMED = "confirmed"
ACCEPTED = "accepted"
TERMINATED = "terminated"

# Events. Responses are named by class: the TU's for a server transaction, the wire's for a
# client transaction.
R1XX = "1xx"
R2XX = "2xx"
R3XX = "3xx-6xx"
REQUEST = "request"  # a retransmission of the server transaction's request
ACK = "ACK"  # an ACK matching an INVITE server transaction
TIMER_A = "timer A"
TIMER_B = "timer B"
TIMER_D = "timer D"
TIMER_E = "timer E"
TIMER_F = "timer F"
TIMER_G = "timer G"
TIMER_H = "timer H"
TIMER_I = "timer I"
TIMER_J = "timer J"
TIMER_K = "timer K"
TIMER_L = "timer L"
TIMER_M = "timer M"
NO_FINAL = "no final"  # a non-INVITE server's TU never answered (128*T1)
TRANSPORT_ERROR = "transport error"
CANCELLED = "cancelled"  # a CANCEL went out for this INVITE
TERMINATE = "terminate"  # the TU (or shutdown) ends the transaction

#: the table as written: state -> event -> (new state, action names)
Table = Mapping[str, Mapping[str, Tuple[str, Tuple[str, ...]]]]
Action = Callable[[Any, Any], Any]
#: the table as run: the action names turned into the class's methods
Compiled = Dict[str, Dict[str, Tuple[str, Tuple[Action, ...]]]]


class TransactionStateError(Exception):
    """An event the transaction's table does not allow in its current state."""

    def __init__(self, transaction: Any, state: str, event: str):
        super().__init__("%r: %s is not allowed in state %s" % (transaction, event, state))
        self.transaction = transaction
        self.state = state
        self.event = event


def compile_table(table: Table, cls: type) -> Compiled:
    """`table` with each action name replaced by ``cls._<name>``; an unknown name fails here,
    at import, rather than on the first message."""
    out: Compiled = {}
    for state, row in table.items():
        out[state] = {}
        for event, (new, actions) in row.items():
            if new not in table:
                raise ValueError("%s: %s leads to %s, which has no row" % (state, event, new))
            out[state][event] = (new, tuple(getattr(cls, "_" + name) for name in actions))
    return out


def describe(table: Table) -> str:
    """The table as text, one transition a line: ``state  event -> new state: actions``."""
    lines = []
    for state, row in table.items():
        for event, (new, actions) in row.items():
            lines.append("%-11s %-16s -> %-11s %s" % (
                state, event, new, ", ".join(actions) if actions else "-"))
    return "\n".join(lines)


class Host(Protocol):
    """What a transaction needs from its layer."""

    clock: Any
    timers: Timers

    def later(self, delay: float, func: Callable[[], Any]) -> Timer: ...

    def send(self, message: Any, dest: Any) -> Any: ...

    def log(self, text: str) -> None: ...

    def refused(self, error: TransactionStateError) -> None: ...

    def forget_server(self, transaction: Any) -> None: ...

    def forget_client(self, transaction: Any) -> None: ...


def tell(tu: Any, name: str, *args: Any) -> None:
    """Call the TU's callback `name` if there is a TU and it has one."""
    if tu is None:
        return
    method = getattr(tu, name, None)
    if method is not None:
        method(*args)


class Transaction:
    """One transaction: its state, its TU, its two timers, and the dispatcher."""

    __slots__ = ("layer", "state", "tu", "_table", "_retransmit", "_timeout", "_interval")

    #: the side it plays ("server" or "client"), for events
    side = ""
    #: the TU's callback when the transaction ends
    _terminated = ""

    def __init__(self, layer: Host, state: str, table: Compiled, tu: Any):
        self.layer = layer
        self.state = state
        self.tu = tu
        self._table = table
        self._retransmit: Optional[Timer] = None
        self._timeout: Optional[Timer] = None
        self._interval = 0.0

    def fire(self, event: str, message: Any = None) -> bool:
        """Run `event` (with the message it carries, if any) through the table.

        Returns False when the message is not absorbed (passed on instead). Raises
        `TransactionStateError` when the current state does not allow `event`."""
        state = self.state
        try:
            new, actions = self._table[state][event]
        except KeyError:
            raise TransactionStateError(self, state, event) from None
        self.state = new
        then = None
        absorbed = True
        try:
            for action in actions:
                out = action(self, message)
                if out is not None:
                    if out is False:
                        absorbed = False
                    else:
                        then = out
        finally:
            if new == TERMINATED:
                if state != TERMINATED:
                    self._end()
            elif then is not None and self.state == new:
                self.fire(then)
        return absorbed

    def terminate(self) -> None:
        """End the transaction now (no callback other than ``*_terminated``)."""
        self.fire(TERMINATE)

    def step(self, event: str, message: Any = None) -> bool:
        """`fire` for events from the TU, the wire and the clock: an event the state does
        not allow is handed to the layer, which logs it, and nothing else happens."""
        try:
            return self.fire(event, message)
        except TransactionStateError as error:
            self.layer.refused(error)
            return True

    # -- actions both sides use

    def _stop_timers(self, message: Any = None) -> None:
        timer = self._retransmit
        if timer is not None:
            self._retransmit = None
            if timer.active():
                timer.cancel()
        timer = self._timeout
        if timer is not None:
            self._timeout = None
            if timer.active():
                timer.cancel()

    def _pass_on(self, message: Any) -> bool:
        return False

    def _forget_parsed(self, message: Any) -> None:
        message.forget_parsed()

    def _end(self) -> None:
        """Entering Terminated: the layer forgets the transaction and the TU is let go."""
        self._stop_timers()
        self._forget()
        if events.listening:
            events.emit("transaction", action="terminated", transaction=self, side=self.side)
        tu = self.tu
        self.tu = None  # the TU usually points back here: let refcounting free both
        tell(tu, self._terminated, self)

    def _forget(self) -> None:
        raise NotImplementedError
