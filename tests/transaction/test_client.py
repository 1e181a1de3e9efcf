"""Client transactions: every timer (A..M) and state transition, driven by a Clock."""
from __future__ import annotations

import pytest

from reticulum.sip import parse
from reticulum.transaction import ClientTransaction
from tests.transaction.helpers import (
    T1, T2, T4, T64, TCP, TU, UDP, MinimalTU, advance, make_layer, request, respond,
)


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
