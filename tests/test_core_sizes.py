"""Messages too large for one UDP datagram: never sent as such, never dropped in silence."""
from __future__ import annotations

from reticulum.core import MAX_UDP6_PAYLOAD, MAX_UDP_PAYLOAD
from reticulum.addresses import Target
from reticulum.sip import Request, Response, parse_uri
from reticulum.addresses import Flow
from tests.proxy.test_proxy import CALLER, PROXY, make_core

HEADERS = [
    ("Via", "SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-1;rport=6000"),
    ("From", "<sip:alice@reticulum.local>;tag=a"),
    ("To", "<sip:alice@reticulum.local>;tag=t"),
    ("Call-ID", "sizes-1"),
    ("CSeq", "1 REGISTER"),
]


def response(size: int) -> Response:
    message = Response(200, "OK")
    for name, value in HEADERS:
        message.add(name, value)
    message.add("X-Pad", "")
    pad = size - len(message.to_bytes())
    message.set("X-Pad", "x" * pad)
    assert len(message.to_bytes()) == size
    return message


def test_a_response_too_large_for_udp_becomes_a_513(tmp_path):
    core, _, transports = make_core(tmp_path)
    assert core.send_message(response(MAX_UDP_PAYLOAD + 1), CALLER)
    ((sent, flow),) = transports.take()
    assert flow == CALLER and sent.status == 513
    for name, value in HEADERS:
        assert sent.get(name) == value
    # one that fits is sent as it is, and so is a large one over a connection
    assert core.send_message(response(MAX_UDP_PAYLOAD), CALLER)
    tcp = Flow("tcp", PROXY, ("127.0.0.1", 6001), 7)
    assert core.send_message(response(MAX_UDP_PAYLOAD + 1000), tcp)
    assert [m.status for m, _ in transports.take()] == [200, 200]


def test_ipv6_datagrams_carry_a_little_more(tmp_path):
    core, _, transports = make_core(tmp_path)
    v6 = Flow("udp", ("::1", 5060), ("::1", 6000))
    assert core.send_message(response(MAX_UDP6_PAYLOAD), v6)
    assert core.send_message(response(MAX_UDP6_PAYLOAD + 1), v6)
    assert [m.status for m, _ in transports.take()] == [200, 513]


def test_a_request_too_large_for_udp_is_not_sent(tmp_path):
    core, _, transports = make_core(tmp_path)
    request = Request("INVITE", parse_uri("sip:bob@127.0.0.1:7000"))
    for name, value in HEADERS[:4]:
        request.add(name, value)
    request.add("CSeq", "1 INVITE")
    request.body = b"x" * MAX_UDP_PAYLOAD
    assert core.send_message(request, Target("udp", "127.0.0.1", 7000)) is False
    assert transports.take() == []
    assert core.send_message(request, Target("tcp", "127.0.0.1", 7000))
