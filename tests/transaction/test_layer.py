"""The transaction layer: transport errors, callbacks, logging, and nothing left behind."""
from __future__ import annotations

from twisted.internet.task import Clock

from reticulum.addresses import Flow
from reticulum.transaction import Timers, TransactionLayer
from tests.transaction.helpers import (
    T1, T64, TCP, TU, UDP, Dest, MinimalTU, ack_for, make_layer, request, respond,
)


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


def flow(transport, remote, conn=0):
    """A real reticulum.addresses.Flow from our 192.0.2.100:5060."""
    return Flow(transport, ("192.0.2.100", 5060), remote, conn)


def test_transport_error_on_a_flow_matches_a_target_to_the_same_address():
    clock, wire, layer = make_layer()
    target = Dest(True, "tcp", "192.0.2.30", 5060)
    tu = TU()
    ct = layer.new_client(request(), target, tu)
    layer.transport_error(flow("tcp", ("192.0.2.31", 5060), conn=4))
    assert ct.state == "calling"
    layer.transport_error(flow("tcp", ("192.0.2.30", 5060), conn=4))
    assert ct.state == "terminated" and tu.names()[0] == "client_error"


def test_transport_error_on_flows_needs_the_same_connection():
    clock, wire, layer = make_layer()
    tu = TU()
    ct = layer.new_client(request(), flow("tcp", ("192.0.2.30", 5060), conn=4), tu)
    layer.transport_error(flow("tcp", ("192.0.2.30", 5060), conn=5))
    assert ct.state == "calling"
    layer.transport_error(flow("tcp", ("192.0.2.30", 5060), conn=4))
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
    assert len(layer) == 0 and not layer.destination_count
