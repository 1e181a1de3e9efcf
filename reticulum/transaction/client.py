"""Client transactions: §17.1.1 INVITE (with RFC 6026 Accepted) and §17.1.2 non-INVITE.

Events: responses from the wire (``1xx``, ``2xx``, ``3xx-6xx``), the timers, a ``transport
error``, ``cancelled`` (a CANCEL went out for this INVITE) and ``terminate``. A client
transaction starts in Calling (INVITE) or Trying: the request goes out at once and Timer A/E
(unreliable transports only) and B/F start. A send that fails is a transport error, reported
from the clock, never from inside the layer's ``new_client``.

INVITE client (INVITE_CLIENT)::

    calling     1xx              -> proceeding  keep, stop_timers, report
    calling     2xx              -> accepted    keep, stop_timers, start_m, report, linger
    calling     3xx-6xx          -> completed   keep, stop_timers, send_ack, start_d, report, linger
    calling     timer A          -> calling     double, retransmit_a
    calling     timer B          -> terminated  log_timeout, tell_timeout
    calling     transport error  -> terminated  log_error, tell_error
    calling     cancelled        -> calling     -
    calling     terminate        -> terminated  -
    proceeding  1xx              -> proceeding  keep, report
    proceeding  2xx              -> accepted    keep, stop_timers, start_m, report, linger
    proceeding  3xx-6xx          -> completed   keep, stop_timers, send_ack, start_d, report, linger
    proceeding  timer B          -> terminated  log_timeout, tell_timeout
    proceeding  transport error  -> terminated  log_error, tell_error
    proceeding  cancelled        -> proceeding  start_cancel_guard
    proceeding  terminate        -> terminated  -
    accepted    1xx              -> accepted    -
    accepted    2xx              -> accepted    report, forget_parsed
    accepted    3xx-6xx          -> accepted    -
    accepted    timer M          -> terminated  -
    accepted    transport error  -> accepted    -
    accepted    cancelled        -> accepted    -
    accepted    terminate        -> terminated  -
    completed   1xx              -> completed   -
    completed   2xx              -> completed   -
    completed   3xx-6xx          -> completed   resend_ack
    completed   timer D          -> terminated  -
    completed   transport error  -> completed   -
    completed   cancelled        -> completed   -
    completed   terminate        -> terminated  -
    terminated  transport error  -> terminated  -
    terminated  terminate        -> terminated  -

non-INVITE client (NON_INVITE_CLIENT)::

    trying      1xx              -> proceeding  keep, report
    trying      2xx              -> completed   keep, stop_timers, start_k, report, linger
    trying      3xx-6xx          -> completed   keep, stop_timers, start_k, report, linger
    trying      timer E          -> trying      double_up_to_t2, retransmit_e
    trying      timer F          -> terminated  log_timeout, tell_timeout
    trying      transport error  -> terminated  log_error, tell_error
    trying      terminate        -> terminated  -
    proceeding  1xx              -> proceeding  keep, report
    proceeding  2xx              -> completed   keep, stop_timers, start_k, report, linger
    proceeding  3xx-6xx          -> completed   keep, stop_timers, start_k, report, linger
    proceeding  timer E          -> proceeding  t2, retransmit_e
    proceeding  timer F          -> terminated  log_timeout, tell_timeout
    proceeding  transport error  -> terminated  log_error, tell_error
    proceeding  terminate        -> terminated  -
    completed   1xx              -> completed   -
    completed   2xx              -> completed   -
    completed   3xx-6xx          -> completed   -
    completed   timer K          -> terminated  -
    completed   transport error  -> completed   -
    completed   terminate        -> terminated  -
    terminated  transport error  -> terminated  -
    terminated  terminate        -> terminated  -
"""
from __future__ import annotations

from typing import Any, Optional

from reticulum.addresses import Destination
from reticulum.sip import Request, Response
from reticulum.transaction.keys import Address, address_of
from reticulum.transaction.machine import (
    ACCEPTED, CALLING, CANCELLED, COMPLETED, PROCEEDING, R1XX, R2XX, R3XX, TERMINATE,
    TERMINATED, TIMER_A, TIMER_B, TIMER_D, TIMER_E, TIMER_F, TIMER_K, TIMER_M, TRANSPORT_ERROR,
    TRYING, Host, Table, Transaction, compile_table, tell,
)

__all__ = ["ClientTransaction", "INVITE_CLIENT", "NON_INVITE_CLIENT"]

_END = (TERMINATED, ())
_TIMED_OUT = (TERMINATED, ("log_timeout", "tell_timeout"))
_FAILED = (TERMINATED, ("log_error", "tell_error"))
_ACCEPT = (ACCEPTED, ("keep", "stop_timers", "start_m", "report", "linger"))
_REFUSE = (COMPLETED, ("keep", "stop_timers", "send_ack", "start_d", "report", "linger"))
_FINAL_NON_INVITE = (COMPLETED, ("keep", "stop_timers", "start_k", "report", "linger"))

INVITE_CLIENT: Table = {
    CALLING: {
        R1XX: (PROCEEDING, ("keep", "stop_timers", "report")),  # Timers A and B are done
        R2XX: _ACCEPT,
        R3XX: _REFUSE,
        TIMER_A: (CALLING, ("double", "retransmit_a")),
        TIMER_B: _TIMED_OUT,
        TRANSPORT_ERROR: _FAILED,
        CANCELLED: (CALLING, ()),  # Timer B still runs
        TERMINATE: _END,
    },
    PROCEEDING: {
        R1XX: (PROCEEDING, ("keep", "report")),
        R2XX: _ACCEPT,
        R3XX: _REFUSE,
        TIMER_B: _TIMED_OUT,  # started again by a CANCEL
        TRANSPORT_ERROR: _FAILED,
        CANCELLED: (PROCEEDING, ("start_cancel_guard",)),
        TERMINATE: _END,
    },
    ACCEPTED: {  # RFC 6026: every 2xx (retransmission or fork) goes to the TU
        R1XX: (ACCEPTED, ()),
        R2XX: (ACCEPTED, ("report", "forget_parsed")),
        R3XX: (ACCEPTED, ()),
        TIMER_M: _END,
        TRANSPORT_ERROR: (ACCEPTED, ()),  # the final response is in
        CANCELLED: (ACCEPTED, ()),
        TERMINATE: _END,
    },
    COMPLETED: {
        R1XX: (COMPLETED, ()),
        R2XX: (COMPLETED, ()),
        R3XX: (COMPLETED, ("resend_ack",)),
        TIMER_D: _END,
        TRANSPORT_ERROR: (COMPLETED, ()),
        CANCELLED: (COMPLETED, ()),
        TERMINATE: _END,
    },
    TERMINATED: {
        TRANSPORT_ERROR: _END,  # a failed first send, reported from the clock
        TERMINATE: _END,
    },
}

NON_INVITE_CLIENT: Table = {
    TRYING: {
        R1XX: (PROCEEDING, ("keep", "report")),
        R2XX: _FINAL_NON_INVITE,
        R3XX: _FINAL_NON_INVITE,
        TIMER_E: (TRYING, ("double_up_to_t2", "retransmit_e")),
        TIMER_F: _TIMED_OUT,
        TRANSPORT_ERROR: _FAILED,
        TERMINATE: _END,
    },
    PROCEEDING: {
        R1XX: (PROCEEDING, ("keep", "report")),
        R2XX: _FINAL_NON_INVITE,
        R3XX: _FINAL_NON_INVITE,
        TIMER_E: (PROCEEDING, ("t2", "retransmit_e")),
        TIMER_F: _TIMED_OUT,
        TRANSPORT_ERROR: _FAILED,
        TERMINATE: _END,
    },
    COMPLETED: {  # response retransmissions are absorbed
        R1XX: (COMPLETED, ()),
        R2XX: (COMPLETED, ()),
        R3XX: (COMPLETED, ()),
        TIMER_K: _END,
        TRANSPORT_ERROR: (COMPLETED, ()),
        TERMINATE: _END,
    },
    TERMINATED: {
        TRANSPORT_ERROR: _END,
        TERMINATE: _END,
    },
}


class ClientTransaction(Transaction):
    """One client transaction; the layer brings responses, timers and transport errors."""

    __slots__ = (
        "request",
        "method",
        "key",
        "dest",
        "is_invite",
        "reliable",
        "last_response",
        "ack",
        "address",
    )

    side = "client"
    _terminated = "client_terminated"

    def __init__(self, layer: Host, request: Request, branch: str, dest: Destination, tu: Any):
        self.method = method = request.method
        self.is_invite = invite = method == "INVITE"
        if invite:
            Transaction.__init__(self, layer, CALLING, _INVITE_CLIENT, tu)
        else:
            Transaction.__init__(self, layer, TRYING, _NON_INVITE_CLIENT, tu)
        self.request: Optional[Request] = request
        self.key = branch
        self.dest = dest
        self.reliable = bool(dest.reliable)
        self.last_response: Optional[Response] = None
        self.ack: Optional[Request] = None  # the ACK we built for a 3xx-6xx response
        self.address: Address = address_of(dest)  # the layer's index key

    def __repr__(self) -> str:
        return "<ClientTransaction %s %s %s>" % (self.method, self.state, self.key)

    def start(self) -> None:
        """Calling / Trying: the request goes out, Timer A/E and B/F start."""
        layer = self.layer
        timers = layer.timers
        if self.is_invite:
            if not self.reliable:
                self._interval = timers.a
                self._retransmit = layer.later(self._interval, self._on_timer_a)
            self._timeout = layer.later(timers.b, self._on_timer_b)
        else:
            if not self.reliable:
                self._interval = timers.e
                self._retransmit = layer.later(self._interval, self._on_timer_e)
            self._timeout = layer.later(timers.f, self._on_timer_f)
        if layer.send(self.request, self.dest) is False:
            layer.clock.callLater(0, self._on_transport_error)

    # -- clock events

    def _on_timer_a(self) -> None:
        self._retransmit = None
        self.step(TIMER_A)

    def _on_timer_e(self) -> None:
        self._retransmit = None
        self.step(TIMER_E)

    def _on_timer_b(self) -> None:
        self._timeout = None
        self.step(TIMER_B)

    def _on_timer_f(self) -> None:
        self._timeout = None
        self.step(TIMER_F)

    def _on_timer_d(self) -> None:
        self._timeout = None
        self.step(TIMER_D)

    def _on_timer_k(self) -> None:
        self._timeout = None
        self.step(TIMER_K)

    def _on_timer_m(self) -> None:
        self._timeout = None
        self.step(TIMER_M)

    def _on_transport_error(self) -> None:
        self.step(TRANSPORT_ERROR)

    # -- actions

    def _keep(self, response: Response) -> None:
        self.last_response = response

    def _report(self, response: Response) -> None:
        tell(self.tu, "client_response", self, response)

    def _linger(self, response: Response) -> None:
        """The final response has been handed over; until a timer ends the transaction only
        retransmissions are absorbed: the request goes, the response is kept unparsed."""
        self.request = None
        response.forget_parsed()

    def _send_ack(self, response: Response) -> None:
        """§17.1.1.3: the ACK for a 3xx-6xx response to our INVITE."""
        request = self.request
        assert request is not None
        ack = type(request)("ACK", request.uri)
        ack.add("Via", request.get_all("Via")[0])
        for route in request.get_all("Route"):
            ack.add("Route", route)
        ack.add("Max-Forwards", "70")
        ack.add("From", request.get("From"))
        ack.add("To", response.get("To"))
        ack.add("Call-ID", request.get("Call-ID"))
        ack.add("CSeq", "%d ACK" % request.cseq.number)
        self.ack = ack
        self.layer.send(ack, self.dest)

    def _resend_ack(self, response: Response) -> None:
        if self.ack is not None:
            self.layer.send(self.ack, self.dest)

    def _double(self, message: Any) -> None:
        self._interval = 2 * self._interval

    def _double_up_to_t2(self, message: Any) -> None:
        self._interval = min(2 * self._interval, self.layer.timers.t2)

    def _t2(self, message: Any) -> None:
        self._interval = self.layer.timers.t2

    def _retransmit_a(self, message: Any) -> Optional[str]:
        if self.layer.send(self.request, self.dest) is False:
            return TRANSPORT_ERROR
        self._retransmit = self.layer.later(self._interval, self._on_timer_a)
        return None

    def _retransmit_e(self, message: Any) -> Optional[str]:
        if self.layer.send(self.request, self.dest) is False:
            return TRANSPORT_ERROR
        self._retransmit = self.layer.later(self._interval, self._on_timer_e)
        return None

    def _start_m(self, message: Any) -> None:
        self._timeout = self.layer.later(self.layer.timers.m, self._on_timer_m)

    def _start_d(self, message: Any) -> Optional[str]:
        delay = self.layer.timers.d(self.reliable)
        if delay <= 0:
            return TIMER_D
        self._timeout = self.layer.later(delay, self._on_timer_d)
        return None

    def _start_k(self, message: Any) -> Optional[str]:
        delay = self.layer.timers.k(self.reliable)
        if delay <= 0:
            return TIMER_K
        self._timeout = self.layer.later(delay, self._on_timer_k)
        return None

    def _start_cancel_guard(self, message: Any) -> None:
        """§9.1: without a final response within 64*T1 of the CANCEL the INVITE is given up
        (Proceeding has no timer of its own)."""
        if self._timeout is None:
            self._timeout = self.layer.later(self.layer.timers.b, self._on_timer_b)

    def _log_timeout(self, message: Any) -> None:
        self.layer.log("%s: timed out" % (self,))

    def _tell_timeout(self, message: Any) -> None:
        tell(self.tu, "client_timeout", self)

    def _log_error(self, message: Any) -> None:
        self.layer.log("%s: transport error" % (self,))

    def _tell_error(self, message: Any) -> None:
        tell(self.tu, "client_error", self)

    def _forget(self) -> None:
        self.layer.forget_client(self)


_INVITE_CLIENT = compile_table(INVITE_CLIENT, ClientTransaction)
_NON_INVITE_CLIENT = compile_table(NON_INVITE_CLIENT, ClientTransaction)
