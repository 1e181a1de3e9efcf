"""Server transactions: every timer (G..L) and state transition, driven by a Clock."""
from __future__ import annotations

import pytest

from reticulum.transaction import ServerTransaction
from tests.transaction.helpers import (
    T1, T2, T4, T64, TCP, TU, UDP, ack_for, advance, make_layer, request, respond,
)


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
