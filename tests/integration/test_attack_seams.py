"""Attacks on the seams between features, against the real server over sockets, in the bundled
shape (admin on loopback, webphone on the ws port): the admin token, DNS triggered by a
stranger, a route token carried to another Call-ID, and paths out of the webphone's folder."""
from __future__ import annotations

import socket
import time
import uuid

import pytest

from tests.integration.harness import free_port
from tests.integration.sipclient import DOMAIN, build, status
from tests.integration.test_admin import TOKEN, http, raw_handshake, wait_http
from tests.integration.test_relay import (ATTACKER, SOME_CALLER, Peer, _header, attacker,  # noqa: F401
                                          credentials, foreign, invite, register)


# -- the admin token --------------------------------------------------------------------------


def test_the_admin_token_guards_every_path_and_never_reaches_the_log(start_server):
    port = free_port()
    server = start_server(listen={"admin": ["127.0.0.1:%d" % port]}, admin={"token": TOKEN},
                          log={"messages": "full"})
    wait_http(port)
    wrong = "wrong-token-must-not-be-logged-0123"
    paths = ["/", "/index.html", "/api", "/api/", "/api/status", "/api/registrations?user=alice",
             "/api/calls", "/api/nothing", "/metrics", "/metrics/", "/events", "/events/x",
             "/static/", "/static/app.js", "/static/../api/status", "/%2e%2e/api/status",
             "/nothing", "/healthz/x", "//api/status"]
    for path in paths:
        for token in (None, wrong, "", TOKEN.upper()):
            code, _, body = http(port, path, token=token)
            assert code == 401, (path, token, code, body[:200])
            code, _, _ = http(port, path, token=token or "x", header=False)
            assert code == 401, (path, "query", code)
    # the right token in a query string works, and is not written anywhere
    assert http(port, "/api/status", header=False)[0] == 200
    assert http(port, "/nothing", header=False)[0] == 404
    for path in ("/events?token=" + TOKEN, "/events?token=" + wrong, "/events"):
        raw_handshake(port, protocol=None, path=path)
    log = server.read_log()
    assert TOKEN not in log and wrong not in log
    assert "GET /" not in log  # no access log on the admin port


# -- DNS for strangers ------------------------------------------------------------------------


class Nameserver(Peer):
    """A UDP socket standing for the configured nameserver: it only counts what is asked."""

    def __init__(self):
        super().__init__()
        self.port = self.address[1]

    queries = Peer.collect


def test_a_stranger_makes_the_server_look_up_nothing(start_server, attacker):  # noqa: F811
    dns = Nameserver()
    server = start_server(dns={"nameservers": ["127.0.0.1:%d" % dns.port], "timeout": 1})
    try:
        sent = []
        # a foreign Request-URI, a pre-loaded Route, a made-up dialog, other methods
        sent.append(invite("sip:dave@victim-a.example", attacker.address))
        sent.append(invite("sip:bob@" + DOMAIN, attacker.address,
                           headers=["Route: <sip:victim-b.example;lr>"]))
        sent.append(build("MESSAGE", "sip:dave@victim-c.example", attacker.address,
                          to="<sip:dave@victim-c.example>;tag=made-up", body="x",
                          headers=["Route: <%s;lr>" % server.uri]))
        sent.append(build("OPTIONS", "sip:victim-d.example", attacker.address))
        sent.append(build("SUBSCRIBE", "sips:dave@victim-e.example", attacker.address,
                          headers=["Event: presence"]))
        for data in sent:
            attacker.send(data, server)
            reply = attacker.final()
            assert status(reply) in (403, 404, 405, 416, 481, 200), reply
        assert dns.queries(1.5) == []
        # the same INVITE from alice, authenticated, is looked up: the test can see a query
        alice = Peer()
        ruri = "sip:dave@victim-a.example"
        call_id = uuid.uuid4().hex
        alice_from = "<sip:alice@%s>;tag=a" % DOMAIN
        alice.send(invite(ruri, alice.address, from_=alice_from, call_id=call_id), server)
        challenge = alice.final()
        assert status(challenge) == 407
        alice.send(invite(ruri, alice.address, from_=alice_from, call_id=call_id, headers=[
            credentials(challenge, "alice", "alice-secret", "INVITE", ruri)]).replace(
            b"CSeq: 1 INVITE", b"CSeq: 2 INVITE"), server)
        assert dns.queries(5.0) != []
        alice.close()
    finally:
        dns.close()


# -- a route token on another Call-ID ---------------------------------------------------------


def _stranger_calls_bob(server, attacker):
    """bob registers from a UDP peer of his own and the attacker calls him; returns bob's
    peer, the Call-ID and the INVITE as the server forwarded it to bob."""
    callee = Peer()
    register(server, callee, "bob", ["<sip:bob@127.0.0.1:%d>" % callee.address[1]])
    call_id = uuid.uuid4().hex
    attacker.send(invite("sip:bob@" + DOMAIN, attacker.address, call_id=call_id,
                         headers=["Contact: <sip:carol@%s:%d>" % attacker.address]), server)
    return callee, call_id, callee.recv()


def test_a_route_token_on_another_call_id_grants_nothing(start_server, foreign, attacker):  # noqa: F811
    server = start_server()
    # the attacker calls bob (strangers may) and learns the Record-Route of that dialog
    callee, _, forwarded = _stranger_calls_bob(server, attacker)
    record_route = _header(forwarded, "Record-Route")
    assert "rtok=" in record_route
    # the token on another Call-ID, to a foreign host, over UDP and TCP
    for transport in ("", ";transport=tcp"):
        other = uuid.uuid4().hex
        attacker.send(build("MESSAGE", "sip:victim@%s%s" % (foreign.hostport, transport),
                            attacker.address, from_=SOME_CALLER,
                            to="<sip:victim@example.net>;tag=t1", call_id=other, body="spam",
                            headers=["Route: " + record_route]), server)
        assert status(attacker.final()) == 403
    assert foreign.udp_received(1.0) == []
    assert not foreign.tcp_connected(0.5)
    callee.close()


# -- the webphone's folder --------------------------------------------------------------------


def _get(port: int, target: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
                      % (target, port)).encode("latin-1"))
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
    return data


def test_webphone_paths_stay_in_its_folder(start_server):
    ws = free_port()
    server = start_server(listen={"ws": ["127.0.0.1:%d" % ws]})
    secret = server.config_path.read_text()
    assert "alice-secret" in secret
    wait_http_ok = time.monotonic() + 15
    while not _get(ws, "/").startswith(b"HTTP/1.1 200"):
        assert time.monotonic() < wait_http_ok
        time.sleep(0.1)
    config = str(server.config_path)
    targets = [
        "/../../../setup.cfg", "/%2e%2e/%2e%2e/%2e%2e/setup.cfg", "/..%2f..%2f..%2fsetup.cfg",
        "/%2e%2e%2f%2e%2e%2f__init__.py", "/index.html/../../__init__.py", "/.%2e/build.sh",
        "/..%5c..%5c..%5csetup.cfg", "/jssip.min.js%00.html", "//etc/passwd",
        "/" + config, "/%2f" + config.lstrip("/"), "/..%252f..%252fsetup.cfg",
        "/../../../../../../../../../.." + config, "http://127.0.0.1/../../../setup.cfg",
        "/.git/config", "/%2e/index.html", "/build.sh", "/__init__.py",
    ]
    for target in targets:
        reply = _get(ws, target)
        assert reply.split(b" ", 2)[1] in (b"400", b"404"), (target, reply[:300])
        assert b"alice-secret" not in reply and b"[metadata]" not in reply \
            and b"root:" not in reply and b"import " not in reply, target
    assert _get(ws, "/").startswith(b"HTTP/1.1 200")


def test_a_stranger_in_a_dialog_cannot_relay_to_a_third_host(start_server, foreign, attacker):  # noqa: F811
    """A stranger may call bob; bob's phone rings (a 180 with the Record-Route, as phones
    send). With the token of that Call-ID the stranger must still reach only bob, not any
    host it names."""
    server = start_server()
    callee, call_id, forwarded = _stranger_calls_bob(server, attacker)
    ringing = "\r\n".join(
        ["SIP/2.0 180 Ringing"]
        + ["%s: %s" % (name, _header(forwarded, name)) for name in ("Via", "From", "Call-ID",
                                                                    "CSeq", "Record-Route")]
        + ["To: %s;tag=bob1" % _header(forwarded, "To"),
           "Contact: <sip:bob@127.0.0.1:%d>" % callee.address[1], "Content-Length: 0", "", ""])
    callee.send(ringing.replace("Via: " + _header(forwarded, "Via"),
                                "Via: " + ", ".join(_vias(forwarded))).encode(), server)
    got = attacker.recv()
    while not got.startswith(b"SIP/2.0 180"):
        got = attacker.recv()
    record_route = _header(got, "Record-Route")
    assert "rtok=" in record_route
    attacker.send(build("MESSAGE", "sip:victim@%s" % foreign.hostport, attacker.address,
                        from_=_header(got, "From"), to=_header(got, "To"), call_id=call_id,
                        cseq=2, body="spam", headers=["Route: " + record_route]), server)
    assert foreign.udp_received(2.0) == []
    callee.close()


def _vias(data: bytes) -> list:
    return [line.partition(":")[2].strip() for line in data.decode().split("\r\n")
            if line.lower().startswith("via:")]
