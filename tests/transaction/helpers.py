"""What the transaction tests share: a recording wire and TU, destinations, messages, and
a clock driver."""
from __future__ import annotations

from twisted.internet.task import Clock

from reticulum.sip import make_response, parse
from reticulum.transaction import Timers, TransactionLayer

T1, T2, T4 = 0.5, 4.0, 5.0
T64 = 64 * T1


class Dest:
    """Shaped like reticulum.addresses.Target: an address to send to, no connection."""

    def __init__(self, reliable=False, transport=None, host="192.0.2.9", port=5060):
        self.reliable = reliable
        self.transport = transport or ("tcp" if reliable else "udp")
        self.host = host
        self.port = port

    def __repr__(self):
        return "Dest(%s %s:%s)" % (self.transport, self.host, self.port)


UDP = Dest(False)
TCP = Dest(True)


class Wire:
    """A recording `send`: (time, message, dest) for every message put on the wire."""

    def __init__(self, clock, result=None):
        self.clock = clock
        self.sent = []
        self.result = result

    def __call__(self, message, dest):
        self.sent.append((self.clock.seconds(), message, dest))
        return self.result

    def times(self):
        return [t for t, _, _ in self.sent]

    def messages(self):
        return [m for _, m, _ in self.sent]

    def clear(self):
        del self.sent[:]


class TU:
    """A transaction user recording every callback."""

    def __init__(self):
        self.events = []

    def server_timeout(self, st):
        self.events.append(("server_timeout", st))

    def server_terminated(self, st):
        self.events.append(("server_terminated", st))

    def client_response(self, ct, response):
        self.events.append(("client_response", ct, response.status))

    def client_timeout(self, ct):
        self.events.append(("client_timeout", ct))

    def client_error(self, ct):
        self.events.append(("client_error", ct))

    def client_terminated(self, ct):
        self.events.append(("client_terminated", ct))

    def names(self):
        return [e[0] for e in self.events]

    def statuses(self):
        return [e[2] for e in self.events if e[0] == "client_response"]


class MinimalTU:
    """Only the mandatory client callbacks: the optional ones must not be required."""

    def __init__(self):
        self.responses = []
        self.timeouts = 0
        self.errors = 0

    def client_response(self, ct, response):
        self.responses.append(response.status)

    def client_timeout(self, ct):
        self.timeouts += 1

    def client_error(self, ct):
        self.errors += 1


def request(method="INVITE", branch="z9hG4bKbranch1", via_host="192.0.2.1", via_port=5060,
            uri="sip:bob@example.com", call_id="call-1@192.0.2.1", cseq=1, from_tag="ft1",
            to_tag=None, routes=(), extra_vias=(), cseq_method=None):
    via = "SIP/2.0/UDP %s%s" % (via_host, ":%d" % via_port if via_port else "")
    if branch is not None:
        via += ";branch=" + branch
    lines = ["%s %s SIP/2.0" % (method, uri), "Via: " + via]
    for extra in extra_vias:
        lines.append("Via: " + extra)
    for route in routes:
        lines.append("Route: " + route)
    lines += [
        "Max-Forwards: 70",
        "From: \"Alice\" <sip:alice@example.com>" + (";tag=" + from_tag if from_tag else ""),
        "To: <sip:bob@example.com>" + (";tag=" + to_tag if to_tag else ""),
        "Call-ID: " + call_id,
        "CSeq: %d %s" % (cseq, cseq_method or method),
        "Content-Length: 0",
        "",
        "",
    ]
    return parse("\r\n".join(lines).encode())


def ack_for(invite, response=None, branch=None, to_tag=None):
    """The ACK a UAC sends for a non-2xx final response (same branch unless told)."""
    via = invite.via
    tag = to_tag if to_tag is not None else (response.to.tag if response is not None else None)
    return request(
        "ACK",
        branch=via.branch if branch is None else branch,
        via_host=via.host,
        via_port=via.port,
        uri=str(invite.uri),
        call_id=invite.call_id,
        cseq=invite.cseq.number,
        from_tag=invite.from_.tag,
        to_tag=tag,
    )


def respond(req, status, to_tag="tt1"):
    return make_response(req, status, to_tag=None if status == 100 else to_tag)


def make_layer(result=None):
    clock = Clock()
    wire = Wire(clock, result)
    layer = TransactionLayer(clock, Timers(T1, T2, T4), wire)
    return clock, wire, layer


def advance(clock, until):
    """Run the clock up to `until` (absolute), stopping exactly at every scheduled call so
    that timers rescheduled from a callback keep exact times."""
    while True:
        pending = [call.getTime() for call in clock.getDelayedCalls() if call.active()]
        due = min(pending) if pending else None
        if due is None or due > until:
            break
        clock.advance(max(0.0, due - clock.seconds()))
    if until > clock.seconds():
        clock.advance(until - clock.seconds())
