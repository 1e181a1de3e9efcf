"""The transaction layer: the tables of live transactions, and matching of incoming messages.

Sans-IO: messages leave through the injected ``send(message, dest)`` callable and every timer
goes through the injected clock (``seconds()``, ``callLater(delay, f, *args)`` returning an
object with ``cancel()`` and ``active()``). ``dest`` is a `reticulum.addresses.Destination`;
here only ``dest.reliable`` matters (retransmission timers run only on unreliable transports,
and the "wait for retransmissions" timers D, I, J, K are zero on reliable ones) and its
address, for transport errors.

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
ever hold live transactions. An event a transaction's state does not allow (a TU answering
twice, say) is logged here once and dropped.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from reticulum import events
from reticulum.addresses import Destination
from reticulum.sip import Request, Response
from reticulum.transaction.client import ClientTransaction
from reticulum.transaction.keys import (
    Address, address_of, same_destination, server_key,
)
from reticulum.transaction.machine import (
    ACK, CANCELLED, R1XX, R2XX, R3XX, REQUEST, TRANSPORT_ERROR, TransactionStateError,
)
from reticulum.transaction.server import ServerTransaction
from reticulum.transaction.timers import TimerQueues, Timers

__all__ = ["TransactionLayer"]


class TransactionLayer:
    """Tables of live server and client transactions; matching of incoming messages."""

    def __init__(
        self,
        clock: Any,
        timers: Optional[Timers] = None,
        send: Optional[Callable[[Any, Any], Any]] = None,
        log: Optional[Callable[[str], None]] = None,
    ):
        self.clock = clock
        self.timers = timers if timers is not None else Timers()
        #: put a message on the wire; False when it could not be sent
        self.send: Callable[[Any, Any], Any] = send if send is not None else _drop
        self._log = log
        #: start a timer: ``later(delay, func)`` returns a timer with ``cancel()``
        self.later = TimerQueues(clock).later
        self._servers: Dict[str, ServerTransaction] = {}
        self._clients: Dict[str, ClientTransaction] = {}  # branch -> INVITE / non-INVITE
        self._cancels: Dict[str, ClientTransaction] = {}  # branch -> CANCEL
        # (transport, host, port) of the destination -> its live client transactions
        self._by_address: Dict[Address, Dict[ClientTransaction, None]] = {}

    # -- accounting

    def __len__(self) -> int:
        return len(self._servers) + len(self._clients) + len(self._cancels)

    @property
    def server_count(self) -> int:
        return len(self._servers)

    @property
    def client_count(self) -> int:
        return len(self._clients) + len(self._cancels)

    @property
    def destination_count(self) -> int:
        """How many destinations live client transactions send to."""
        return len(self._by_address)

    def servers(self) -> List[ServerTransaction]:
        return list(self._servers.values())

    def clients(self) -> List[ClientTransaction]:
        return list(self._clients.values()) + list(self._cancels.values())

    def log(self, text: str) -> None:
        if self._log is not None:
            self._log(text)

    def refused(self, error: TransactionStateError) -> None:
        """An event a transaction's table does not allow: logged, and nothing else happens."""
        self.log(str(error))

    # -- server side

    def handle_request(self, request: Request) -> bool:
        """Give an incoming request to the server transaction it belongs to.

        True: absorbed (a retransmission; the last response was re-sent if there is one, or an
        ACK for a 3xx-6xx response). False: no transaction took it; the caller creates a new
        server transaction, or, for an ACK, forwards it (this includes an ACK for a 2xx
        matching an INVITE transaction in the Accepted state, RFC 6026 §7.1).
        """
        method = request.method
        key, rfc3261 = server_key(request, "INVITE" if method == "ACK" else method)
        st = self._servers.get(key)
        if st is None:
            return False
        if not rfc3261 and not st.legacy_match(request):
            return False
        try:  # step(), written out: this is every request's path
            return st.fire(ACK if method == "ACK" else REQUEST, request)
        except TransactionStateError as error:
            self.refused(error)
            return True

    def new_server(self, request: Request, response_dest: Destination,
                   tu: Any) -> ServerTransaction:
        """A server transaction for a request `handle_request` did not absorb (never an ACK)."""
        method = request.method
        if method == "ACK":
            raise ValueError("ACK never creates a server transaction")
        key, rfc3261 = server_key(request, method)
        st = ServerTransaction(self, request, key, rfc3261, response_dest, tu)
        old = self._servers.get(key)
        if old is not None:
            self.log("Server transaction %s replaced while %s" % (key, old.state))
        self._servers[key] = st
        if events.listening:
            events.emit("transaction", action="created", transaction=st, side="server")
        return st

    def find_invite_server(self, cancel_request: Request) -> Optional[ServerTransaction]:
        """§9.2: the INVITE server transaction a CANCEL refers to, or None."""
        key, rfc3261 = server_key(cancel_request, "INVITE")
        st = self._servers.get(key)
        if st is None:
            return None
        if not rfc3261 and st.to_tag != cancel_request.to.tag:
            return None
        return st

    # -- client side

    def new_client(self, request: Request, dest: Destination, tu: Any,
                   branch: Optional[str] = None) -> ClientTransaction:
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
        address = ct.address
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
                invite.step(CANCELLED)
        ct.start()
        return ct

    def handle_response(self, response: Response) -> bool:
        """§17.1.3: give a response to its client transaction. False when none matches."""
        via = response.via
        branch = via.branch if via is not None else None
        if not branch:
            return False
        method = response.cseq.method
        ct = (self._cancels if method == "CANCEL" else self._clients).get(branch)
        if ct is None or ct.method != method:
            return False
        status = response.status
        try:  # step(), written out: this is every response's path
            ct.fire(R1XX if status < 200 else R2XX if status < 300 else R3XX, response)
        except TransactionStateError as error:
            self.refused(error)
        return True

    def transport_error(self, dest: Destination) -> None:
        """Every client transaction still waiting for a final response from `dest` fails
        (the others' tables let the error pass)."""
        # only transactions to that address can match (an error on a flow also concerns
        # targets of its address); the lookup keeps a failing destination from costing a
        # walk over every live transaction
        candidates = list(self._by_address.get(address_of(dest), ()))
        failed = []
        for table in (self._clients, self._cancels):
            for ct in candidates:
                if table.get(ct.key) is ct and same_destination(ct.dest, dest):
                    failed.append(ct)
        for ct in failed:
            ct.step(TRANSPORT_ERROR)

    def stop(self) -> None:
        """Terminate every transaction (shutdown): timers cancelled, no timeout callbacks."""
        for st in list(self._servers.values()):
            st.terminate()
        for table in (self._clients, self._cancels):
            for ct in list(table.values()):
                ct.terminate()

    # -- the transactions' side

    def forget_server(self, st: ServerTransaction) -> None:
        """A server transaction has terminated."""
        if self._servers.get(st.key) is st:
            del self._servers[st.key]

    def forget_client(self, ct: ClientTransaction) -> None:
        """A client transaction has terminated."""
        table = self._cancels if ct.method == "CANCEL" else self._clients
        if table.get(ct.key) is ct:
            del table[ct.key]
        bucket = self._by_address.get(ct.address)
        if bucket is not None:
            bucket.pop(ct, None)
            if not bucket:
                del self._by_address[ct.address]


def _drop(message: Any, dest: Any) -> None:
    """The default `send`: nowhere."""
