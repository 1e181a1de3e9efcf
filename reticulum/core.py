"""The core: where framed bytes from every transport become SIP messages and decisions.

`Core` parses, validates, logs and stamps `received`/`rport` (RFC 3581), then hands requests
and responses to the proxy. It starts and stops the stores and runs the clock-driven chores
(binding sweeps). It never touches a socket: everything leaves through the `Outbox`, which
hands it to the flow table (`send`/`send_to`; see docs/architecture.md), and every timer goes
through the injected clock. `reticulum.service.build_core` assembles it.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from twisted.logger import Logger

from reticulum import events
from reticulum.addresses import RELIABLE, Destination, Flow, LocalAddresses, Target, hostport, \
    is_ip, response_destination, via_destination
from reticulum.sip import ParseError, Request, Response, make_response, parse

SWEEP_INTERVAL = 30.0
#: the largest UDP payload over IPv4 (65,535 less the IP and UDP headers); IPv6 allows 20 more
MAX_UDP_PAYLOAD = 65507
MAX_UDP6_PAYLOAD = 65527


class Outbox:
    """Every message leaves here: serialized, held to UDP's size limit, handed to the flow
    table (`send` for a flow, `send_to` for a Target) and logged. The transaction layer, the
    proxy and the core are each given `send`."""

    # the message log reads as the core's, as it always has
    log = Logger(namespace="reticulum.core.Core")

    def __init__(self, transports: Any, log_messages: bool = True, log_full: bool = False):
        self.transports = transports
        self.log_messages = log_messages
        self.log_full = log_full  # whole messages, for sngrep-like reading
        self._udp_flows: Dict[Tuple[str, int], Flow] = {}  # (host, port) -> send_to's flow

    def send(self, message: Any, dest: Destination) -> bool:
        """Serialize and send to a flow or a Target; False when it could not leave."""
        data = message.to_bytes()
        if len(data) > MAX_UDP_PAYLOAD and dest.transport == "udp":
            limit = MAX_UDP6_PAYLOAD if ":" in dest.host else MAX_UDP_PAYLOAD
            if len(data) > limit:
                return self._too_large_for_udp(message, len(data), dest)
        if isinstance(dest, Target):
            flow = self._send_to(data, dest)
        else:
            flow = self._send_on(data, message, dest)
        if flow is None:
            return False
        self._log_out(message, flow)
        return True

    def _send_to(self, data: bytes, dest: Target) -> Optional[Flow]:
        """To an address: the flow it left on, or None."""
        if dest.host in ("255.255.255.255",) or not is_ip(dest.host):
            self.log.warn("Refusing to send to {host}", host=dest.host)
            return None
        transports = self.transports
        if dest.transport == "udp":
            # A UDP flow is always usable: once the flow table has chosen the socket for an
            # address, send on that flow directly (send_to picks a socket each time).
            key = (dest.host, dest.port)
            flow = self._udp_flows.get(key)
            if flow is not None and transports.send(data, flow):
                return flow
            flow = transports.send_to(data, "udp", dest.host, dest.port)
            if flow is not None and len(self._udp_flows) < 4096:
                self._udp_flows[key] = flow
            elif flow is None:
                self._udp_flows.pop(key, None)
            return flow
        if dest.name is not None and dest.transport == "tls":
            # RFC 5922: the peer's certificate must name the SIP domain we looked up
            return transports.send_to(data, "tls", dest.host, dest.port, server_name=dest.name)
        return transports.send_to(data, dest.transport, dest.host, dest.port)

    def _send_on(self, data: bytes, message: Any, flow: Flow) -> Optional[Flow]:
        """On a flow: that flow, or for a response whose connection is gone a new one to the
        Via's address (§18.2.2); None when it could not leave."""
        if self.transports.send(data, flow):
            return flow
        if flow.reliable and not isinstance(message, Request):
            target = via_destination(message.via)
            if target.transport in RELIABLE and is_ip(target.host):
                return self.transports.send_to(data, target.transport, target.host,
                                               target.port)
        return None

    def _too_large_for_udp(self, message, size: int, dest) -> bool:
        """What cannot fit in one datagram is never dropped in silence (RFC 3261 §18.1.1).

        A request fails at once (its branch ends with 503, the caller gets 500); a response is replaced
        by a 513 with the same Via, From, To, Call-ID and CSeq, so the client hears something.
        Nothing switches to TCP on its own: the Via names UDP, and a phone that reached us over
        UDP (behind NAT, say) may take no connection; large messages need a TCP registration."""
        peer = hostport(dest.host, dest.port)
        self.log.warn("{what} {call_id} to udp {peer} is {size} bytes, too large for UDP",
                      what=_describe(message), call_id=message.get("Call-ID"), peer=peer,
                      size=size)
        if isinstance(message, Request) or message.status == 513:
            return False
        reply = Response(513, "Message Too Large")
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in message.get_all(name):
                reply.add(name, value)
        return self.send(reply, dest)

    def _log_out(self, message: Any, flow: Flow) -> None:
        if events.listening:
            events.emit("message", direction="out", message=message, flow=flow)
        if self.log_messages:
            self.log.info("-> {what} {call_id} to {transport} {peer}{full}",
                          what=_describe(message), call_id=message.get("Call-ID"),
                          transport=flow.transport, peer=hostport(*flow.remote),
                          full=_full_text(message) if self.log_full else "")


class Core:
    """Receives every framed message and hands it to the proxy; sends what cannot go through
    the proxy (answers to malformed input) through the outbox. Assembled by
    `reticulum.service.build_core`, which gives it every collaborator."""

    log = Logger()

    def __init__(self, config: Any, clock: Any, outbox: Outbox, transactions: Any, proxy: Any,
                 location: Any, accounts: Any, dialogs: Any, resolver: Any,
                 addresses: LocalAddresses):
        self.config = config
        self.clock = clock
        self.outbox = outbox
        self.transactions = transactions
        self.proxy = proxy
        self.location = location
        self.accounts = accounts
        self.dialogs = dialogs
        self.resolver = resolver
        self.addresses = addresses
        self._sweeper: Any = None

    def send_message(self, message: Any, dest: Destination) -> bool:
        """Send through the outbox (the answers the core gives itself)."""
        return self.outbox.send(message, dest)

    # -- stores --------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the stores (start-up, before anything listens) and seed `[users]`."""
        os.makedirs(self.config.state_dir, exist_ok=True)
        self.location.start()
        self.accounts.start()
        for name, password in (self.config.users or {}).items():
            self.accounts.set_password(name, password)
        self._sweeper = self.clock.callLater(SWEEP_INTERVAL, self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        self._sweeper = None
        self.location.stop()
        self.accounts.stop()

    def _sweep(self) -> None:
        removed = self.location.sweep(self.clock.seconds())
        if removed:
            self.log.info("Removed {count} expired bindings", count=removed)
        self._sweeper = self.clock.callLater(SWEEP_INTERVAL, self._sweep)

    # -- receiving -----------------------------------------------------------------------------

    def message_received(self, data: bytes, flow) -> None:
        """One framed message from a transport: parse, validate, stamp, dispatch."""
        try:
            # a WebSocket frame holds one whole message, like a datagram (RFC 7118 §5)
            message = parse(data, stream=flow.transport in ("tcp", "tls"))
            message.validate()
        except ParseError as error:
            self._malformed(data, flow, error)
            return
        except Exception:  # a parser bug must never take a connection's neighbours down
            self.log.failure("Parser failure on message from {peer}", peer=flow.remote)
            return
        if isinstance(message, Request):
            self._stamp_via(message, flow)
            self._log_in(message, flow)
            try:
                self.proxy.handle_request(message, flow)
            except Exception:
                self.log.failure("Failed to handle {method} from {peer}",
                                 method=message.method, peer=flow.remote)
                self._answer_internal_error(message, flow)
        else:
            self._log_in(message, flow)
            try:
                self.proxy.handle_response(message, flow)
            except Exception:
                self.log.failure("Failed to handle response {status} from {peer}",
                                 status=message.status, peer=flow.remote)

    def message_too_large(self, head: bytes, flow) -> None:
        self.log.warn("Message too large from {transport} {peer}", transport=flow.transport,
                      peer=flow.remote)
        self._malformed(head, flow, ParseError("Message Too Large", status=413))

    def flow_closed(self, flow) -> None:
        """A connection ended: requests waiting on it fail now (§18.4), its bindings go."""
        self.transactions.transport_error(flow)
        self.proxy.flow_closed(flow)

    def flow_failed(self, flow) -> None:
        self.transactions.transport_error(flow)
        self.transactions.transport_error(Target(flow.transport, flow.remote[0], flow.remote[1]))
        self.proxy.flow_closed(flow)

    def _malformed(self, data: bytes, flow, error: ParseError) -> None:
        partial = getattr(error, "partial", None)
        if partial is None:
            try:
                partial = parse(data, stream=True)
            except ParseError as again:
                partial = again.partial
            except Exception:
                partial = None
        self.log.warn("Malformed message from {transport} {peer}: {reason}",
                      transport=flow.transport, peer=flow.remote, reason=error.reason)
        if not isinstance(partial, Request) or partial.method == "ACK":
            return  # a response (or an ACK) that cannot be parsed is dropped
        try:
            response = make_response(partial, getattr(error, "status", 400) or 400, error.reason)
        except Exception:
            self.log.info("Could not answer a malformed request from {peer}", peer=flow.remote)
            return
        try:
            self._stamp_via(partial, flow)
            dest = response_destination(partial, flow)
        except Exception:
            dest = flow  # a Via we cannot read: answer where it came from
        self.send_message(response, dest)

    def _answer_internal_error(self, request, flow) -> None:
        if request.method == "ACK":
            return
        try:
            self.send_message(make_response(request, 500), response_destination(request, flow))
        except Exception:
            pass

    @staticmethod
    def _stamp_via(request, flow) -> None:
        """RFC 3261 §18.2.1 `received` and RFC 3581 `rport` on the top Via. With `rport`,
        `received` is added even when it equals the sent-by host (RFC 3581 §4: MUST)."""
        via = request.via
        host, port = flow.remote
        changed = False
        if "rport" in via.params:
            via.params["received"] = host
            via.params["rport"] = str(port)
            changed = True
        elif via.host != host:
            via.params["received"] = host
            changed = True
        if changed:
            request.remove_first("Via")
            request.add("Via", str(via), first=True)

    # -- logging -------------------------------------------------------------------------------

    def _log_in(self, message, flow) -> None:
        if events.listening:
            events.emit("message", direction="in", message=message, flow=flow)
        outbox = self.outbox  # one setting for the message log, in and out
        if outbox.log_messages:
            self.log.info("<- {what} {call_id} from {transport} {peer}{full}",
                          what=_describe(message), call_id=message.get("Call-ID"),
                          transport=flow.transport, peer=hostport(*flow.remote),
                          full=_full_text(message) if outbox.log_full else "")


def _describe(message) -> str:
    if isinstance(message, Request):
        return message.method
    cseq = (message.get("CSeq") or "").split()
    return "%d %s/%s" % (message.status, message.reason, cseq[-1] if cseq else "?")


def _full_text(message) -> str:
    """The whole message, indented under its summary line (`[log] messages = "full"`)."""
    text = message.to_bytes().decode("utf-8", "replace").rstrip("\r\n")
    return "\n    " + text.replace("\r\n", "\n    ")

