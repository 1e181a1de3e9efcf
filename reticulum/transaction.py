"""RFC 3261 §17 transactions, with the RFC 6026 "Accepted" states. Sans-IO.

The layer never touches a socket or a reactor: messages leave through the injected
``send(message, dest)`` callable and every timer goes through the injected clock
(``seconds()``, ``callLater(delay, f, *args)`` returning an object with ``cancel()`` and
``active()``). ``dest`` is opaque here except for ``dest.reliable``: retransmission timers run
only on unreliable transports, and the "wait for retransmissions" timers (D, I, J, K) are zero
on reliable ones, where the transaction ends at once.

Transaction users (the proxy) receive callbacks:

server side   ``tu.server_timeout(st)``      Timer H fired: no ACK for a 3xx-6xx response
              ``tu.server_terminated(st)``   optional; the transaction is gone
client side   ``tu.client_response(ct, r)``  every provisional, the final response once, and
                                             every 2xx (retransmission or fork) in Accepted
              ``tu.client_timeout(ct)``      Timer B / Timer F
              ``tu.client_error(ct)``        transport error (``transport_error`` or a send
                                             that returned False)
              ``tu.client_terminated(ct)``   optional; the transaction is gone

A transaction removes itself from the layer's tables when it terminates, so the tables only
ever hold live transactions.

Timers of the same duration fire in the order they were started, so the layer keeps them in
one FIFO queue per duration (Timer J, L, M, ... each make one queue; the retransmission
intervals a few more) with a single clock call for the head of each queue, rather than one
clock call per timer: tens of thousands of lingering transactions cost one small object each.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Dict, List, Optional

from reticulum import events
from reticulum.sip import MAGIC_COOKIE

__all__ = [
    "Timers",
    "TransactionLayer",
    "ServerTransaction",
    "ClientTransaction",
]


# States (plain strings so they log and compare cheaply).
TRYING = "trying"
CALLING = "calling"
PROCEEDING = "proceeding"
COMPLETED = "completed"
CONFIRMED = "confirmed"
ACCEPTED = "accepted"
TERMINATED = "terminated"


class Timers:
    """RFC 3261 Table 4 timer values, derived from T1, T2 and T4 (config ``[timers]``).

    ``a``, ``e``, ``g`` are the first retransmission intervals; ``b``, ``f``, ``h``, ``l``, ``m``
    the 64*T1 timeouts; ``d(reliable)``, ``i(reliable)``, ``j(reliable)``, ``k(reliable)`` are
    zero on reliable transports.
    """

    __slots__ = ("t1", "t2", "t4")

    D_UNRELIABLE = 32.0

    def __init__(self, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0):
        if not (t1 > 0 and t2 > 0 and t4 > 0):
            raise ValueError("timer values must be positive")
        if t2 < t1:
            raise ValueError("T2 must not be smaller than T1")
        self.t1 = float(t1)
        self.t2 = float(t2)
        self.t4 = float(t4)

    def __repr__(self) -> str:
        return "Timers(t1=%r, t2=%r, t4=%r)" % (self.t1, self.t2, self.t4)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timers):
            return NotImplemented
        return (self.t1, self.t2, self.t4) == (other.t1, other.t2, other.t4)

    def __hash__(self) -> int:
        return hash((self.t1, self.t2, self.t4))

    @property
    def a(self) -> float:
        return self.t1

    @property
    def e(self) -> float:
        return self.t1

    @property
    def g(self) -> float:
        return self.t1

    @property
    def b(self) -> float:
        return 64 * self.t1

    @property
    def f(self) -> float:
        return 64 * self.t1

    @property
    def h(self) -> float:
        return 64 * self.t1

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name
        return 64 * self.t1

    @property
    def m(self) -> float:
        return 64 * self.t1

    @property
    def unanswered(self) -> float:
        """How long a non-INVITE server transaction waits for its TU's final response (twice
        Timer F: the client has given up long before)."""
        return 128 * self.t1

    def d(self, reliable: bool = False) -> float:
        return 0.0 if reliable else self.D_UNRELIABLE

    def i(self, reliable: bool = False) -> float:
        return 0.0 if reliable else self.t4

    def j(self, reliable: bool = False) -> float:
        return 0.0 if reliable else 64 * self.t1

    def k(self, reliable: bool = False) -> float:
        return 0.0 if reliable else self.t4


# -- keys ------------------------------------------------------------------------------------


def _server_key(request, method: str) -> "tuple[str, bool]":
    """The server transaction key of `request` for `method`, and whether it is RFC 3261 style.

    RFC 3261 (§17.2.3): top Via branch + sent-by + method. RFC 2543 fallback (no magic cookie):
    Request-URI, From tag, Call-ID, CSeq number, top Via and method; the To tag is compared
    separately because an ACK carries the tag of the response rather than the request's.
    """
    via = request.via
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        port = via.port
        return (
            "%s %s:%s %s" % (branch, via.host.lower(), "" if port is None else port, method),
            True,
        )
    return (
        "2543 %s %s %s %d %s %s"
        % (
            request.uri,
            request.from_.tag or "",
            request.call_id,
            request.cseq.number,
            method,
            via,
        ),
        False,
    )


def _address(dest) -> "Optional[tuple]":
    """(transport, host, port) of a Flow (``remote``) or a Target (``host``/``port``)."""
    transport = getattr(dest, "transport", None)
    remote = getattr(dest, "remote", None)
    if remote is not None:
        try:
            return (str(transport).lower(), remote[0], remote[1])
        except (TypeError, IndexError):
            return None
    host = getattr(dest, "host", None)
    if host is None:
        return None
    return (str(transport).lower(), host, getattr(dest, "port", None))


def _same_dest(a, b) -> bool:
    """Does a transport error reported for `b` concern a transaction sending to `a`?

    Equal destinations match. A destination given as an address (no connection id) also
    matches a flow to that address; two flows with connection ids must be the same flow."""
    if a is b:
        return True
    try:
        if a == b:
            return True
    except Exception:
        pass
    if hasattr(a, "conn") and hasattr(b, "conn"):
        return False  # two flows that are not equal: different connections
    address = _address(a)
    return address is not None and address == _address(b)


def _callback(tu, name: str, *args) -> None:
    if tu is None:
        return
    method = getattr(tu, name, None)
    if method is not None:
        method(*args)


# -- timers ----------------------------------------------------------------------------------


class _Timer:
    """One started timer: ``active()`` and ``cancel()`` as a clock's delayed call has."""

    __slots__ = ("when", "func", "queue")

    def __init__(self, when: float, func, queue: "_TimerQueue"):
        self.when = when
        self.func = func
        self.queue = queue

    def active(self) -> bool:
        return self.func is not None

    def getTime(self) -> float:
        return self.when

    def cancel(self) -> None:
        if self.func is not None:
            self.func = None
            queue = self.queue
            self.queue = None
            queue.cancelled(self)


class _TimerQueue:
    """The started timers of one duration, in firing order, and the clock call for the
    first of them."""

    __slots__ = ("clock", "delay", "entries", "live", "call", "running")

    def __init__(self, clock, delay: float):
        self.clock = clock
        self.delay = delay
        self.entries: deque = deque()
        self.live = 0
        self.call = None
        self.running = False

    def start(self, func) -> _Timer:
        timer = _Timer(self.clock.seconds() + self.delay, func, self)
        self.entries.append(timer)
        self.live += 1
        if self.call is None and not self.running:
            self.call = self.clock.callLater(self.delay, self._run)
        return timer

    def cancelled(self, timer: _Timer) -> None:
        self.live -= 1
        entries = self.entries
        if not self.live:
            entries.clear()
            call = self.call
            if call is not None:
                self.call = None
                call.cancel()
            return
        # A timer cancelled right after it was started (a transaction answered at once) is
        # the newest one: take it off now rather than when its time comes.
        while entries and entries[-1].func is None:
            entries.pop()

    def _run(self) -> None:
        self.call = None
        self.running = True
        entries = self.entries
        try:
            now = self.clock.seconds()
            while entries:
                timer = entries[0]
                func = timer.func
                if func is not None and timer.when > now:
                    break
                entries.popleft()
                if func is not None:
                    timer.func = None
                    timer.queue = None
                    self.live -= 1
                    func()
        finally:
            self.running = False
            while entries and entries[0].func is None:
                entries.popleft()
            if entries and self.call is None:
                self.call = self.clock.callLater(
                    max(0.0, entries[0].when - self.clock.seconds()), self._run)


# -- the layer -------------------------------------------------------------------------------


class TransactionLayer:
    """Tables of live server and client transactions; matching of incoming messages."""

    def __init__(
        self,
        clock,
        timers: Optional[Timers] = None,
        send: Optional[Callable[[Any, Any], Any]] = None,
        log: Optional[Callable[[str], None]] = None,
    ):
        self.clock = clock
        self.timers = timers if timers is not None else Timers()
        self._send = send if send is not None else (lambda message, dest: None)
        self._log = log
        self._servers: Dict[str, ServerTransaction] = {}
        self._clients: Dict[str, ClientTransaction] = {}  # branch -> INVITE / non-INVITE
        self._cancels: Dict[str, ClientTransaction] = {}  # branch -> CANCEL
        self._queues: Dict[float, _TimerQueue] = {}  # duration -> its started timers
        # (transport, host, port) of the destination -> its live client transactions
        self._by_address: Dict[Any, Dict[ClientTransaction, None]] = {}

    def later(self, delay: float, func) -> _Timer:
        """Start a timer: ``func()`` runs after ``delay`` seconds of the clock unless the
        returned timer is cancelled first."""
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = _TimerQueue(self.clock, delay)
        return queue.start(func)

    # -- accounting

    def __len__(self) -> int:
        return len(self._servers) + len(self._clients) + len(self._cancels)

    @property
    def server_count(self) -> int:
        return len(self._servers)

    @property
    def client_count(self) -> int:
        return len(self._clients) + len(self._cancels)

    def servers(self) -> "List[ServerTransaction]":
        return list(self._servers.values())

    def clients(self) -> "List[ClientTransaction]":
        return list(self._clients.values()) + list(self._cancels.values())

    def log(self, text: str) -> None:
        if self._log is not None:
            self._log(text)

    # -- server side

    def handle_request(self, request) -> bool:
        """Give an incoming request to the server transaction it belongs to.

        True: absorbed (a retransmission; the last response was re-sent if there is one, or an
        ACK for a 3xx-6xx response). False: no transaction took it; the caller creates a new
        server transaction, or, for an ACK, forwards it (this includes an ACK for a 2xx
        matching an INVITE transaction in the Accepted state, RFC 6026 §7.1).
        """
        method = request.method
        key, rfc3261 = _server_key(request, "INVITE" if method == "ACK" else method)
        st = self._servers.get(key)
        if st is None:
            return False
        if not rfc3261 and not st._legacy_to_tag_matches(request):
            return False
        return st._receive(request)

    def new_server(self, request, response_dest, tu) -> "ServerTransaction":
        """A server transaction for a request `handle_request` did not absorb (never an ACK)."""
        method = request.method
        if method == "ACK":
            raise ValueError("ACK never creates a server transaction")
        key, rfc3261 = _server_key(request, method)
        st = ServerTransaction(self, request, key, rfc3261, response_dest, tu)
        old = self._servers.get(key)
        if old is not None:
            self.log("Server transaction %s replaced while %s" % (key, old.state))
        self._servers[key] = st
        if events.listening:
            events.emit("transaction", action="created", transaction=st, side="server")
        if not st.is_invite:
            # A TU that never answers must not leave the transaction behind: the client gave
            # up at 64*T1 (Timer F) anyway.
            st._timeout = self.later(self.timers.unanswered, st._timer_unanswered)
        return st

    def find_invite_server(self, cancel_request) -> "Optional[ServerTransaction]":
        """§9.2: the INVITE server transaction a CANCEL refers to, or None."""
        key, rfc3261 = _server_key(cancel_request, "INVITE")
        st = self._servers.get(key)
        if st is None:
            return None
        if not rfc3261 and st._to_tag != cancel_request.to.tag:
            return None
        return st

    # -- client side

    def new_client(self, request, dest, tu, branch=None) -> "ClientTransaction":
        """Start a client transaction: the request (top Via with a branch) is sent at once.
        ``branch``: that Via's branch when the caller knows it (it just wrote it)."""
        method = request.method
        if method == "ACK":
            raise ValueError("ACK never creates a client transaction")
        if branch is None:
            branch = request.via.branch
        if not branch:
            raise ValueError("a client transaction needs a Via branch")
        ct = ClientTransaction(self, request, branch, dest, tu)
        ct.address = address = _address(dest)
        bucket = self._by_address.get(address)
        if bucket is None:
            bucket = self._by_address[address] = {}
        bucket[ct] = None
        table = self._cancels if method == "CANCEL" else self._clients
        old = table.get(branch)
        if old is not None:
            self.log("Client transaction %s %s replaced while %s" % (method, branch, old.state))
        table[branch] = ct
        if events.listening:
            events.emit("transaction", action="created", transaction=ct, side="client")
        if method == "CANCEL":
            invite = self._clients.get(branch)
            if invite is not None and invite.is_invite:
                invite._cancelled()
        ct._start()
        return ct

    def handle_response(self, response) -> bool:
        """§17.1.3: give a response to its client transaction. False when none matches."""
        via = response.via
        branch = via.branch if via is not None else None
        if not branch:
            return False
        method = response.cseq.method
        ct = (self._cancels if method == "CANCEL" else self._clients).get(branch)
        if ct is None or ct.method != method:
            return False
        ct._receive(response)
        return True

    def transport_error(self, dest) -> None:
        """Every client transaction still waiting for a final response from `dest` fails."""
        address = _address(dest)
        if address is None:
            candidates = [ct for bucket in self._by_address.values() for ct in bucket]
        else:
            # only transactions to that address can match (an error on a flow also concerns
            # targets of its address); the lookup keeps a failing destination from costing a
            # walk over every live transaction
            candidates = list(self._by_address.get(address, ()))
            candidates.extend(self._by_address.get(None, ()))
        failed = []
        for table in (self._clients, self._cancels):
            for ct in candidates:
                if table.get(ct.key) is ct and ct.state in (CALLING, TRYING, PROCEEDING) \
                        and _same_dest(ct.dest, dest):
                    failed.append(ct)
        for ct in failed:
            ct._transport_error()

    def stop(self) -> None:
        """Terminate every transaction (shutdown): timers cancelled, no timeout callbacks."""
        for st in list(self._servers.values()):
            st.terminate()
        for table in (self._clients, self._cancels):
            for ct in list(table.values()):
                ct.terminate()

    # -- internals

    def _remove_server(self, st: "ServerTransaction") -> None:
        if self._servers.get(st.key) is st:
            del self._servers[st.key]

    def _remove_client(self, ct: "ClientTransaction") -> None:
        table = self._cancels if ct.method == "CANCEL" else self._clients
        if table.get(ct.key) is ct:
            del table[ct.key]
        bucket = self._by_address.get(ct.address)
        if bucket is not None:
            bucket.pop(ct, None)
            if not bucket:
                del self._by_address[ct.address]


# -- server transactions ---------------------------------------------------------------------


class ServerTransaction:
    """§17.2.1 (INVITE, with RFC 6026 Accepted) and §17.2.2 (non-INVITE) server transactions."""

    __slots__ = (
        "layer",
        "request",
        "method",
        "key",
        "state",
        "response_dest",
        "last_response",
        "tu",
        "is_invite",
        "reliable",
        "_rfc3261",
        "_to_tag",
        "_response_to_tag",
        "_retransmit",
        "_timeout",
        "_interval",
    )

    def __init__(self, layer: TransactionLayer, request, key: str, rfc3261: bool,
                 response_dest, tu):
        self.layer = layer
        self.request = request
        self.method = method = request.method
        self.key = key
        self.is_invite = method == "INVITE"
        self.state = PROCEEDING if self.is_invite else TRYING
        self.response_dest = response_dest
        self.reliable = bool(getattr(response_dest, "reliable", False))
        self.last_response = None
        self.tu = tu
        self._rfc3261 = rfc3261
        self._to_tag = None if rfc3261 else request.to.tag
        self._response_to_tag = None
        self._retransmit = None  # Timer G
        self._timeout = None  # Timer H, I, J or L
        self._interval = 0.0

    def __repr__(self) -> str:
        return "<ServerTransaction %s %s %s>" % (self.method, self.state, self.key)

    # -- the TU's side

    def respond(self, response) -> None:
        """Send a response through this transaction (the state machine decides what it means)."""
        status = response.status
        state = self.state
        if self.is_invite:
            if state == PROCEEDING:
                self.last_response = response
                self._send(response)
                if status < 200:
                    return
                if status < 300:
                    # RFC 6026 §7.1: Accepted; the TU retransmits 2xx, we absorb the INVITE
                    # retransmissions and let ACKs through until Timer L.
                    self.state = ACCEPTED
                    self._response_to_tag = self._tag_of(response)
                    self._linger(response)
                    self._timeout = self.layer.later(self.layer.timers.l,
                                                               self._timer_l)
                    return
                self.state = COMPLETED
                self._response_to_tag = self._tag_of(response)
                self._linger(response)
                clock = self.layer.clock
                if not self.reliable:
                    self._interval = self.layer.timers.g
                    self._retransmit = self.layer.later(self._interval, self._timer_g)
                self._timeout = self.layer.later(self.layer.timers.h, self._timer_h)
                return
            if state == ACCEPTED and 200 <= status < 300:
                self.last_response = response
                self._send(response)
                response.forget_parsed()
                return
        else:
            if state == TRYING or state == PROCEEDING:
                self.last_response = response
                self._send(response)
                if status < 200:
                    self.state = PROCEEDING
                    return
                self.state = COMPLETED
                self._cancel_timers()
                delay = self.layer.timers.j(self.reliable)
                if delay <= 0:
                    self._terminate()
                else:
                    self._linger(response)
                    self._timeout = self.layer.later(delay, self._timer_j)
                return
        self.layer.log("%s: response %d ignored in state %s" % (self, status, state))

    def terminate(self) -> None:
        """End the transaction now (no timeout callback)."""
        if self.state != TERMINATED:
            self._terminate()

    # -- the wire's side

    def _receive(self, request) -> bool:
        state = self.state
        if self.is_invite:
            if request.method == "ACK":
                if state == COMPLETED:
                    self.state = CONFIRMED
                    self._cancel_timers()
                    delay = self.layer.timers.i(self.reliable)
                    if delay <= 0:
                        self._terminate()
                    else:
                        self._timeout = self.layer.later(delay, self._timer_i)
                    return True
                if state == ACCEPTED:
                    return False  # the ACK for a 2xx: end to end, the proxy forwards it
                return True  # Confirmed: absorbed; Proceeding: an ACK for nothing
            # A retransmitted INVITE.
            if state == PROCEEDING or state == COMPLETED:
                if self.last_response is not None:
                    self._send(self.last_response)
            return True  # Accepted / Confirmed: absorbed
        if (state == PROCEEDING or state == COMPLETED) and self.last_response is not None:
            self._send(self.last_response)
        return True  # Trying: absorbed without an answer

    def _legacy_to_tag_matches(self, request) -> bool:
        """RFC 2543 matching (§17.2.3): the To tag of a retransmission equals the request's;
        an ACK's equals the tag of the response we sent."""
        tag = request.to.tag
        if request.method == "ACK" and self.is_invite:
            return tag == self._response_to_tag or (
                self._response_to_tag is None and tag == self._to_tag
            )
        return tag == self._to_tag

    # -- timers

    def _timer_g(self) -> None:
        self._retransmit = None
        if self.state != COMPLETED:
            return
        self._send(self.last_response)
        self._interval = min(2 * self._interval, self.layer.timers.t2)
        self._retransmit = self.layer.later(self._interval, self._timer_g)

    def _timer_h(self) -> None:
        self._timeout = None
        if self.state != COMPLETED:
            return
        self.layer.log("%s: Timer H, no ACK" % (self,))
        try:
            _callback(self.tu, "server_timeout", self)
        finally:
            self._terminate()

    def _timer_i(self) -> None:
        self._timeout = None
        self._terminate()

    _timer_j = _timer_i
    _timer_l = _timer_i

    def _timer_unanswered(self) -> None:
        self._timeout = None
        if self.state == TRYING or self.state == PROCEEDING:
            self.layer.log("%s: no final response from the TU" % (self,))
            self._terminate()

    # -- internals

    def _linger(self, response) -> None:
        """The final response is out; what is left is answering retransmissions (and ACKs)
        until a timer ends the transaction, often tens of seconds later. Keep no more than
        that needs: the request goes, the response is kept unparsed."""
        self.request = None
        response.forget_parsed()

    @staticmethod
    def _tag_of(response):
        try:
            return response.to.tag
        except Exception:
            return None

    def _send(self, response) -> None:
        self.layer._send(response, self.response_dest)

    def _cancel_timers(self) -> None:
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

    def _terminate(self) -> None:
        self.state = TERMINATED
        self._cancel_timers()
        self.layer._remove_server(self)
        if events.listening:
            events.emit("transaction", action="terminated", transaction=self, side="server")
        tu = self.tu
        self.tu = None  # the TU usually points back here: let refcounting free both
        _callback(tu, "server_terminated", self)


# -- client transactions ---------------------------------------------------------------------


class ClientTransaction:
    """§17.1.1 (INVITE, with RFC 6026 Accepted) and §17.1.2 (non-INVITE) client transactions."""

    __slots__ = (
        "layer",
        "request",
        "method",
        "key",
        "dest",
        "state",
        "tu",
        "is_invite",
        "reliable",
        "last_response",
        "ack",
        "_retransmit",
        "_timeout",
        "_interval",
        "address",
    )

    def __init__(self, layer: TransactionLayer, request, branch: str, dest, tu):
        self.layer = layer
        self.request = request
        self.method = method = request.method
        self.key = branch
        self.dest = dest
        self.is_invite = method == "INVITE"
        self.state = CALLING if self.is_invite else TRYING
        self.reliable = bool(getattr(dest, "reliable", False))
        self.tu = tu
        self.last_response = None
        self.ack = None  # the ACK we built for a 3xx-6xx response
        self.address = None  # _address(dest), the layer's index key
        self._retransmit = None  # Timer A / E
        self._timeout = None  # Timer B / F, then D / K / M
        self._interval = 0.0

    def __repr__(self) -> str:
        return "<ClientTransaction %s %s %s>" % (self.method, self.state, self.key)

    @property
    def branch(self) -> str:
        return self.key

    def terminate(self) -> None:
        """End the transaction now (no callback other than ``client_terminated``)."""
        if self.state != TERMINATED:
            self._terminate()

    def cancel_timers(self) -> None:
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

    def _cancelled(self) -> None:
        """§9.1: a CANCEL went out for this INVITE. Without a final response within 64*T1 the
        transaction is given up (Timer B still runs in Calling; Proceeding has no timer)."""
        if self.state == PROCEEDING and self._timeout is None:
            self._timeout = self.layer.later(self.layer.timers.b, self._timer_timeout)

    # -- start

    def _start(self) -> None:
        layer = self.layer
        clock = layer.clock
        timers = layer.timers
        if not self.reliable:
            self._interval = timers.t1  # Timer A / Timer E
            self._retransmit = layer.later(self._interval, self._timer_retransmit)
        self._timeout = layer.later(timers.b if self.is_invite else timers.f, self._timer_timeout)
        if layer._send(self.request, self.dest) is False:
            # Reported from the clock, never from inside new_client().
            clock.callLater(0, self._transport_error)

    # -- responses

    def _receive(self, response) -> None:
        status = response.status
        state = self.state
        tu = self.tu
        if self.is_invite:
            if state == CALLING or state == PROCEEDING:
                self.last_response = response
                if status < 200:
                    if state == CALLING:
                        self.state = PROCEEDING
                        self.cancel_timers()  # no more retransmissions, Timer B is done
                    _callback(tu, "client_response", self, response)
                    return
                self.cancel_timers()
                if status < 300:
                    self.state = ACCEPTED
                    self._timeout = self.layer.later(self.layer.timers.m,
                                                               self._timer_end)
                    _callback(tu, "client_response", self, response)
                    self._linger()
                    return
                self.state = COMPLETED
                self.ack = self._build_ack(response)
                self.layer._send(self.ack, self.dest)
                delay = self.layer.timers.d(self.reliable)
                if delay > 0:
                    self._timeout = self.layer.later(delay, self._timer_end)
                    _callback(tu, "client_response", self, response)
                    self._linger()
                else:
                    try:
                        _callback(tu, "client_response", self, response)
                    finally:
                        self._terminate()
                return
            if state == ACCEPTED:
                if 200 <= status < 300:
                    _callback(tu, "client_response", self, response)
                    response.forget_parsed()
                return
            if state == COMPLETED:
                if status >= 300 and self.ack is not None:
                    self.layer._send(self.ack, self.dest)
            return
        # non-INVITE
        if state == TRYING or state == PROCEEDING:
            self.last_response = response
            if status < 200:
                self.state = PROCEEDING
                _callback(tu, "client_response", self, response)
                return
            self.state = COMPLETED
            self.cancel_timers()
            delay = self.layer.timers.k(self.reliable)
            if delay > 0:
                self._timeout = self.layer.later(delay, self._timer_end)
                _callback(tu, "client_response", self, response)
                self._linger()
            else:
                try:
                    _callback(tu, "client_response", self, response)
                finally:
                    self._terminate()
        # Completed: response retransmissions are absorbed.

    def _linger(self) -> None:
        """The final response has been handed over; until a timer ends the transaction only
        retransmissions are absorbed: the request goes, the response is kept unparsed."""
        self.request = None
        self.last_response.forget_parsed()

    def _build_ack(self, response):
        """§17.1.1.3: the ACK for a 3xx-6xx response to our INVITE."""
        request = self.request
        ack = type(request)("ACK", request.uri)
        ack.add("Via", request.get_all("Via")[0])
        for route in request.get_all("Route"):
            ack.add("Route", route)
        ack.add("Max-Forwards", "70")
        ack.add("From", request.get("From"))
        ack.add("To", response.get("To"))
        ack.add("Call-ID", request.get("Call-ID"))
        ack.add("CSeq", "%d ACK" % request.cseq.number)
        return ack

    # -- timers

    def _timer_retransmit(self) -> None:
        """Timer A (INVITE, Calling: doubling) or Timer E (non-INVITE: doubling up to T2 while
        Trying, T2 while Proceeding)."""
        self._retransmit = None
        state = self.state
        if state == CALLING:
            self._interval = 2 * self._interval
        elif state == TRYING:
            self._interval = min(2 * self._interval, self.layer.timers.t2)
        elif state == PROCEEDING and not self.is_invite:
            self._interval = self.layer.timers.t2
        else:
            return
        if self.layer._send(self.request, self.dest) is False:
            self._transport_error()
            return
        self._retransmit = self.layer.later(self._interval, self._timer_retransmit)

    def _timer_timeout(self) -> None:
        """Timer B (INVITE, Calling) or Timer F (non-INVITE, Trying or Proceeding)."""
        self._timeout = None
        if self.state not in (CALLING, TRYING, PROCEEDING):
            return
        self.layer.log("%s: timed out" % (self,))
        try:
            _callback(self.tu, "client_timeout", self)
        finally:
            self._terminate()

    def _timer_end(self) -> None:
        """Timer D, K or M: the wait for retransmitted responses is over."""
        self._timeout = None
        self._terminate()

    def _transport_error(self) -> None:
        if self.state not in (CALLING, TRYING, PROCEEDING):
            return
        self.layer.log("%s: transport error" % (self,))
        try:
            _callback(self.tu, "client_error", self)
        finally:
            self._terminate()

    def _terminate(self) -> None:
        self.state = TERMINATED
        self.cancel_timers()
        self.layer._remove_client(self)
        if events.listening:
            events.emit("transaction", action="terminated", transaction=self, side="client")
        tu = self.tu
        self.tu = None  # the TU usually points back here: let refcounting free both
        _callback(tu, "client_terminated", self)
