"""Messages too large for UDP never vanish in silence (RFC 3261 §18.1.1, §18.2.2)."""
from __future__ import annotations

import socket

from tests.integration.sipclient import DOMAIN, UDPPeer, build, read_message, status

PAD = 25000  # three such Contacts make a REGISTER answer larger than any UDP datagram


def tcp_client(server):
    sock = socket.create_connection((server.host, server.port), timeout=10)
    return sock, sock.getsockname()


def final(sock):
    """The first final response on a stream socket."""
    rest = b""
    while True:
        message, rest = read_message(sock, rest)
        if not message.startswith(b"SIP/2.0 1"):
            return message


def register(local, contact, transport="UDP", cseq=1, call_id="big-register"):
    return build("REGISTER", "sip:" + DOMAIN, local, transport=transport, cseq=cseq,
                 call_id=call_id, from_="<sip:bob@%s>;tag=b" % DOMAIN,
                 to="<sip:bob@%s>" % DOMAIN,
                 headers=["Contact: <%s>" % contact, "Expires: 600"])


def test_a_register_answer_too_large_for_udp_is_still_answered(start_server):
    server = start_server(auth={"enabled": False})
    sock, local = tcp_client(server)
    phone = UDPPeer()
    try:
        # bob has large bindings, made over TCP, where large answers are fine
        for i in range(3):
            contact = "sip:bob@127.0.0.1:%d;pad=%s" % (6000 + i, "x" * PAD)
            sock.sendall(register(local, contact, "TCP", cseq=i + 1, call_id="tcp-reg"))
            answer = final(sock)
            assert status(answer) == 200 and len(answer) > (i + 1) * PAD
        # a REGISTER over UDP: the 200 listing every binding cannot fit in a datagram
        request = register(phone.address, "sip:bob@127.0.0.1:%d" % phone.address[1])
        phone.send(request, server)
        answer = phone.final(timeout=10)
        assert status(answer) == 513
        assert b"Call-ID: big-register" in answer and b"CSeq: 1 REGISTER" in answer
        # a retransmission gets the same answer again
        phone.send(request, server)
        assert status(phone.final(timeout=10)) == 513
        assert "too large for UDP" in server.read_log()
    finally:
        sock.close()
        phone.close()


def test_a_request_too_large_for_udp_fails_loudly(start_server):
    server = start_server(auth={"enabled": False})
    bob = UDPPeer()
    sock, local = tcp_client(server)
    try:
        bob.send(register(bob.address, "sip:bob@127.0.0.1:%d" % bob.address[1]), server)
        assert status(bob.final()) == 200
        body = "v=0\r\n" + "a=x-pad:%s\r\n" % ("y" * 65000)
        sock.sendall(build("INVITE", "sip:bob@%s" % DOMAIN, local, transport="TCP",
                           from_="<sip:carol@example.org>;tag=c",
                           headers=["Contact: <sip:carol@%s:%d;transport=tcp>" % local,
                                    "Content-Type: application/sdp"],
                           body=body))
        # forwarded over UDP it would not fit: the branch fails at once and the caller hears
        # 500 (the branch's 503 becomes 500 on its way out, RFC 3261 §16.7), nothing hangs
        assert status(final(sock)) == 500
        bob.sock.settimeout(1)
        try:
            got = bob.sock.recv(65535)
        except socket.timeout:
            got = b""
        assert not got.startswith(b"INVITE")
        assert "too large for UDP" in server.read_log()
    finally:
        sock.close()
        bob.close()
