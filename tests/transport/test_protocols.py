"""UDP and TCP protocol logic with in-memory transports."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import FakeDatagramTransport, StringTransport
from twisted.python.failure import Failure

from reticulum.transport import Flow
from reticulum.transport.tcp import StreamProtocol, StreamServerFactory
from reticulum.transport.udp import UDPProtocol

OPTIONS = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 10.0.0.2:40000;branch=z9hG4bK1\r\n"
    b"Call-ID: 1@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nbody"
)


# -- UDP


def udp(make_transports, **transport):
    t = make_transports(transport=transport) if transport else make_transports()
    proto = UDPProtocol(t.delivery, ("0.0.0.0", 5060))
    dt = FakeDatagramTransport()
    proto.makeConnection(dt)
    t._udp[("0.0.0.0", 5060)] = proto
    return t, proto, dt


def test_udp_datagram_goes_to_core(make_transports, core):
    t, proto, _ = udp(make_transports)
    proto.datagramReceived(OPTIONS, ("10.0.0.2", 40000))
    assert core.calls == [("receive", OPTIONS, Flow("udp", ("0.0.0.0", 5060), ("10.0.0.2", 40000)))]
    flow = core.calls[0][2]
    assert flow.conn == 0 and not flow.reliable


def test_udp_ipv6_address_tuple(make_transports, core):
    t, proto, _ = udp(make_transports)
    proto.datagramReceived(OPTIONS, ("::1", 40000, 0, 0))
    assert core.calls[0][2].remote == ("::1", 40000)


def test_udp_keepalives_ignored(make_transports, core):
    t, proto, dt = udp(make_transports)
    for ka in (b"\r\n\r\n", b"\r\n", b"\n", b""):
        proto.datagramReceived(ka, ("10.0.0.2", 40000))
    assert core.calls == []
    assert dt.written == []


def test_udp_leading_crlf_skipped(make_transports, core):
    t, proto, _ = udp(make_transports)
    proto.datagramReceived(b"\r\n" + OPTIONS, ("10.0.0.2", 40000))
    assert core.calls[0][1] == OPTIONS


def test_udp_too_large(make_transports, core):
    t, proto, _ = udp(make_transports, max_message_size=1024)
    big = OPTIONS.replace(b"body", b"x" * 2000)
    proto.datagramReceived(big, ("10.0.0.2", 40000))
    ((name, head, flow),) = core.calls
    assert name == "too_large"
    assert head == big[: big.index(b"\r\n\r\n") + 4]


def test_udp_core_exception_is_contained(make_transports, core):
    t, proto, _ = udp(make_transports)
    core.fail = True
    proto.datagramReceived(OPTIONS, ("10.0.0.2", 40000))
    proto.datagramReceived(OPTIONS, ("10.0.0.2", 40000))
    assert len(core.calls) == 2


def test_udp_send(make_transports):
    t, proto, dt = udp(make_transports)
    flow = Flow("udp", ("0.0.0.0", 5060), ("10.0.0.2", 40000))
    assert t.send(b"hi", flow)
    assert dt.written == [(b"hi", ("10.0.0.2", 40000))]
    assert t.alive(flow)
    other = Flow("udp", ("0.0.0.0", 5999), ("10.0.0.2", 40000))
    assert not t.send(b"hi", other)
    assert not t.alive(other)


# -- TCP


def tcp_conn(t, peer=("10.0.0.2", 40000), host=("127.0.0.1", 5060)):
    factory = StreamServerFactory(t, "tcp")
    cls = IPv6Address if ":" in peer[0] else IPv4Address
    proto = factory.buildProtocol(cls("TCP", *peer))
    tr = StringTransport(hostAddress=cls("TCP", *host), peerAddress=cls("TCP", *peer))
    proto.makeConnection(tr)
    return proto, tr


def test_tcp_messages_and_flow(make_transports, core):
    t = make_transports()
    proto, tr = tcp_conn(t)
    flow = proto.flow
    assert flow.transport == "tcp"
    assert flow.local == ("127.0.0.1", 5060)
    assert flow.remote == ("10.0.0.2", 40000)
    assert flow.conn > 0 and flow.reliable
    proto.dataReceived(OPTIONS[:10])
    assert core.calls == []
    proto.dataReceived(OPTIONS[10:] + OPTIONS)
    assert core.calls == [("receive", OPTIONS, flow), ("receive", OPTIONS, flow)]
    assert t.alive(flow)
    assert t.connections() == [flow]


def test_tcp_unique_conn_ids(make_transports):
    t = make_transports()
    a, _ = tcp_conn(t, peer=("10.0.0.2", 1))
    b, _ = tcp_conn(t, peer=("10.0.0.2", 2))
    c, _ = tcp_conn(t, peer=("::1", 3), host=("::1", 5060))
    assert len({a.flow.conn, b.flow.conn, c.flow.conn}) == 3
    assert c.flow.remote == ("::1", 3)


def test_tcp_send_and_close(make_transports, core):
    t = make_transports()
    proto, tr = tcp_conn(t)
    flow = proto.flow
    assert t.send(b"SIP/2.0 200 OK\r\n\r\n", flow)
    assert tr.value() == b"SIP/2.0 200 OK\r\n\r\n"
    proto.connectionLost(Failure(ConnectionError("gone")))
    assert core.named("closed") == [("closed", None, flow)]
    assert not t.alive(flow)
    assert not t.send(b"x", flow)
    assert t.connections() == []


def test_tcp_ping_pong(make_transports, core):
    t = make_transports()
    proto, tr = tcp_conn(t)
    proto.dataReceived(b"\r\n\r\n")
    assert tr.value() == b"\r\n"
    proto.dataReceived(b"\r\n" + OPTIONS)
    assert tr.value() == b"\r\n"
    assert [c[0] for c in core.calls] == ["receive"]


def test_tcp_too_large_closes(make_transports, core):
    t = make_transports(transport={"max_message_size": 1024})
    proto, tr = tcp_conn(t)
    proto.dataReceived(b"INVITE sip:x SIP/2.0\r\nX: " + b"a" * 2000)
    assert [c[0] for c in core.calls] == ["too_large"]
    assert core.calls[0][1].startswith(b"INVITE sip:x SIP/2.0\r\n")
    assert tr.disconnecting


def test_tcp_bad_content_length_answers_then_closes(make_transports, core):
    t = make_transports()
    proto, tr = tcp_conn(t)
    bad = OPTIONS.replace(b"Content-Length: 4", b"Content-Length: -4")
    proto.dataReceived(bad)
    assert core.calls == [("receive", bad[:-4], proto.flow)]
    assert tr.disconnecting


def test_tcp_core_exception_is_contained(make_transports, core):
    t = make_transports()
    proto, tr = tcp_conn(t)
    core.fail = True
    proto.dataReceived(OPTIONS + OPTIONS)
    assert len(core.calls) == 2
    assert not tr.disconnecting


def test_tcp_idle_timeout(make_transports, reactor):
    t = make_transports(transport={"tcp_idle_timeout": 30})
    proto, tr = tcp_conn(t)
    reactor.advance(20)
    proto.dataReceived(OPTIONS)
    reactor.advance(20)
    assert not tr.disconnecting  # activity 20 s ago
    t.send(b"x", proto.flow)
    reactor.advance(29)
    assert not tr.disconnecting
    reactor.advance(1.5)
    assert tr.disconnecting


def test_tcp_idle_timer_cancelled_on_close(make_transports, reactor):
    t = make_transports(transport={"tcp_idle_timeout": 30})
    proto, tr = tcp_conn(t)
    proto.connectionLost(None)
    assert reactor.getDelayedCalls() == []


def test_close_flow(make_transports):
    t = make_transports()
    proto, tr = tcp_conn(t)
    t.close_flow(proto.flow)
    assert tr.disconnecting
    assert isinstance(proto, StreamProtocol)
