"""Server transactions: §17.2.1 INVITE (with RFC 6026 Accepted) and §17.2.2 non-INVITE.

Events: the TU's responses (``1xx``, ``2xx``, ``3xx-6xx``), a retransmitted ``request`` or an
``ACK`` from the wire, the timers, and ``terminate``. An INVITE server transaction starts in
Proceeding (the TU sends 100 Trying); a non-INVITE one in Trying, with a guard that ends it
if its TU never answers (``no final``, 128*T1).

INVITE server (INVITE_SERVER)::

    proceeding  1xx              -> proceeding  send
    proceeding  2xx              -> accepted    send, remember_to_tag, linger, start_l
    proceeding  3xx-6xx          -> completed   send, remember_to_tag, linger, start_g, start_h
    proceeding  request          -> proceeding  resend
    proceeding  ACK              -> proceeding  -
    proceeding  terminate        -> terminated  -
    accepted    2xx              -> accepted    send, forget_parsed
    accepted    request          -> accepted    -
    accepted    ACK              -> accepted    pass_on
    accepted    timer L          -> terminated  -
    accepted    terminate        -> terminated  -
    completed   request          -> completed   resend
    completed   ACK              -> confirmed   stop_timers, start_i
    completed   timer G          -> completed   resend, back_off_g
    completed   timer H          -> terminated  log_no_ack, tell_timeout
    completed   terminate        -> terminated  -
    confirmed   request          -> confirmed   -
    confirmed   ACK              -> confirmed   -
    confirmed   timer I          -> terminated  -
    confirmed   terminate        -> terminated  -
    terminated  terminate        -> terminated  -

non-INVITE server (NON_INVITE_SERVER)::

    trying      1xx              -> proceeding  send
    trying      2xx              -> completed   send, stop_timers, linger, start_j
    trying      3xx-6xx          -> completed   send, stop_timers, linger, start_j
    trying      request          -> trying      -
    trying      no final         -> terminated  log_unanswered
    trying      terminate        -> terminated  -
    proceeding  1xx              -> proceeding  send
    proceeding  2xx              -> completed   send, stop_timers, linger, start_j
    proceeding  3xx-6xx          -> completed   send, stop_timers, linger, start_j
    proceeding  request          -> proceeding  resend
    proceeding  no final         -> terminated  log_unanswered
    proceeding  terminate        -> terminated  -
    completed   request          -> completed   resend
    completed   timer J          -> terminated  -
    completed   terminate        -> terminated  -
    terminated  terminate        -> terminated  -
"""
from __future__ import annotations

from typing import Any, Optional

from reticulum.addresses import Destination
from reticulum.sip import Request, Response
from reticulum.transaction.keys import legacy_to_tag_matches
from reticulum.transaction.machine import (
    ACCEPTED, ACK, COMPLETED, CONFIRMED, NO_FINAL, PROCEEDING, R1XX, R2XX, R3XX, REQUEST,
    TERMINATE, TERMINATED, TIMER_G, TIMER_H, TIMER_I, TIMER_J, TIMER_L, TRYING, Host, Table,
    Transaction, TransactionStateError, compile_table, tell,
)

__all__ = ["ServerTransaction", "INVITE_SERVER", "NON_INVITE_SERVER"]

_END = (TERMINATED, ())
_FINAL_NON_INVITE = (COMPLETED, ("send", "stop_timers", "linger", "start_j"))

INVITE_SERVER: Table = {
    PROCEEDING: {
        R1XX: (PROCEEDING, ("send",)),
        R2XX: (ACCEPTED, ("send", "remember_to_tag", "linger", "start_l")),
        R3XX: (COMPLETED, ("send", "remember_to_tag", "linger", "start_g", "start_h")),
        REQUEST: (PROCEEDING, ("resend",)),
        ACK: (PROCEEDING, ()),  # an ACK for nothing: absorbed
        TERMINATE: _END,
    },
    ACCEPTED: {  # RFC 6026 §7.1: the TU retransmits its 2xx; ACKs go on to the proxy
        R2XX: (ACCEPTED, ("send", "forget_parsed")),
        REQUEST: (ACCEPTED, ()),
        ACK: (ACCEPTED, ("pass_on",)),
        TIMER_L: _END,
        TERMINATE: _END,
    },
    COMPLETED: {
        REQUEST: (COMPLETED, ("resend",)),
        ACK: (CONFIRMED, ("stop_timers", "start_i")),
        TIMER_G: (COMPLETED, ("resend", "back_off_g")),
        TIMER_H: (TERMINATED, ("log_no_ack", "tell_timeout")),
        TERMINATE: _END,
    },
    CONFIRMED: {
        REQUEST: (CONFIRMED, ()),
        ACK: (CONFIRMED, ()),
        TIMER_I: _END,
        TERMINATE: _END,
    },
    TERMINATED: {
        TERMINATE: _END,
    },
}

NON_INVITE_SERVER: Table = {
    TRYING: {
        R1XX: (PROCEEDING, ("send",)),
        R2XX: _FINAL_NON_INVITE,
        R3XX: _FINAL_NON_INVITE,
        REQUEST: (TRYING, ()),  # absorbed without an answer
        NO_FINAL: (TERMINATED, ("log_unanswered",)),
        TERMINATE: _END,
    },
    PROCEEDING: {
        R1XX: (PROCEEDING, ("send",)),
        R2XX: _FINAL_NON_INVITE,
        R3XX: _FINAL_NON_INVITE,
        REQUEST: (PROCEEDING, ("resend",)),
        NO_FINAL: (TERMINATED, ("log_unanswered",)),
        TERMINATE: _END,
    },
    COMPLETED: {
        REQUEST: (COMPLETED, ("resend",)),
        TIMER_J: _END,
        TERMINATE: _END,
    },
    TERMINATED: {
        TERMINATE: _END,
    },
}


class ServerTransaction(Transaction):
    """One server transaction; `respond` is the TU's way in, the layer brings the wire's."""

    __slots__ = (
        "request",
        "method",
        "key",
        "response_dest",
        "last_response",
        "is_invite",
        "reliable",
        "to_tag",
        "response_to_tag",
    )

    side = "server"
    _terminated = "server_terminated"

    def __init__(self, layer: Host, request: Request, key: str, rfc3261: bool,
                 response_dest: Destination, tu: Any):
        self.method = method = request.method
        self.is_invite = invite = method == "INVITE"
        if invite:
            Transaction.__init__(self, layer, PROCEEDING, _INVITE_SERVER, tu)
        else:
            Transaction.__init__(self, layer, TRYING, _NON_INVITE_SERVER, tu)
        self.request: Optional[Request] = request
        self.key = key
        self.response_dest = response_dest
        self.reliable = bool(response_dest.reliable)
        self.last_response: Optional[Response] = None
        # RFC 2543 matching only: the request's To tag, and the one of our final response
        self.to_tag: Optional[str] = None if rfc3261 else request.to.tag
        self.response_to_tag: Optional[str] = None
        if not invite:
            # A TU that never answers must not leave the transaction behind: the client gave
            # up at 64*T1 (Timer F) anyway.
            self._timeout = layer.later(layer.timers.unanswered, self._on_no_final)

    def __repr__(self) -> str:
        return "<ServerTransaction %s %s %s>" % (self.method, self.state, self.key)

    # -- the TU's side

    def respond(self, response: Response) -> None:
        """Send a response through this transaction (the table decides what it means); one
        the state does not allow is logged by the layer and not sent."""
        status = response.status
        try:  # step(), written out: this is every response's path
            self.fire(R1XX if status < 200 else R2XX if status < 300 else R3XX, response)
        except TransactionStateError as error:
            self.layer.refused(error)

    # -- the layer's side

    def legacy_match(self, request: Request) -> bool:
        """RFC 2543 matching: the To tag test that the key leaves out."""
        return legacy_to_tag_matches(request, self.is_invite, self.to_tag, self.response_to_tag)

    # -- clock events

    def _on_timer_g(self) -> None:
        self._retransmit = None
        self.step(TIMER_G)

    def _on_timer_h(self) -> None:
        self._timeout = None
        self.step(TIMER_H)

    def _on_timer_i(self) -> None:
        self._timeout = None
        self.step(TIMER_I)

    def _on_timer_j(self) -> None:
        self._timeout = None
        self.step(TIMER_J)

    def _on_timer_l(self) -> None:
        self._timeout = None
        self.step(TIMER_L)

    def _on_no_final(self) -> None:
        self._timeout = None
        self.step(NO_FINAL)

    # -- actions

    def _send(self, response: Response) -> None:
        """Out it goes, and it is the one retransmissions of the request get."""
        self.last_response = response
        self.layer.send(response, self.response_dest)

    def _resend(self, message: Any) -> None:
        if self.last_response is not None:
            self.layer.send(self.last_response, self.response_dest)

    def _remember_to_tag(self, response: Response) -> None:
        try:
            self.response_to_tag = response.to.tag
        except Exception:
            self.response_to_tag = None

    def _linger(self, response: Response) -> None:
        """The final response is out; what is left is answering retransmissions (and ACKs)
        until a timer ends the transaction, often tens of seconds later. Keep no more than
        that needs: the request goes, the response is kept unparsed."""
        self.request = None
        response.forget_parsed()

    def _start_g(self, message: Any) -> None:
        if not self.reliable:
            self._interval = self.layer.timers.g
            self._retransmit = self.layer.later(self._interval, self._on_timer_g)

    def _back_off_g(self, message: Any) -> None:
        self._interval = min(2 * self._interval, self.layer.timers.t2)
        self._retransmit = self.layer.later(self._interval, self._on_timer_g)

    def _start_h(self, message: Any) -> None:
        self._timeout = self.layer.later(self.layer.timers.h, self._on_timer_h)

    def _start_i(self, message: Any) -> Optional[str]:
        delay = self.layer.timers.i(self.reliable)
        if delay <= 0:
            return TIMER_I
        self._timeout = self.layer.later(delay, self._on_timer_i)
        return None

    def _start_j(self, message: Any) -> Optional[str]:
        delay = self.layer.timers.j(self.reliable)
        if delay <= 0:
            return TIMER_J
        self._timeout = self.layer.later(delay, self._on_timer_j)
        return None

    def _start_l(self, message: Any) -> None:
        self._timeout = self.layer.later(self.layer.timers.l, self._on_timer_l)

    def _log_no_ack(self, message: Any) -> None:
        self.layer.log("%s: Timer H, no ACK" % (self,))

    def _tell_timeout(self, message: Any) -> None:
        tell(self.tu, "server_timeout", self)

    def _log_unanswered(self, message: Any) -> None:
        self.layer.log("%s: no final response from the TU" % (self,))

    def _forget(self) -> None:
        self.layer.forget_server(self)


_INVITE_SERVER = compile_table(INVITE_SERVER, ServerTransaction)
_NON_INVITE_SERVER = compile_table(NON_INVITE_SERVER, ServerTransaction)
