"""Connection caps and the message deadline, on a memory reactor."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs

from reticulum.transport import limits as limits_module
from reticulum.transport.limits import GuardFactory, default_max_connections
from reticulum.transport.tcp import StreamServerFactory

OPTIONS = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 10.0.0.2:40000;branch=z9hG4bK1\r\n"
    b"Call-ID: 1@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nbody"
)


def connect(factory, host="10.0.0.2", port=40000):
    """Accept one connection the way the reactor does; (wrapper, transport) or None."""
    cls = IPv6Address if ":" in host else IPv4Address
    proto = factory.buildProtocol(cls("TCP", host, port))
    if proto is None:
        return None
    tr = StringTransport(hostAddress=cls("TCP", "::1" if ":" in host else "127.0.0.1", 5060),
                         peerAddress=cls("TCP", host, port))
    proto.makeConnection(tr)
    return proto, tr


def guarded(make_transports, **transport):
    t = make_transports(transport=transport)
    return t, GuardFactory(StreamServerFactory(t, "tcp"), t.limits)


def warnings(events):
    return [e for e in events if e["log_level"].name == "warn"]


# -- caps


def test_per_source_cap(make_transports, core):
    t, factory = guarded(make_transports, max_connections_per_ip=3)
    conns = [connect(factory, port=p) for p in range(1, 4)]
    assert all(conns) and len(t.connections()) == 3
    assert connect(factory, port=4) is None  # closed before anything is read
    assert connect(factory, host="10.0.0.3") is not None  # another source is served
    conns[0][0].connectionLost(None)
    assert connect(factory, port=5) is not None  # a slot came free
    assert t.limits.by_source == {"10.0.0.2": 3, "10.0.0.3": 1}


def test_ipv6_sources_share_a_64(make_transports):
    t, factory = guarded(make_transports, max_connections_per_ip=2)
    assert connect(factory, host="2001:db8:1:2::1")
    assert connect(factory, host="2001:db8:1:2::2")
    assert connect(factory, host="2001:db8:1:2::3") is None
    assert connect(factory, host="2001:db8:1:3::1")


def test_global_cap(make_transports):
    t, factory = guarded(make_transports, max_connections=4)
    for i in range(4):
        assert connect(factory, host="10.0.0.%d" % (i + 1))
    assert connect(factory, host="10.0.0.9") is None
    assert t.limits.total == 4


def test_refusals_are_logged_once_per_burst(make_transports, reactor):
    t, factory = guarded(make_transports, max_connections_per_ip=1)
    connect(factory)
    with capturedLogs() as events:
        for port in range(100):
            assert connect(factory, port=port + 2) is None
        reactor.advance(limits_module.BURST_QUIET / 2)
        assert connect(factory, port=1000) is None
    assert len(warnings(events)) == 1
    assert "max_connections_per_ip" in warnings(events)[0]["what"]
    with capturedLogs() as events:
        reactor.advance(limits_module.BURST_QUIET * 2)
    assert [e["count"] for e in events] == [100]  # the burst's summary
    with capturedLogs() as events:
        assert connect(factory, port=2000) is None
    assert len(warnings(events)) == 1  # a new burst


def test_burst_memory_is_bounded(make_transports, reactor, monkeypatch):
    monkeypatch.setattr(limits_module, "MAX_BURSTS", 5)
    t, factory = guarded(make_transports, max_connections_per_ip=1)
    with capturedLogs() as events:
        for i in range(50):
            connect(factory, host="10.1.0.%d" % i)
            connect(factory, host="10.1.0.%d" % i, port=2)
    assert len(t.limits._bursts) <= 6
    assert len(warnings(events)) == 6


def test_default_cap_stays_below_the_open_files_limit():
    assert default_max_connections(1024) == 1024 - limits_module.RESERVED_FILES
    assert default_max_connections(50) == 16
    assert 16 <= default_max_connections() < (limits_module.open_files_limit() or 1 << 30)


def test_configured_cap_above_the_open_files_limit_is_lowered_with_a_warning(make_transports):
    room = default_max_connections()
    with capturedLogs() as events:
        t = make_transports(transport={"max_connections": room + 1000})
    assert t.limits.max_total == room
    assert any("max_connections" in e.get("log_format", "") for e in warnings(events))
    assert make_transports(transport={"max_connections": 10}).limits.max_total == 10


def test_outgoing_connections_count_too(make_transports, reactor, core):
    t, factory = guarded(make_transports, max_connections=2)
    assert connect(factory)
    flow = t.send_to(b"x", "tcp", "10.0.0.7", 5060)
    assert len(reactor.tcpClients) == 1 and t.limits.total == 2
    refused = t.send_to(b"x", "tcp", "10.0.0.8", 5060)
    reactor.advance(0)
    assert len(reactor.tcpClients) == 1
    assert core.named("failed") == [("failed", None, refused)]
    # a failed connect gives its place back
    factory_out = reactor.tcpClients[0][2]
    factory_out.clientConnectionFailed(None, None)
    assert t.limits.total == 1
    assert flow.transport == "tcp"


# -- the message deadline


def test_a_connection_must_deliver_its_first_message_in_time(make_transports, reactor, core):
    t, factory = guarded(make_transports, head_timeout=5)
    proto, tr = connect(factory)
    reactor.advance(4.9)
    assert not tr.disconnecting
    reactor.advance(0.2)
    assert tr.disconnecting and tr.disconnected  # aborted, not a polite close
    proto.connectionLost(None)
    assert t.limits.total == 0 and core.named("closed")


def test_a_trickling_client_is_closed(make_transports, reactor, core):
    t, factory = guarded(make_transports, head_timeout=5)
    proto, tr = connect(factory)
    proto.dataReceived(OPTIONS)
    reactor.advance(60)
    assert not tr.disconnecting  # between messages a connection may idle
    with capturedLogs() as events:
        for i in range(20):
            proto.dataReceived(OPTIONS[i:i + 1])  # one byte a second
            reactor.advance(1)
            if tr.disconnecting:
                break
    assert tr.disconnecting and i == 4
    assert len(core.named("receive")) == 1
    assert any("head_timeout" in e.get("what", "") for e in warnings(events))


def test_a_message_in_pieces_within_the_deadline_is_fine(make_transports, reactor, core):
    t, factory = guarded(make_transports, head_timeout=5)
    proto, tr = connect(factory)
    for _ in range(3):
        proto.dataReceived(OPTIONS[:40])
        reactor.advance(4)
        proto.dataReceived(OPTIONS[40:])
        reactor.advance(4)
    # a message that completes while the next one starts gets a fresh deadline
    proto.dataReceived(OPTIONS[:40])
    reactor.advance(4)
    proto.dataReceived(OPTIONS[40:] + OPTIONS[:40])
    reactor.advance(4)
    assert not tr.disconnecting
    reactor.advance(1.5)
    assert tr.disconnecting
    assert len(core.named("receive")) == 4


def test_pings_do_not_count_as_a_message(make_transports, reactor):
    t, factory = guarded(make_transports, head_timeout=5)
    proto, tr = connect(factory)
    for _ in range(6):
        proto.dataReceived(b"\r\n\r\n")
        reactor.advance(1)
    assert tr.disconnecting


def test_http_head_deadline(make_transports, reactor):
    """ws/wss before the upgrade: any bytes start a request head, the head ends it."""
    t = make_transports(transport={"head_timeout": 5})
    from twisted.internet.protocol import Protocol, Factory

    class Inner(Protocol):
        def dataReceived(self, data):
            if b"\r\n\r\n" in data:
                self.transport.message_done()

    factory = GuardFactory(Factory.forProtocol(Inner), t.limits, http=True)
    proto, tr = connect(factory)
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reactor.advance(30)
    assert not tr.disconnecting
    proto.dataReceived(b"GET / HTTP/1.1\r\n")
    reactor.advance(5.1)
    assert tr.disconnecting
