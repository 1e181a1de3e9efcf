"""Transaction layer tests: every timer (A..M) and state transition, driven by a Clock."""
from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from reticulum.sip import make_response, parse
from reticulum.transaction import (
    ClientTransaction,
    ServerTransaction,
    Timers,
    TransactionLayer,
)

T1, T2, T4 = 0.5, 4.0, 5.0
T64 = 64 * T1


class Dest:
    def __init__(self, reliable=False, transport=None, host="192.0.2.9", port=5060, conn=None):
        self.reliable = reliable
        self.transport = transport or ("tcp" if reliable else "udp")
        self.host = host
        self.port = port
        if conn is not None:
            self.conn = conn

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


# -- Timers ----------------------------------------------------------------------------------


def test_timer_values_are_derived_from_t1_t2_t4():
    timers = Timers()
    assert (timers.t1, timers.t2, timers.t4) == (0.5, 4.0, 5.0)
    assert timers.a == timers.e == timers.g == 0.5
    assert timers.b == timers.f == timers.h == timers.l == timers.m == 32.0
    assert timers.d() == 32.0 and timers.d(True) == 0
    assert timers.i() == 5.0 and timers.i(True) == 0
    assert timers.j() == 32.0 and timers.j(True) == 0
    assert timers.k() == 5.0 and timers.k(True) == 0
    custom = Timers(t1=0.1, t2=2.0, t4=3.0)
    assert custom.b == pytest.approx(6.4)
    assert custom.j() == pytest.approx(6.4)
    assert custom.k() == 3.0
    assert timers.unanswered == 64.0
    assert custom == Timers(0.1, 2.0, 3.0)


@pytest.mark.parametrize("values", [(0, 4, 5), (0.5, -1, 5), (0.5, 4, 0), (5, 4, 5)])
def test_timer_values_are_validated(values):
    with pytest.raises(ValueError):
        Timers(*values)


# -- INVITE server transaction ---------------------------------------------------------------


def test_invite_server_starts_proceeding_and_resends_the_last_provisional():
    clock, wire, layer = make_layer()
    invite = request()
    assert layer.handle_request(invite) is False
    tu = TU()
    st = layer.new_server(invite, UDP, tu)
    assert isinstance(st, ServerTransaction)
    assert st.state == "proceeding" and st.method == "INVITE" and st.request is invite
    assert st.response_dest is UDP and st.last_response is None
    assert len(layer) == 1 and layer.server_count == 1 and layer.client_count == 0
    # A retransmission before any response: absorbed, nothing to re-send.
    assert layer.handle_request(request()) is True
    assert wire.sent == []
    trying = respond(invite, 100)
    st.respond(trying)
    assert wire.messages() == [trying] and wire.sent[0][2] is UDP
    ringing = respond(invite, 180)
    st.respond(ringing)
    assert st.state == "proceeding" and st.last_response is ringing
    wire.clear()
    assert layer.handle_request(request()) is True
    assert wire.messages() == [ringing]
    # Nothing runs by itself in Proceeding (no retransmissions of provisionals).
    clock.advance(100)
    assert len(wire.sent) == 1 and st.state == "proceeding"


def test_invite_server_2xx_accepted_absorbs_invites_passes_acks_and_timer_l():
    clock, wire, layer = make_layer()
    invite = request()
    tu = TU()
    st = layer.new_server(invite, UDP, tu)
    ok = respond(invite, 200)
    st.respond(ok)
    assert st.state == "accepted" and wire.messages() == [ok]
    wire.clear()
    # RFC 6026: retransmitted INVITEs are absorbed without an answer...
    assert layer.handle_request(request()) is True
    assert wire.sent == []
    # ...the ACK for the 2xx is not absorbed (the proxy forwards it)...
    assert layer.handle_request(ack_for(invite, ok)) is False
    # ...and 2xx retransmissions (or other forks' 2xx) from the TU go out.
    other = respond(invite, 200, to_tag="tt2")
    st.respond(other)
    assert wire.messages() == [other]
    # A late non-2xx final is not sent.
    st.respond(respond(invite, 486))
    assert wire.messages() == [other]
    assert st.state == "accepted"
    advance(clock, T64 - 0.1)
    assert st.state == "accepted" and len(layer) == 1
    advance(clock, T64)
    assert st.state == "terminated" and len(layer) == 0
    assert tu.names() == ["server_terminated"]
    # Once gone, the ACK and retransmissions no longer match.
    assert layer.handle_request(request()) is False


def test_invite_server_non_2xx_timer_g_retransmits_and_timer_h_times_out():
    clock, wire, layer = make_layer()
    invite = request()
    tu = TU()
    st = layer.new_server(invite, UDP, tu)
    busy = respond(invite, 486)
    st.respond(busy)
    assert st.state == "completed"
    advance(clock, T64 + 1)
    assert all(m is busy for m in wire.messages())
    # Timer G: T1, then doubling up to T2, until Timer H (64*T1).
    expected, t, interval = [0.0], 0.0, T1
    while t + interval < T64:
        t += interval
        expected.append(t)
        interval = min(2 * interval, T2)
    assert wire.times() == pytest.approx(expected)
    assert wire.times()[:5] == pytest.approx([0, 0.5, 1.5, 3.5, 7.5])
    assert wire.times()[5] - wire.times()[4] == pytest.approx(T2)
    assert tu.names() == ["server_timeout", "server_terminated"]
    assert st.state == "terminated" and len(layer) == 0


def test_invite_server_completed_resends_final_on_retransmission_and_ack_confirms():
    clock, wire, layer = make_layer()
    invite = request()
    tu = TU()
    st = layer.new_server(invite, UDP, tu)
    st.respond(respond(invite, 100))
    busy = respond(invite, 486)
    st.respond(busy)
    wire.clear()
    assert layer.handle_request(request()) is True
    assert wire.messages() == [busy]
    # A late response from the TU is ignored.
    st.respond(respond(invite, 200))
    assert wire.messages() == [busy]
    wire.clear()
    assert layer.handle_request(ack_for(invite, busy)) is True
    assert st.state == "confirmed"
    # Timer G and Timer H are stopped.
    clock.advance(T4 - 0.01)
    assert wire.sent == [] and st.state == "confirmed"
    # In Confirmed, ACKs and INVITE retransmissions are absorbed silently.
    assert layer.handle_request(ack_for(invite, busy)) is True
    assert layer.handle_request(request()) is True
    assert wire.sent == []
    # Timer I (T4) ends it.
    clock.advance(0.02)
    assert st.state == "terminated" and len(layer) == 0
    clock.advance(T64)
    assert tu.names() == ["server_terminated"]


def test_invite_server_reliable_no_timer_g_and_ack_terminates_at_once():
    clock, wire, layer = make_layer()
    invite = request()
    tu = TU()
    st = layer.new_server(invite, TCP, tu)
    busy = respond(invite, 603)
    st.respond(busy)
    clock.advance(10)
    assert wire.messages() == [busy]
    assert layer.handle_request(ack_for(invite, busy)) is True
    assert st.state == "terminated" and len(layer) == 0
    assert tu.names() == ["server_terminated"]


def test_invite_server_reliable_timer_h_still_runs():
    clock, wire, layer = make_layer()
    invite = request()
    tu = TU()
    st = layer.new_server(invite, TCP, tu)
    st.respond(respond(invite, 404))
    clock.advance(T64 - 0.01)
    assert st.state == "completed"
    clock.advance(0.02)
    assert st.state == "terminated"
    assert tu.names() == ["server_timeout", "server_terminated"]
    assert len(wire.sent) == 1


def test_invite_server_ack_in_proceeding_is_absorbed():
    clock, wire, layer = make_layer()
    invite = request()
    st = layer.new_server(invite, UDP, TU())
    assert layer.handle_request(ack_for(invite, to_tag="x")) is True
    assert st.state == "proceeding"


def test_server_matching_needs_branch_sent_by_and_method():
    clock, wire, layer = make_layer()
    invite = request()
    st = layer.new_server(invite, UDP, TU())
    st.respond(respond(invite, 180))
    wire.clear()
    assert layer.handle_request(request(branch="z9hG4bKother")) is False
    assert layer.handle_request(request(via_host="192.0.2.2")) is False
    assert layer.handle_request(request(via_port=5070)) is False
    # The same branch with another method is another transaction.
    assert layer.handle_request(request("OPTIONS", cseq=2)) is False
    # CANCEL never matches the INVITE here...
    cancel = request("CANCEL")
    assert layer.handle_request(cancel) is False
    assert wire.sent == []
    # ...but find_invite_server finds it (§9.2).
    assert layer.find_invite_server(cancel) is st
    assert layer.find_invite_server(request("CANCEL", branch="z9hG4bKnope")) is None
    assert layer.find_invite_server(request("CANCEL", via_host="192.0.2.3")) is None
    # The CANCEL gets its own transaction, and its retransmissions match that one.
    cst = layer.new_server(cancel, UDP, None)
    assert layer.server_count == 2
    ok = respond(cancel, 200)
    cst.respond(ok)
    wire.clear()
    assert layer.handle_request(request("CANCEL")) is True
    assert wire.messages() == [ok]
    assert st.state == "proceeding"
    # Host comparison in sent-by is case-insensitive.
    upper = request(via_host="HOST.Example.COM", branch="z9hG4bKcase")
    st2 = layer.new_server(upper, UDP, TU())
    assert layer.handle_request(request(via_host="host.example.com",
                                        branch="z9hG4bKcase")) is True
    assert st2.state == "proceeding"


def test_unmatched_ack_is_not_absorbed():
    clock, wire, layer = make_layer()
    assert layer.handle_request(request("ACK", to_tag="abc")) is False
    with pytest.raises(ValueError):
        layer.new_server(request("ACK", to_tag="abc"), UDP, TU())


def test_rfc2543_fallback_matching():
    clock, wire, layer = make_layer()
    invite = request(branch="oldstyle1")
    assert layer.handle_request(invite) is False
    st = layer.new_server(invite, UDP, TU())
    assert layer.handle_request(request(branch="oldstyle1")) is True
    # Any differing element makes it another request.
    assert layer.handle_request(request(branch="oldstyle1", cseq=2)) is False
    assert layer.handle_request(request(branch="oldstyle1", from_tag="zz")) is False
    assert layer.handle_request(request(branch="oldstyle1", call_id="other")) is False
    assert layer.handle_request(request(branch="oldstyle1", uri="sip:carol@example.com")) \
        is False
    assert layer.handle_request(request(branch="oldstyle1", via_host="192.0.2.7")) is False
    assert layer.handle_request(request(branch="oldstyle1", to_tag="sometag")) is False
    cancel = request("CANCEL", branch="oldstyle1")
    assert layer.handle_request(cancel) is False
    assert layer.find_invite_server(cancel) is st
    assert layer.find_invite_server(request("CANCEL", branch="oldstyle1", to_tag="q")) is None
    busy = respond(invite, 486, to_tag="resp-tag")
    st.respond(busy)
    # The ACK carries the To tag of our response.
    assert layer.handle_request(ack_for(invite, to_tag="wrong")) is False
    assert st.state == "completed"
    assert layer.handle_request(ack_for(invite, busy)) is True
    assert st.state == "confirmed"


def test_rfc2543_without_any_branch():
    clock, wire, layer = make_layer()
    invite = request(branch=None)
    st = layer.new_server(invite, UDP, TU())
    ok = respond(invite, 200, to_tag="t9")
    st.respond(ok)
    assert layer.handle_request(request(branch=None)) is True
    # The ACK for the 2xx goes to the proxy.
    assert layer.handle_request(ack_for(invite, ok)) is False
    assert st.state == "accepted"


def test_rfc2543_non_invite_and_to_tag():
    clock, wire, layer = make_layer()
    bye = request("BYE", branch="nocookie", to_tag="tt", cseq=5)
    st = layer.new_server(bye, UDP, TU())
    assert layer.handle_request(request("BYE", branch="nocookie", to_tag="tt", cseq=5)) is True
    assert layer.handle_request(request("BYE", branch="nocookie", to_tag="tx", cseq=5)) \
        is False
    assert st.state == "trying"


# -- non-INVITE server transaction -----------------------------------------------------------


def test_non_invite_server_trying_proceeding_completed_timer_j():
    clock, wire, layer = make_layer()
    options = request("OPTIONS")
    tu = TU()
    st = layer.new_server(options, UDP, tu)
    assert st.state == "trying"
    # Trying: a retransmission is absorbed without an answer.
    assert layer.handle_request(request("OPTIONS")) is True
    assert wire.sent == []
    trying = respond(options, 100)
    st.respond(trying)
    assert st.state == "proceeding"
    assert layer.handle_request(request("OPTIONS")) is True
    assert wire.messages() == [trying, trying]
    ok = respond(options, 200)
    st.respond(ok)
    assert st.state == "completed"
    wire.clear()
    assert layer.handle_request(request("OPTIONS")) is True
    assert wire.messages() == [ok]
    # Further responses are ignored.
    st.respond(respond(options, 500))
    assert wire.messages() == [ok]
    advance(clock, T64 - 0.1)
    assert st.state == "completed"
    # No retransmissions of non-INVITE finals by the server.
    assert wire.messages() == [ok]
    advance(clock, T64)
    assert st.state == "terminated" and len(layer) == 0
    assert tu.names() == ["server_terminated"]
    assert layer.handle_request(request("OPTIONS")) is False


def test_non_invite_server_final_from_trying_and_reliable_timer_j_zero():
    clock, wire, layer = make_layer()
    register = request("REGISTER", uri="sip:example.com")
    tu = TU()
    st = layer.new_server(register, TCP, tu)
    st.respond(respond(register, 401))
    assert st.state == "terminated" and len(layer) == 0
    assert tu.names() == ["server_terminated"]
    assert len(wire.sent) == 1


def test_server_transaction_with_no_tu():
    clock, wire, layer = make_layer()
    cancel = request("CANCEL")
    st = layer.new_server(cancel, UDP, None)
    st.respond(respond(cancel, 481))
    clock.advance(T64)
    assert len(layer) == 0


def test_server_terminate_and_layer_stop():
    clock, wire, layer = make_layer()
    st = layer.new_server(request(), UDP, TU())
    layer.new_server(request("OPTIONS", branch="z9hG4bKo"), UDP, TU())
    layer.new_client(request(branch="z9hG4bKc"), UDP, TU())
    st.terminate()
    assert st.state == "terminated" and len(layer) == 2
    layer.stop()
    assert len(layer) == 0
    sent = len(wire.sent)
    clock.advance(100)
    assert len(wire.sent) == sent


# -- INVITE client transaction ---------------------------------------------------------------


def test_invite_client_timer_a_doubles_and_timer_b_times_out():
    clock, wire, layer = make_layer()
    invite = request()
    tu = TU()
    ct = layer.new_client(invite, UDP, tu)
    assert isinstance(ct, ClientTransaction)
    assert ct.state == "calling" and ct.key == "z9hG4bKbranch1" and ct.dest is UDP
    assert ct.request is invite and ct.method == "INVITE"
    assert wire.messages() == [invite]  # sent at once
    advance(clock, T64 + 1)
    # Timer A: T1, 2*T1, 4*T1 ... (no T2 cap for INVITE), until Timer B at 64*T1.
    assert wire.times() == pytest.approx([0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
    assert all(m is invite for m in wire.messages())
    assert tu.names() == ["client_timeout", "client_terminated"]
    assert ct.state == "terminated" and len(layer) == 0
    assert tu.events[0][1] is ct


def test_invite_client_reliable_has_no_retransmissions():
    clock, wire, layer = make_layer()
    tu = TU()
    ct = layer.new_client(request(), TCP, tu)
    clock.advance(T64 - 0.01)
    assert len(wire.sent) == 1 and ct.state == "calling"
    clock.advance(0.02)
    assert tu.names() == ["client_timeout", "client_terminated"]


def test_invite_client_provisional_stops_retransmissions_and_timer_b():
    clock, wire, layer = make_layer()
    invite = request()
    tu = TU()
    ct = layer.new_client(invite, UDP, tu)
    clock.advance(0.6)
    assert len(wire.sent) == 2
    assert layer.handle_response(respond(invite, 100)) is True
    assert ct.state == "proceeding"
    assert layer.handle_response(respond(invite, 180)) is True
    clock.advance(200)
    assert len(wire.sent) == 2
    assert ct.state == "proceeding"
    assert tu.statuses() == [100, 180]
    assert layer.handle_response(respond(invite, 183)) is True
    assert tu.statuses() == [100, 180, 183]


def test_invite_client_2xx_accepted_and_timer_m():
    clock, wire, layer = make_layer()
    invite = request()
    tu = TU()
    ct = layer.new_client(invite, UDP, tu)
    layer.handle_response(respond(invite, 180))
    ok = respond(invite, 200)
    assert layer.handle_response(ok) is True
    assert ct.state == "accepted" and ct.last_response is ok
    # 2xx retransmissions and other forks' 2xx are passed up; nothing else is.
    assert layer.handle_response(respond(invite, 200)) is True
    assert layer.handle_response(respond(invite, 200, to_tag="fork2")) is True
    assert layer.handle_response(respond(invite, 486)) is True
    assert layer.handle_response(respond(invite, 180)) is True
    assert tu.statuses() == [180, 200, 200, 200]
    # No ACK from the transaction for a 2xx.
    assert wire.messages() == [invite]
    advance(clock, T64 - 0.1)
    assert ct.state == "accepted"
    advance(clock, T64)
    assert ct.state == "terminated" and len(layer) == 0
    assert tu.names()[-1] == "client_terminated"
    assert "client_timeout" not in tu.names()
    assert layer.handle_response(respond(invite, 200)) is False


def test_invite_client_2xx_directly_from_calling():
    clock, wire, layer = make_layer()
    invite = request()
    tu = TU()
    ct = layer.new_client(invite, UDP, tu)
    layer.handle_response(respond(invite, 200))
    assert ct.state == "accepted"
    clock.advance(T64 + 1)
    assert wire.messages() == [invite]  # Timer A stopped
    assert tu.names() == ["client_response", "client_terminated"]


def test_invite_client_non_2xx_sends_ack_absorbs_retransmissions_timer_d():
    clock, wire, layer = make_layer()
    invite = request(
        routes=["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"],
        extra_vias=["SIP/2.0/UDP 192.0.2.50;branch=z9hG4bKupstream"],
        cseq=7,
    )
    tu = TU()
    ct = layer.new_client(invite, UDP, tu)
    layer.handle_response(respond(invite, 180))
    busy = respond(invite, 486, to_tag="callee-tag")
    assert layer.handle_response(busy) is True
    assert ct.state == "completed"
    assert tu.statuses() == [180, 486]
    assert len(wire.sent) == 2
    ack = wire.messages()[1]
    assert wire.sent[1][2] is UDP
    assert ack.method == "ACK" and ack is ct.ack
    assert str(ack.uri) == str(invite.uri)
    assert ack.get_all("Via") == invite.get_all("Via")[:1]
    assert ack.via.branch == invite.via.branch
    assert ack.get_all("Route") == invite.get_all("Route")
    assert ack.get("From") == invite.get("From")
    assert ack.to.tag == "callee-tag"
    assert ack.call_id == invite.call_id
    assert ack.cseq.number == 7 and ack.cseq.method == "ACK"
    assert ack.max_forwards == 70
    assert ack.body == b""
    # Retransmissions of the final response: the ACK again, the TU hears nothing.
    assert layer.handle_response(respond(invite, 486, to_tag="callee-tag")) is True
    assert wire.messages()[2] is ack
    assert layer.handle_response(respond(invite, 200)) is True  # ignored in Completed
    assert tu.statuses() == [180, 486]
    # Timer D (32 s on unreliable transports).
    clock.advance(32 - 0.01)
    assert ct.state == "completed"
    clock.advance(0.02)
    assert ct.state == "terminated" and len(layer) == 0
    assert tu.names()[-1] == "client_terminated"
    # The ACK parses back as what it claims to be.
    reparsed = parse(bytes(ack))
    assert reparsed.method == "ACK" and reparsed.cseq.method == "ACK"


def test_invite_client_non_2xx_reliable_timer_d_zero():
    clock, wire, layer = make_layer()
    invite = request()
    tu = MinimalTU()
    ct = layer.new_client(invite, TCP, tu)
    layer.handle_response(respond(invite, 503))
    assert ct.state == "terminated" and len(layer) == 0
    assert tu.responses == [503]
    assert [m.method for m in wire.messages() if hasattr(m, "method")] == ["INVITE", "ACK"]


def test_invite_client_final_from_calling_stops_timer_a_and_b():
    clock, wire, layer = make_layer()
    invite = request()
    tu = TU()
    layer.new_client(invite, UDP, tu)
    layer.handle_response(respond(invite, 404))
    clock.advance(T64 + 1)
    assert len(wire.sent) == 2  # INVITE + ACK, no retransmission
    assert "client_timeout" not in tu.names()


def test_client_needs_a_branch_and_no_ack():
    clock, wire, layer = make_layer()
    with pytest.raises(ValueError):
        layer.new_client(request(branch=None), UDP, TU())
    with pytest.raises(ValueError):
        layer.new_client(request("ACK", to_tag="t"), UDP, TU())
    assert len(layer) == 0 and wire.sent == []


# -- non-INVITE client transaction -----------------------------------------------------------


def test_non_invite_client_timer_e_caps_at_t2_and_timer_f_times_out():
    clock, wire, layer = make_layer()
    options = request("OPTIONS")
    tu = TU()
    ct = layer.new_client(options, UDP, tu)
    assert ct.state == "trying"
    advance(clock, T64 + 1)
    expected, t, interval = [0.0], 0.0, T1
    while t + interval < T64:
        t += interval
        expected.append(t)
        interval = min(2 * interval, T2)
    assert wire.times() == pytest.approx(expected)
    assert wire.times()[:6] == pytest.approx([0, 0.5, 1.5, 3.5, 7.5, 11.5])
    assert tu.names() == ["client_timeout", "client_terminated"]
    assert len(layer) == 0


def test_non_invite_client_proceeding_retransmits_every_t2():
    clock, wire, layer = make_layer()
    options = request("OPTIONS")
    tu = TU()
    ct = layer.new_client(options, UDP, tu)
    clock.advance(0.5)  # first retransmission, next due at 1.5
    layer.handle_response(respond(options, 100))
    assert ct.state == "proceeding"
    advance(clock, 20)
    # After the provisional, Timer E fires at 1.5 and then every T2.
    assert wire.times() == pytest.approx([0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5])
    advance(clock, T64 + 1)
    assert tu.names() == ["client_response", "client_timeout", "client_terminated"]


def test_non_invite_client_completed_absorbs_and_timer_k():
    clock, wire, layer = make_layer()
    bye = request("BYE", to_tag="tt1", cseq=2)
    tu = TU()
    ct = layer.new_client(bye, UDP, tu)
    ok = respond(bye, 200)
    assert layer.handle_response(ok) is True
    assert ct.state == "completed" and ct.last_response is ok
    assert layer.handle_response(respond(bye, 200)) is True
    assert tu.statuses() == [200]
    clock.advance(T4 - 0.01)
    assert ct.state == "completed"
    assert len(wire.sent) == 1  # Timer E stopped
    clock.advance(0.02)
    assert ct.state == "terminated" and len(layer) == 0
    clock.advance(T64)
    assert tu.names() == ["client_response", "client_terminated"]


def test_non_invite_client_reliable_timer_k_zero():
    clock, wire, layer = make_layer()
    register = request("REGISTER", uri="sip:example.com")
    tu = TU()
    ct = layer.new_client(register, TCP, tu)
    clock.advance(10)
    assert len(wire.sent) == 1
    layer.handle_response(respond(register, 200))
    assert ct.state == "terminated" and len(layer) == 0
    assert tu.names() == ["client_response", "client_terminated"]


# -- client matching -------------------------------------------------------------------------


def test_response_matching_by_branch_and_cseq_method():
    clock, wire, layer = make_layer()
    invite = request()
    itu, ctu = TU(), TU()
    ict = layer.new_client(invite, UDP, itu)
    cancel = request("CANCEL")  # same branch as the INVITE (§9.1)
    cct = layer.new_client(cancel, UDP, ctu)
    assert layer.client_count == 2 and len(layer) == 2
    assert ict.key == cct.key == "z9hG4bKbranch1"
    assert layer.handle_response(respond(cancel, 200)) is True
    assert ctu.statuses() == [200] and itu.statuses() == []
    assert layer.handle_response(respond(invite, 487)) is True
    assert itu.statuses() == [487]
    # Unknown branch, or known branch with another method: stray.
    stray = respond(request(branch="z9hG4bKunknown"), 200)
    assert layer.handle_response(stray) is False
    assert layer.handle_response(respond(request("OPTIONS"), 200)) is False
    assert layer.handle_response(respond(request(branch=None), 200)) is False


def test_response_to_request_with_our_via_on_top_of_others():
    clock, wire, layer = make_layer()
    forwarded = request(branch="z9hG4bKours", via_host="203.0.113.1",
                        extra_vias=["SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKtheirs"])
    tu = TU()
    layer.new_client(forwarded, UDP, tu)
    assert layer.handle_response(respond(forwarded, 180)) is True
    assert tu.statuses() == [180]


def test_cancel_gives_up_a_proceeding_invite_after_64_t1():
    clock, wire, layer = make_layer()
    invite = request()
    tu = TU()
    ict = layer.new_client(invite, UDP, tu)
    layer.handle_response(respond(invite, 180))
    clock.advance(100)
    assert ict.state == "proceeding"
    layer.new_client(request("CANCEL"), UDP, MinimalTU())
    advance(clock, 100 + T64 - 0.1)
    assert ict.state == "proceeding"
    advance(clock, 100 + T64 + 0.1)
    assert ict.state == "terminated"
    assert tu.names()[-2:] == ["client_timeout", "client_terminated"]
    assert len(layer) == 0


def test_cancel_then_final_response_keeps_normal_flow():
    clock, wire, layer = make_layer()
    invite = request()
    tu = TU()
    ict = layer.new_client(invite, UDP, tu)
    layer.handle_response(respond(invite, 180))
    layer.new_client(request("CANCEL"), UDP, MinimalTU())
    layer.handle_response(respond(invite, 487))
    assert ict.state == "completed"
    clock.advance(T64 + 1)
    assert "client_timeout" not in tu.names()
    assert len(layer) == 0


# -- transport errors ------------------------------------------------------------------------


def test_transport_error_fails_pending_client_transactions_for_that_dest():
    clock, wire, layer = make_layer()
    a = Dest(True, "tcp", "192.0.2.20", 5060)
    b = Dest(True, "tcp", "192.0.2.21", 5060)
    tu_a, tu_b, tu_done = TU(), TU(), TU()
    ct_a = layer.new_client(request(branch="z9hG4bKa"), a, tu_a)
    ct_b = layer.new_client(request("OPTIONS", branch="z9hG4bKb"), b, tu_b)
    inv = request(branch="z9hG4bKdone")
    ct_done = layer.new_client(inv, a, tu_done)
    layer.handle_response(respond(inv, 200))
    assert ct_done.state == "accepted"
    layer.transport_error(a)
    assert ct_a.state == "terminated"
    assert tu_a.names() == ["client_error", "client_terminated"]
    assert ct_b.state == "trying" and tu_b.events == []
    # A transaction that already has its final response is left alone.
    assert ct_done.state == "accepted" and tu_done.names() == ["client_response"]
    assert len(layer) == 2


class Flow:
    """Shaped like reticulum.addresses.Flow (frozen dataclass with a `remote`)."""

    def __init__(self, transport, remote, conn=0):
        self.transport = transport
        self.local = ("192.0.2.100", 5060)
        self.remote = remote
        self.conn = conn

    @property
    def reliable(self):
        return self.transport != "udp"

    def __eq__(self, other):
        return isinstance(other, Flow) and (self.transport, self.remote, self.conn) == (
            other.transport, other.remote, other.conn)

    def __hash__(self):
        return hash((self.transport, self.remote, self.conn))


def test_transport_error_on_a_flow_matches_a_target_to_the_same_address():
    clock, wire, layer = make_layer()
    target = Dest(True, "tcp", "192.0.2.30", 5060)
    tu = TU()
    ct = layer.new_client(request(), target, tu)
    layer.transport_error(Flow("tcp", ("192.0.2.31", 5060), conn=4))
    assert ct.state == "calling"
    layer.transport_error(Flow("tcp", ("192.0.2.30", 5060), conn=4))
    assert ct.state == "terminated" and tu.names()[0] == "client_error"


def test_transport_error_on_flows_needs_the_same_connection():
    clock, wire, layer = make_layer()
    tu = TU()
    ct = layer.new_client(request(), Flow("tcp", ("192.0.2.30", 5060), conn=4), tu)
    layer.transport_error(Flow("tcp", ("192.0.2.30", 5060), conn=5))
    assert ct.state == "calling"
    layer.transport_error(Flow("tcp", ("192.0.2.30", 5060), conn=4))
    assert ct.state == "terminated"


def test_failed_send_is_a_transport_error_reported_from_the_clock():
    clock, wire, layer = make_layer(result=False)
    tu = TU()
    ct = layer.new_client(request(), UDP, tu)
    assert tu.events == [] and ct.state == "calling"
    clock.advance(0)
    assert tu.names() == ["client_error", "client_terminated"]
    assert len(layer) == 0


def test_failed_retransmission_is_a_transport_error():
    clock, wire, layer = make_layer()
    tu = TU()
    ct = layer.new_client(request("OPTIONS"), UDP, tu)
    wire.result = False
    clock.advance(T1)
    assert ct.state == "terminated"
    assert tu.names() == ["client_error", "client_terminated"]


def test_minimal_tu_without_optional_callbacks():
    clock, wire, layer = make_layer()
    tu = MinimalTU()
    layer.new_client(request("OPTIONS", branch="z9hG4bK1"), UDP, tu)
    layer.new_client(request("OPTIONS", branch="z9hG4bK2"), TCP, tu)
    layer.transport_error(TCP)
    clock.advance(T64)
    assert tu.timeouts == 1 and tu.errors == 1 and len(layer) == 0


def test_log_hook_receives_text():
    clock = Clock()
    lines = []
    layer = TransactionLayer(clock, Timers(), lambda m, d: None, log=lines.append)
    layer.new_client(request("OPTIONS"), UDP, MinimalTU())
    clock.advance(T64)
    assert lines and all(isinstance(line, str) for line in lines)


# -- no growth -------------------------------------------------------------------------------


def test_a_thousand_transactions_of_each_kind_leave_nothing_behind():
    clock, wire, layer = make_layer()
    tu = MinimalTU()
    n = 1000
    for i in range(n):
        dest = UDP if i % 2 else TCP
        # INVITE server: 2xx (Accepted, Timer L).
        inv = request(branch="z9hG4bKs2xx%d" % i, call_id="s2xx%d" % i)
        st = layer.new_server(inv, dest, None)
        st.respond(respond(inv, 100))
        st.respond(respond(inv, 200))
        layer.handle_request(ack_for(inv, to_tag="tt1", branch="z9hG4bKack%d" % i))
        # INVITE server: non-2xx, ACKed (Confirmed, Timer I).
        inv = request(branch="z9hG4bKsnak%d" % i, call_id="snak%d" % i)
        st = layer.new_server(inv, dest, None)
        busy = respond(inv, 486)
        st.respond(busy)
        assert layer.handle_request(ack_for(inv, busy)) is True
        # INVITE server: non-2xx never ACKed (Timer H).
        inv = request(branch="z9hG4bKsh%d" % i, call_id="sh%d" % i)
        layer.new_server(inv, dest, None).respond(respond(inv, 404))
        # non-INVITE server (Timer J).
        opt = request("OPTIONS", branch="z9hG4bKso%d" % i, call_id="so%d" % i)
        layer.new_server(opt, dest, None).respond(respond(opt, 200))
        # RFC 2543 style server.
        old = request("OPTIONS", branch=None, call_id="old%d" % i)
        layer.new_server(old, dest, None).respond(respond(old, 200))
        # INVITE client: 2xx (Timer M), non-2xx (Timer D), timeout (Timer B).
        inv = request(branch="z9hG4bKc2xx%d" % i, call_id="c2xx%d" % i)
        layer.new_client(inv, dest, tu)
        layer.handle_response(respond(inv, 180))
        layer.handle_response(respond(inv, 200))
        inv = request(branch="z9hG4bKcnak%d" % i, call_id="cnak%d" % i)
        layer.new_client(inv, dest, tu)
        layer.handle_response(respond(inv, 603))
        layer.new_client(request(branch="z9hG4bKcb%d" % i, call_id="cb%d" % i), dest, tu)
        # INVITE client: provisional, then CANCEL that is answered but no 487 ever comes.
        inv = request(branch="z9hG4bKcc%d" % i, call_id="cc%d" % i)
        layer.new_client(inv, dest, tu)
        layer.handle_response(respond(inv, 180))
        can = request("CANCEL", branch="z9hG4bKcc%d" % i, call_id="cc%d" % i)
        layer.new_client(can, dest, tu)
        layer.handle_response(respond(can, 200))
        # non-INVITE client: answered (Timer K) and unanswered (Timer F).
        opt = request("OPTIONS", branch="z9hG4bKco%d" % i, call_id="co%d" % i)
        layer.new_client(opt, dest, tu)
        layer.handle_response(respond(opt, 200))
        layer.new_client(request("OPTIONS", branch="z9hG4bKcf%d" % i, call_id="cf%d" % i),
                         dest, tu)
        clock.advance(1)  # a steady load: about 64 seconds' worth is alive at any time
        assert len(layer) < 70 * 12
    assert len(layer) > 0
    for _ in range(100):
        clock.advance(1)
    assert len(layer) == 0
    assert layer.server_count == 0 and layer.client_count == 0
    assert not clock.getDelayedCalls()


def test_non_invite_server_without_a_final_response_is_dropped_after_128_t1():
    clock, wire, layer = make_layer()
    options = request("OPTIONS")
    tu = TU()
    st = layer.new_server(options, UDP, tu)
    st.respond(respond(options, 100))
    clock.advance(2 * T64 - 0.01)
    assert st.state == "proceeding"
    clock.advance(0.02)
    assert st.state == "terminated" and len(layer) == 0
    assert tu.names() == ["server_terminated"]


def test_non_invite_server_final_cancels_the_unanswered_guard():
    clock, wire, layer = make_layer()
    options = request("OPTIONS")
    tu = TU()
    st = layer.new_server(options, UDP, tu)
    clock.advance(T64)
    st.respond(respond(options, 408))
    assert st.state == "completed"
    assert len(clock.getDelayedCalls()) == 1  # Timer J only
    clock.advance(T64)
    assert st.state == "terminated"
    assert tu.names() == ["server_terminated"]


def test_invite_server_in_proceeding_waits_for_its_tu():
    clock, wire, layer = make_layer()
    st = layer.new_server(request(), UDP, TU())
    clock.advance(3600)
    assert st.state == "proceeding" and not clock.getDelayedCalls()


def test_the_destination_index_forgets_ended_transactions():
    clock, wire, layer = make_layer()
    tu = MinimalTU()
    for i in range(50):
        dest = Dest(True, "tcp", "192.0.2.%d" % (i % 5), 5060)
        inv = request(branch="z9hG4bKidx%d" % i, call_id="idx%d" % i)
        layer.new_client(inv, dest, tu)
        if i % 2:
            layer.handle_response(respond(inv, 486))
    layer.transport_error(Dest(True, "tcp", "192.0.2.1", 5060))
    assert tu.errors == 5
    clock.advance(T64 + 1)
    assert len(layer) == 0 and not layer._by_address
