"""The flow table: listening, send_to, connection reuse and failures."""

from __future__ import annotations

import socket

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import FakeDatagramTransport, StringTransport
from twisted.python.failure import Failure

from reticulum.transport import BindError, Flow, ListeningPoint
from reticulum.transport.udp import UDPProtocol

from tests.transport.conftest import free_port


def add_udp(t, host, port):
    proto = UDPProtocol(t.delivery, (host, port))
    dt = FakeDatagramTransport()
    proto.makeConnection(dt)
    t._udp[(host, port)] = proto
    return dt


def test_listening_points_from_config(make_transports):
    t = make_transports(
        listen={"udp": ["0.0.0.0:5060", "[::]:5060"], "tcp": ["127.0.0.1:5061"], "tls": ["0.0.0.0:5062"]}
    )
    assert t.listening == [
        ListeningPoint("udp", "0.0.0.0", 5060),
        ListeningPoint("udp", "::", 5060),
        ListeningPoint("tcp", "127.0.0.1", 5061),
        ListeningPoint("tls", "0.0.0.0", 5062),
    ]


def test_listen_binds_and_adopts(make_transports, reactor, core):
    port = free_port()
    t = make_transports(listen={"udp": ["127.0.0.1:%d" % port], "tcp": ["127.0.0.1:%d" % port]})
    t.listen(core)
    kinds = [type(p[2]).__name__ for p in reactor.adoptedPorts]
    assert kinds == ["UDPProtocol", "GuardFactory"]  # every stream listener is guarded
    assert type(reactor.adoptedPorts[1][2].wrappedFactory).__name__ == "StreamServerFactory"
    assert reactor.adoptedPorts[0][3] >= 65535  # whole datagrams
    assert ("127.0.0.1", port) in t._udp
    t.stop()


def test_listen_ipv4_and_ipv6_wildcards_together(make_transports, reactor, core):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    port = free_port()
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        pytest.skip("IPv6 loopback unavailable")
    t = make_transports(listen={"udp": ["127.0.0.1:%d" % port, "[::1]:%d" % port]})
    t.listen(core)
    assert len(reactor.adoptedPorts) == 2
    t.stop()


def test_bind_error_names_the_address(make_transports, reactor, core):
    port = free_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        t = make_transports(listen={"udp": ["127.0.0.1:%d" % port], "tcp": ["127.0.0.1:%d" % port]})
        with pytest.raises(BindError) as e:
            t.listen(core)
    finally:
        blocker.close()
    assert str(e.value) == "cannot listen on tcp 127.0.0.1:%d: address already in use" % port
    assert t._udp == {}  # what was bound is released


def test_bind_error_unknown_local_address(make_transports, core):
    t = make_transports(listen={"udp": ["192.0.2.77:5060"]})
    with pytest.raises(BindError) as e:
        t.listen(core)
    assert "udp 192.0.2.77:5060" in str(e.value)


def test_unsupported_listen_keys_are_ignored(make_transports, reactor, core):
    t = make_transports(listen={"admin": ["127.0.0.1:8000"]})
    t.listen(core)
    assert reactor.adoptedPorts == []
    assert t.listening == []


# -- UDP out


def test_send_to_udp_picks_the_address_family(make_transports, core):
    t = make_transports()
    v4 = add_udp(t, "0.0.0.0", 5060)
    v6 = add_udp(t, "::", 5060)
    f4 = t.send_to(b"a", "udp", "192.0.2.1", 5060)
    f6 = t.send_to(b"b", "UDP", "2001:db8::1", 5070)
    assert f4 == Flow("udp", ("0.0.0.0", 5060), ("192.0.2.1", 5060))
    assert f6 == Flow("udp", ("::", 5060), ("2001:db8::1", 5070))
    assert v4.written == [(b"a", ("192.0.2.1", 5060))]
    assert v6.written == [(b"b", ("2001:db8::1", 5070))]
    assert t.alive(f4) and t.alive(f6)


def test_send_to_udp_prefers_loopback_socket_for_loopback(make_transports):
    t = make_transports()
    public = add_udp(t, "192.0.2.10", 5060)
    loop = add_udp(t, "127.0.0.1", 5060)
    flow = t.send_to(b"x", "udp", "127.0.0.1", 9999)
    assert flow.local == ("127.0.0.1", 5060)
    assert loop.written and not public.written
    flow = t.send_to(b"y", "udp", "198.51.100.1", 5060)
    assert flow.local == ("192.0.2.10", 5060)


def test_send_to_udp_normalizes_ipv6(make_transports):
    t = make_transports()
    add_udp(t, "::", 5060)
    flow = t.send_to(b"x", "udp", "2001:DB8:0::1", 5060)
    assert flow.remote == ("2001:db8::1", 5060)


def test_send_to_udp_without_socket_fails_later(make_transports, core, reactor):
    t = make_transports()
    add_udp(t, "0.0.0.0", 5060)
    flow = t.send_to(b"x", "udp", "2001:db8::1", 5060)
    assert core.calls == []  # never inside send_to
    reactor.advance(0)
    assert core.calls == [("failed", None, flow)]


def test_send_to_unknown_transport_fails_later(make_transports, core, reactor):
    t = make_transports()
    flow = t.send_to(b"x", "sctp", "192.0.2.1", 5060)
    assert flow.transport == "sctp"
    reactor.advance(0)
    assert core.named("failed") == [("failed", None, flow)]


# -- TCP out


def connect_pending(reactor, index=0):
    host, port, factory, timeout, bind = reactor.tcpClients[index]
    proto = factory.buildProtocol(IPv4Address("TCP", host, port))
    tr = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 40001), peerAddress=IPv4Address("TCP", host, port))
    proto.makeConnection(tr)
    return factory, proto, tr


def test_send_to_tcp_opens_queues_and_reuses(make_transports, core, reactor):
    t = make_transports(listen={"tcp": ["0.0.0.0:5060"]})
    f1 = t.send_to(b"one", "tcp", "192.0.2.5", 5070)
    f2 = t.send_to(b"two", "tcp", "192.0.2.5", 5070)
    assert f1 == f2
    assert f1.transport == "tcp" and f1.conn > 0
    assert f1.local == ("0.0.0.0", 5060)
    assert f1.remote == ("192.0.2.5", 5070)
    assert len(reactor.tcpClients) == 1
    assert t.alive(f1)
    assert t.send(b"three", f1)
    factory, proto, tr = connect_pending(reactor)
    assert proto.flow is f1
    assert tr.value() == b"onetwothree"
    f3 = t.send_to(b"four", "tcp", "192.0.2.5", 5070)
    assert f3 == f1 and tr.value().endswith(b"four")
    assert len(reactor.tcpClients) == 1
    # responses on that connection come with the same flow
    proto.dataReceived(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert core.calls[-1][2] is f1
    proto.connectionLost(None)
    assert core.named("closed") == [("closed", None, f1)]
    assert not t.alive(f1)
    f5 = t.send_to(b"five", "tcp", "192.0.2.5", 5070)
    assert f5 != f1 and f5.conn != f1.conn
    assert len(reactor.tcpClients) == 2


def test_send_to_tcp_failure_drops_queue(make_transports, core, reactor):
    t = make_transports()
    flow = t.send_to(b"one", "tcp", "192.0.2.5", 5070)
    assert flow.local == ("0.0.0.0", 0)
    host, port, factory, timeout, bind = reactor.tcpClients[0]
    assert timeout == pytest.approx(32)
    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    assert core.calls == [("failed", None, flow)]
    assert not t.alive(flow)
    assert not t.send(b"x", flow)


def test_send_to_reuses_inbound_connection(make_transports, reactor):
    from tests.transport.test_protocols import tcp_conn

    t = make_transports()
    proto, tr = tcp_conn(t, peer=("10.0.0.2", 5062))
    flow = t.send_to(b"hello", "tcp", "10.0.0.2", 5062)
    assert flow is proto.flow
    assert tr.value() == b"hello"
    assert reactor.tcpClients == []


def test_send_on_foreign_flow_is_false(make_transports):
    from tests.transport.test_protocols import tcp_conn

    t = make_transports()
    proto, tr = tcp_conn(t)
    fake = Flow("tcp", proto.flow.local, ("10.9.9.9", 1), proto.flow.conn)
    assert not t.send(b"x", fake)
    assert not t.alive(fake)
    assert not t.alive(Flow("tcp", ("1.1.1.1", 1), ("2.2.2.2", 2), 999))


def test_stop_closes_connections(make_transports):
    from tests.transport.test_protocols import tcp_conn

    t = make_transports()
    proto, tr = tcp_conn(t)
    t.stop()
    assert tr.disconnecting
