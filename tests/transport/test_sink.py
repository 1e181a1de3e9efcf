"""The Delivery: the one door from the protocols to the sink, and the one guard around it."""

from __future__ import annotations

from twisted.logger import capturedLogs

from reticulum.addresses import Flow
from reticulum.transport.sink import Delivery

from tests.transport.conftest import FakeCore
from tests.transport.test_protocols import OPTIONS, tcp_conn

FLOW = Flow("ws", ("127.0.0.1", 8080), ("10.0.0.2", 40000), 7)


def test_nothing_is_handed_on_before_there_is_a_sink():
    delivery = Delivery(1024)
    delivery.packet(OPTIONS, FLOW)
    delivery.message(OPTIONS, FLOW)
    delivery.too_large(b"head", FLOW)
    delivery.closed(FLOW)
    delivery.failed(FLOW)
    sink = FakeCore()
    delivery.sink = sink
    delivery.packet(OPTIONS, FLOW)
    assert sink.calls == [("receive", OPTIONS, FLOW)]


def test_a_packet_is_one_message_keepalives_and_size_checked():
    sink = FakeCore()
    delivery = Delivery(1024, sink)
    for keepalive in (b"", b"\r\n", b"\r\n\r\n", b"\n"):
        delivery.packet(keepalive, FLOW)
    assert sink.calls == []
    delivery.packet(b"\r\n\r\n" + OPTIONS, FLOW)
    big = OPTIONS.replace(b"body", b"x" * 2000)
    delivery.packet(big, FLOW)
    assert sink.calls == [("receive", OPTIONS, FLOW),
                          ("too_large", big[: big.index(b"\r\n\r\n") + 4], FLOW)]


def test_a_failing_sink_is_logged_with_the_flow_for_every_event():
    sink = FakeCore()
    sink.fail = True
    delivery = Delivery(1024, sink)
    with capturedLogs() as events:
        delivery.packet(OPTIONS, FLOW)
        delivery.message(OPTIONS, FLOW)
        delivery.too_large(b"head", FLOW)
        delivery.closed(FLOW)
        delivery.failed(FLOW)
    assert [c[0] for c in sink.calls] == ["receive", "receive", "too_large", "closed", "failed"]
    failures = [e for e in events if e.get("log_failure") is not None]
    assert [(e["what"], e["flow"]) for e in failures] == [
        ("message_received", str(FLOW)), ("message_received", str(FLOW)),
        ("message_too_large", str(FLOW)), ("flow_closed", str(FLOW)), ("flow_failed", str(FLOW)),
    ]


def test_a_sink_failing_on_close_leaves_the_table_clean(make_transports, core):
    t = make_transports()
    gone, _ = tcp_conn(t, peer=("10.0.0.2", 1))
    other, tr = tcp_conn(t, peer=("10.0.0.3", 2))
    core.fail = True
    gone.connectionLost(None)
    assert not t.alive(gone.flow)
    assert t.connections() == [other.flow]
    core.fail = False
    other.dataReceived(OPTIONS)  # the neighbour carries on
    assert core.calls[-1] == ("receive", OPTIONS, other.flow)
    assert not tr.disconnecting
