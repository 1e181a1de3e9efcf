"""The registrar through the real server: RFC 3261 §10.3 rules (SIPp), flows of connections,
bindings that survive a restart (also a SIGKILL)."""
from __future__ import annotations

import re
import socket
import time

from tests.integration.harness import free_port, run_sipp
from tests.integration.sipclient import DOMAIN, UDPPeer, build, read_message, status

NO_AUTH = {"enabled": False}


def test_registrar_rules(start_server, tmp_path):
    server = start_server(auth=NO_AUTH)
    result = run_sipp("registrar", server.address, "-s", "carol", "-key", "domain", DOMAIN,
                      cwd=tmp_path, timeout=20)
    assert result.ok, result.describe()


def test_registrar_rules_over_tcp(start_server, tmp_path):
    server = start_server(auth=NO_AUTH)
    result = run_sipp("registrar", server.address, "-s", "carol", "-key", "domain", DOMAIN,
                      transport="t1", cwd=tmp_path, timeout=20)
    assert result.ok, result.describe()


def _register_raw(peer, server, user="carol", expires=3600, contact=None):
    contact = contact or "<sip:%s@127.0.0.1:%d>" % (user, peer.address[1])
    peer.send(build("REGISTER", "sip:" + DOMAIN, peer.address,
                    from_="<sip:%s@%s>;tag=r1" % (user, DOMAIN),
                    to="<sip:%s@%s>" % (user, DOMAIN),
                    headers=["Contact: %s" % contact, "Expires: %d" % expires]), server)
    return peer.final()


def _query(server, user="carol"):
    peer = UDPPeer()
    try:
        peer.send(build("REGISTER", "sip:" + DOMAIN, peer.address,
                        from_="<sip:%s@%s>;tag=q1" % (user, DOMAIN),
                        to="<sip:%s@%s>" % (user, DOMAIN)), server)
        return peer.final()
    finally:
        peer.close()


def _remaining(reply: bytes, port: int) -> int:
    match = re.search(rb":%d>;expires=(\d+)" % port, reply)
    assert match, reply
    return int(match.group(1))


def test_outbound_tcp_binding_stops_being_used_when_its_connection_closes(start_server):
    """RFC 5626 outbound (+sip.instance and reg-id): the flow is the only way to bob."""
    server = start_server(auth=NO_AUTH)
    conn = socket.create_connection((server.host, server.port), timeout=5)
    local = conn.getsockname()
    conn.sendall(build("REGISTER", "sip:" + DOMAIN, local, transport="TCP",
                       from_="<sip:bob@%s>;tag=r1" % DOMAIN, to="<sip:bob@%s>" % DOMAIN,
                       headers=["Contact: <sip:bob@127.0.0.1:%d;transport=tcp;ob>;reg-id=1;"
                                '+sip.instance="<urn:uuid:00000000-0000-1000-8000-00000000b0b0>"'
                                % local[1], "Supported: outbound", "Expires: 3600"]))
    reply, rest = read_message(conn)
    assert status(reply) == 200
    # While the connection lives, a request for bob travels over it.
    caller = UDPPeer()
    caller.send(build("MESSAGE", "sip:bob@" + DOMAIN, caller.address, body="hi", cseq=1),
                server)
    request, rest = read_message(conn, rest)
    assert request.startswith(b"MESSAGE sip:bob@127.0.0.1")
    conn.close()
    # The request that was waiting on the connection fails at once: a transport error counts
    # as a 503 from that branch (§16.9), which the caller hears as 500 (§16.7 step 6) ...
    reply = caller.final(timeout=2)
    assert b"CSeq: 1 MESSAGE" in reply and status(reply) == 500
    # ... and bob, who exists, is now unavailable: 480 right away, not after a timeout.
    caller.send(build("MESSAGE", "sip:bob@" + DOMAIN, caller.address, body="hi", cseq=2),
                server)
    reply = caller.final(timeout=2)
    assert b"CSeq: 2 MESSAGE" in reply and status(reply) == 480
    caller.close()


def test_bindings_survive_a_restart(start_server):
    server = start_server(auth=NO_AUTH)
    peer = UDPPeer()
    assert status(_register_raw(peer, server, expires=3600)) == 200
    server.stop()
    server.start()
    reply = _query(server)
    assert status(reply) == 200
    assert 3500 < _remaining(reply, peer.address[1]) <= 3600
    # A UDP binding restored from disk is usable at once.
    caller = UDPPeer()
    caller.send(build("MESSAGE", "sip:carol@" + DOMAIN, caller.address, body="hi"), server)
    assert peer.recv().startswith(b"MESSAGE sip:carol@127.0.0.1:%d" % peer.address[1])
    peer.close()
    caller.close()


def test_bindings_survive_sigkill(start_server):
    server = start_server(auth=NO_AUTH)
    peer = UDPPeer()
    assert status(_register_raw(peer, server, expires=1800)) == 200
    time.sleep(0.5)  # the write-behind batch window is 50 ms
    server.proc.kill()
    server.proc.wait()
    server.start()
    reply = _query(server)
    assert 1700 < _remaining(reply, peer.address[1]) <= 1800
    peer.close()


def test_sipp_registration_over_tcp_then_gone(start_server, tmp_path):
    """SIPp registers bob over TCP and leaves, closing the connection. The binding stays (its
    Contact is reachable as written), but nobody listens there any more: the call fails at
    once (the refused connection is a 503 of that branch, a 500 upstream: §16.7, §16.9)
    instead of waiting for a timeout."""
    from tests.integration.sipclient import expecting, register
    from tests.integration.harness import start_sipp

    server = start_server()
    result = register(server, tmp_path, "bob", free_port(), transport="t1",
                      contact_params=";transport=tcp")
    assert result.ok, result.describe()
    started = time.monotonic()
    call = start_sipp(expecting(tmp_path, "uac_fail", 500), server.address, "-s", "bob",
                      "-key", "domain", DOMAIN, "-key", "caller", "carol@example.org",
                      cwd=tmp_path, timeout=20).wait()
    assert call.ok, call.describe()
    assert time.monotonic() - started < 5
