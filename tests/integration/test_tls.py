"""SIP over TLS through the real server: a real phone (baresip) registers, calls and is
called over TLS; a sips: request never leaves in clear text.

baresip is driven as tests/integration/baresip.py says. SIPp (built without TLS) is the
plain-text UDP leg.
"""
from __future__ import annotations

import socket
import ssl
import time
import uuid
from typing import Any

import pytest

from tests.integration.baresip import Baresip, called_by_sipp, phones  # noqa: F401 (fixture)
from tests.integration.harness import free_port, start_sipp
from tests.integration.sipclient import DOMAIN, build, read_message, register, status

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def tls_server(start_server, **overrides):
    tls_port = free_port()
    server = start_server(listen={"tls": ["127.0.0.1:%d" % tls_port]}, **overrides)
    server.tls_port = tls_port
    server.certificate = str(server.state_dir / "tls" / "certificate.pem")
    return server


def test_baresip_registers_over_tls_and_calls_a_udp_phone(start_server, tmp_path, phones):
    server = tls_server(start_server)
    port = free_port()
    assert register(server, tmp_path, "bob", port).ok
    uas = start_sipp("uas", None, local_port=port, cwd=tmp_path, timeout=30, name="uas-bob")
    alice = Baresip(tmp_path / "alice", server, "alice")
    phones.append(alice)
    alice.registered()
    time.sleep(0.3)
    alice.command("dial", "sip:bob@%s" % DOMAIN)
    alice.wait("CALL_ESTABLISHED", 15)
    time.sleep(0.5)
    alice.command("hangup")
    alice.wait("CALL_CLOSED")
    result = uas.wait()
    assert result.ok, result.describe()
    log = server.read_log()
    for line in ("<- REGISTER", "<- INVITE", "<- BYE"):
        assert any(line in l and "from tls" in l for l in log.splitlines()), line


def test_udp_phone_calls_baresip_over_tls(start_server, tmp_path, phones):
    server = tls_server(start_server)
    alice = Baresip(tmp_path / "alice", server, "alice")
    phones.append(alice)
    alice.registered()
    called_by_sipp(server, tmp_path, alice)
    log = server.read_log()
    assert any("-> INVITE" in l and "to tls" in l for l in log.splitlines())
    assert any("-> BYE" in l and "to tls" in l for l in log.splitlines())


class TLSClient:
    """A SIP client on one TLS connection (ssl module), checking the server's certificate."""

    def __init__(self, server: Any) -> None:
        ctx = ssl.create_default_context(cafile=server.certificate)
        raw = socket.create_connection(("127.0.0.1", server.tls_port), timeout=5)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.local = self.sock.getsockname()[:2]
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> bytes:
        message, self.buffer = read_message(self.sock, self.buffer)
        return message

    def final(self) -> bytes:
        while True:
            message = self.recv()
            if message.startswith(b"SIP/2.0 1"):
                continue
            return message

    def close(self) -> None:
        self.sock.close()


def test_sips_request_is_never_sent_in_clear_text(start_server, tmp_path):
    """bob is reachable only over UDP/TCP: a sips: INVITE for him gets 480, and
    nothing at all reaches his address."""
    server = tls_server(start_server)
    port = free_port()
    assert register(server, tmp_path, "bob", port, contact_params=";line=1").ok
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    udp.settimeout(1.5)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", port))
    tcp.listen(1)
    tcp.settimeout(0.2)
    client = TLSClient(server)
    try:
        client.send(build("INVITE", "sips:bob@%s" % DOMAIN, client.local, transport="TLS", body=SDP,
                          headers=["Contact: <sips:carol@127.0.0.1:%d>" % client.local[1],
                                   "Content-Type: application/sdp"]))
        final = client.final()
        assert status(final) in (480, 503), final
        # the same call as sip: does reach bob's address (the check below is not vacuous)
        client.send(build("OPTIONS", "sip:bob@%s" % DOMAIN, client.local, transport="TLS"))
        data, addr = udp.recvfrom(65535)
        assert data.startswith(b"OPTIONS "), data
        head = data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
        keep = [h for h in head if h.split(b":")[0].strip().lower() in (b"via", b"from", b"to", b"call-id", b"cseq")]
        udp.sendto(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n", addr)
        assert status(client.final()) == 200
        with pytest.raises(socket.timeout):  # nothing after the sip: OPTIONS
            udp.recvfrom(65535)
        with pytest.raises(socket.timeout):
            tcp.accept()
    finally:
        client.close()
        udp.close()
        tcp.close()


def test_sips_call_reaches_a_phone_registered_over_tls(start_server, tmp_path, phones):
    server = tls_server(start_server)
    alice = Baresip(tmp_path / "alice", server, "alice")
    phones.append(alice)
    alice.registered()
    client = TLSClient(server)
    try:
        call_id = uuid.uuid4().hex
        ruri = "sips:alice@%s" % DOMAIN
        client.send(build("INVITE", ruri, client.local, transport="TLS", body=SDP, call_id=call_id,
                          headers=["Contact: <sips:carol@127.0.0.1:%d>" % client.local[1],
                                   "Content-Type: application/sdp"]))
        ok = client.final()
        assert status(ok) == 200, ok
        text = ok.decode()
        headers = [l for l in text.split("\r\n\r\n")[0].split("\r\n")[1:]]
        rr = [l.split(":", 1)[1].strip() for l in headers if l.lower().startswith("record-route:")]
        assert rr and all(v.startswith("<sips:") for v in rr), rr  # sips: Record-Route (§16.6)
        to = next(l.split(":", 1)[1].strip() for l in headers if l.lower().startswith("to:"))
        contact = next(l.split(":", 1)[1].strip() for l in headers if l.lower().startswith("contact:"))
        target = contact.split(">")[0].lstrip("<")
        routes = ["Route: %s" % ", ".join(reversed(rr))]
        client.send(build("ACK", target, client.local, transport="TLS", call_id=call_id, cseq=1, to=to,
                          headers=routes))
        alice.wait("CALL_ESTABLISHED", 10)
        client.send(build("BYE", target, client.local, transport="TLS", call_id=call_id, cseq=2, to=to,
                          headers=routes))
        assert status(client.final()) == 200
        alice.wait("CALL_CLOSED")
    finally:
        client.close()


def test_sips_and_transport_tls_targets_get_an_outgoing_tls_connection(start_server, tmp_path):
    """bob registered over UDP a contact that asks for TLS: a sips: call to him opens a TLS
    connection to that contact and the INVITE arrives there encrypted."""
    from reticulum.certs import make_self_signed
    from tests.transport.test_tls import TLSPeer

    server = tls_server(start_server)
    peer = TLSPeer(*make_self_signed(["bob.example.org"], ["127.0.0.1"]), tmp_path)
    try:
        assert register(server, tmp_path, "bob", peer.port, contact_params=";transport=tls").ok
        client = TLSClient(server)
        try:
            client.send(build("INVITE", "sips:bob@%s" % DOMAIN, client.local, transport="TLS", body=SDP,
                              headers=["Contact: <sips:carol@127.0.0.1:%d>" % client.local[1],
                                       "Content-Type: application/sdp"]))
            data = peer.received.get(timeout=10)
            assert data.startswith(b"INVITE sip:bob@127.0.0.1:%d;transport=tls SIP/2.0" % peer.port), data[:200]
            assert b"Via: SIP/2.0/TLS " in data
            assert b"Record-Route: <sips:" in data
            assert peer.first_bytes[0] == b"\x16"  # a TLS record: the INVITE was never in clear text
        finally:
            client.close()
    finally:
        peer.close()
