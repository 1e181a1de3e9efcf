"""Attacks on the real server over real sockets: relaying through forged or pre-loaded Routes,
impersonating local users, spirals and reflection. Other 127.x addresses stand for other
hosts: the attacker sends from 127.0.0.5, a "foreign" server listens on 127.0.0.9 (UDP and
TCP), and each test asserts what must not happen there. Each also shows the listener would
have seen the request had the server been willing, so that none can pass by accident."""
from __future__ import annotations

import hashlib
import re
import socket
import time
import uuid

import pytest

from tests.integration.harness import free_port, run_sipp
from tests.integration.sipclient import DOMAIN, build, status

ATTACKER = "127.0.0.5"
FOREIGN = "127.0.0.9"
SOME_CALLER = "<sip:carol@example.org>;tag=c1"


class Peer:
    """A UDP socket of its own on some loopback address."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.address = self.sock.getsockname()

    def send(self, data: bytes, server) -> None:
        self.sock.sendto(data, (server.host, server.port))

    def recv(self, timeout: float = 5.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(65535)

    def final(self, timeout: float = 5.0) -> bytes:
        while True:
            data = self.recv(timeout)
            if not data.startswith(b"SIP/2.0 1"):
                return data

    def collect(self, seconds: float) -> list:
        """Every datagram that arrives within `seconds`."""
        got = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(65535))
            except socket.timeout:
                return got

    def close(self) -> None:
        self.sock.close()


class ForeignServer:
    """What a foreign host would receive: a UDP socket and a TCP listener on 127.0.0.9."""

    def __init__(self):
        self.port = free_port(FOREIGN)
        self.udp = Peer(FOREIGN, self.port)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((FOREIGN, self.port))
        self.tcp.listen(8)

    @property
    def hostport(self) -> str:
        return "%s:%d" % (FOREIGN, self.port)

    def udp_received(self, seconds: float) -> list:
        return self.udp.collect(seconds)

    def tcp_connected(self, seconds: float) -> bool:
        self.tcp.settimeout(seconds)
        try:
            conn, _ = self.tcp.accept()
        except socket.timeout:
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def foreign():
    server = ForeignServer()
    yield server
    server.close()


@pytest.fixture
def attacker():
    peer = Peer(ATTACKER)
    yield peer
    peer.close()


def _header(data: bytes, name: str) -> str:
    for line in data.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    raise AssertionError("no %s in %r" % (name, data))


def credentials(challenge: bytes, user: str, password: str, method: str, uri: str) -> str:
    """The Authorization/Proxy-Authorization line answering the first (MD5) challenge."""
    proxy = status(challenge) == 407
    value = _header(challenge, "Proxy-Authenticate" if proxy else "WWW-Authenticate")
    params = {k: (q if q else v) for k, q, v in
              re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)}
    assert params.get("algorithm", "MD5") == "MD5"

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    cnonce, nc = uuid.uuid4().hex[:8], "00000001"
    answer = md5("%s:%s:%s:%s:auth:%s" % (md5("%s:%s:%s" % (user, params["realm"], password)),
                                          params["nonce"], nc, cnonce,
                                          md5("%s:%s" % (method, uri))))
    return ('%s: Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
            'algorithm=MD5, qop=auth, nc=%s, cnonce="%s", opaque="%s"'
            % ("Proxy-Authorization" if proxy else "Authorization", user, params["realm"],
               params["nonce"], uri, answer, nc, cnonce, params.get("opaque", "")))


def register(server, peer, user, contacts, ruri=None, aor_host=None, expect=200):
    """user registers `contacts` (authenticated, raw socket); returns the final answer."""
    ruri = ruri or "sip:" + DOMAIN
    aor = "<sip:%s@%s>" % (user, aor_host or DOMAIN)
    call_id = uuid.uuid4().hex
    headers = ["Contact: " + ", ".join(contacts), "Expires: 600"]

    def attempt(cseq, extra=()):
        peer.send(build("REGISTER", ruri, peer.address, from_=aor + ";tag=r", to=aor,
                        call_id=call_id, cseq=cseq, headers=headers + list(extra)), server)
        return peer.final()

    challenge = attempt(1)
    assert status(challenge) == 401, challenge
    reply = attempt(2, [credentials(challenge, user, "%s-secret" % user, "REGISTER", ruri)])
    assert status(reply) == expect, reply
    return reply


def invite(ruri, local, from_=SOME_CALLER, to=None, headers=(), call_id=None, branch=None):
    return build("INVITE", ruri, local, from_=from_, to=to, headers=list(headers),
                 call_id=call_id, branch=branch,
                 body="v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                      "t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")


def ack_for(reply: bytes, ruri, local, call_id, branch) -> bytes:
    return build("ACK", ruri, local, from_=_header(reply, "From"), to=_header(reply, "To"),
                 call_id=call_id, branch=branch)


# -- 1. a forged Route in a made-up dialog -----------------------------------------------------


def test_forged_route_in_a_made_up_dialog_reaches_nobody(start_server, foreign, attacker):
    server = start_server()
    callee = Peer()
    register(server, callee, "bob", ["<sip:bob@127.0.0.1:%d>" % callee.address[1]])
    forged = ["<%s;lr>" % server.uri, "<%s;lr;rtok=AAAAAAAAAAAAAAAA>" % server.uri,
              "<sip:%s;lr>" % DOMAIN]
    for route in forged:
        for transport in ("", ";transport=tcp"):
            call_id = uuid.uuid4().hex
            attacker.send(build("MESSAGE", "sip:victim@%s%s" % (foreign.hostport, transport),
                                attacker.address, from_=SOME_CALLER,
                                to="<sip:victim@example.net>;tag=made-up",
                                headers=["Route: " + route], call_id=call_id,
                                body="spam"), server)
            assert status(attacker.final()) == 403
            # an ACK cannot be answered or challenged: it is dropped
            attacker.send(build("ACK", "sip:victim@%s%s" % (foreign.hostport, transport),
                                attacker.address, from_=SOME_CALLER,
                                to="<sip:victim@example.net>;tag=made-up",
                                headers=["Route: " + route], call_id=call_id), server)
    assert foreign.udp_received(1.0) == []
    assert not foreign.tcp_connected(0.5)
    assert attacker.collect(0.2) == []
    assert "in-dialog request without a valid route token" in server.read_log()

    # The same request inside a dialog the server record-routed does get through: the
    # callee (a local user) answers a call from the foreign host and sends it a MESSAGE.
    call_id = uuid.uuid4().hex
    caller_contact = "<sip:carol@%s>" % foreign.hostport
    foreign.udp.send(invite("sip:bob@" + DOMAIN, foreign.udp.address, call_id=call_id,
                            headers=["Contact: " + caller_contact]), server)
    forwarded = callee.recv()
    assert forwarded.startswith(b"INVITE ")
    record_route = _header(forwarded, "Record-Route")
    assert "rtok=" in record_route
    message = build("MESSAGE", "sip:carol@%s" % foreign.hostport, callee.address,
                    from_="<sip:bob@%s>;tag=b1" % DOMAIN, to=SOME_CALLER, call_id=call_id,
                    headers=["Route: " + record_route], body="in the dialog")
    callee.send(message, server)
    got = [d for d in foreign.udp_received(2.0) if d.startswith(b"MESSAGE ")]
    assert got and len(set(got)) == 1  # the MESSAGE (retransmitted: nobody answers it)
    callee.close()


# -- 2. a pre-loaded Route to a foreign hop ----------------------------------------------------


def test_preloaded_route_to_a_foreign_hop_is_not_followed(start_server, foreign, attacker):
    server = start_server()
    callee = Peer()
    register(server, callee, "bob", ["<sip:bob@127.0.0.1:%d>" % callee.address[1]])
    for route in ("<sip:%s;lr>" % foreign.hostport,
                  "<sip:%s;transport=tcp;lr>" % foreign.hostport,
                  "<%s;lr>, <sip:%s;transport=tcp;lr>" % (server.uri, foreign.hostport)):
        attacker.send(invite("sip:bob@" + DOMAIN, attacker.address,
                             headers=["Route: " + route]), server)
        reply = attacker.final()
        assert status(reply) == 403, reply
    assert foreign.udp_received(1.0) == []
    assert not foreign.tcp_connected(0.5)
    assert "next hop foreign and sender not authenticated" in server.read_log()

    # alice, authenticated, may send her request through the proxy she names
    alice = Peer()
    ruri = "sip:bob@" + DOMAIN
    call_id = uuid.uuid4().hex
    headers = ["Route: <sip:%s;transport=tcp;lr>" % foreign.hostport]
    alice.send(build("MESSAGE", ruri, alice.address, from_="<sip:alice@%s>;tag=a" % DOMAIN,
                     headers=headers, call_id=call_id), server)
    challenge = alice.final()
    alice.send(build("MESSAGE", ruri, alice.address, from_="<sip:alice@%s>;tag=a" % DOMAIN,
                     cseq=2, call_id=call_id,
                     headers=headers + [credentials(challenge, "alice", "alice-secret",
                                                    "MESSAGE", ruri)]), server)
    assert foreign.tcp_connected(5.0)
    alice.close()
    callee.close()


# -- 3. impersonation --------------------------------------------------------------------------


def test_no_spelling_of_a_local_user_goes_unchallenged(start_server, attacker):
    server = start_server()
    callee = Peer()
    register(server, callee, "bob", ["<sip:bob@127.0.0.1:%d>" % callee.address[1]])
    spellings = ["alice@reticulum.local.", "alice@RETICULUM.LOCAL", "ALICE@Reticulum.Local.",
                 "alice@127.0.0.1", "alice@" + server.address, "alice@localhost:%d" % server.port]
    for spelling in spellings:
        attacker.send(build("MESSAGE", "sip:bob@" + DOMAIN, attacker.address,
                            from_="<sip:%s>;tag=x" % spelling, body="I am alice"), server)
        reply = attacker.final()
        assert status(reply) == 407, (spelling, reply)  # ALICE: another name, same domain
    # in a made-up dialog too
    attacker.send(build("MESSAGE", "sip:bob@127.0.0.1:%d" % callee.address[1], attacker.address,
                        from_="<sip:alice@%s>;tag=x" % DOMAIN, to="<sip:bob@%s>;tag=y" % DOMAIN,
                        headers=["Route: <%s;lr>" % server.uri], body="I am alice"), server)
    assert status(attacker.final()) == 407
    assert callee.collect(1.0) == []  # bob heard nothing from "alice"
    # while a stranger who says who he is does reach bob (the callee socket works)
    attacker.send(build("MESSAGE", "sip:bob@" + DOMAIN, attacker.address, body="hello"), server)
    assert callee.recv().startswith(b"MESSAGE ")
    callee.close()


def test_a_phone_that_names_the_server_by_its_address(start_server, tmp_path):
    """REGISTER to sip:<our address>:<port> and to sip:<our address> (SIPp at its defaults)
    binds alice@<first domain>; a call to alice@reticulum.local reaches both phones."""
    server = start_server()
    ports = []
    for domain in (server.address, server.host):
        port = free_port()
        result = run_sipp("register", server.address, "-s", "alice", "-au", "alice",
                          "-ap", "alice-secret", "-key", "domain", domain,
                          "-key", "expires", "600", "-key", "contact_params", "",
                          "-key", "contact_port", str(port), local_port=port, cwd=tmp_path,
                          name="reg-%s" % domain.replace(":", "-"), timeout=15)
        assert result.ok, result.describe()
        ports.append(port)
    phones = [Peer(port=port) for port in ports]
    caller = Peer()
    caller.send(build("MESSAGE", "sip:alice@" + DOMAIN, caller.address, body="hi"), server)
    for phone, port in zip(phones, ports):
        assert phone.recv().startswith(b"MESSAGE sip:alice@127.0.0.1:%d " % port)
    for peer in phones + [caller]:
        peer.close()


# -- 5. bounded forking ------------------------------------------------------------------------


def _count_invites(server, call_id: str) -> int:
    return sum(1 for line in server.read_log().splitlines()
               if "<- INVITE " + call_id in line)


def _wait_until_stable(count, timeout: float = 30.0) -> int:
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 2.0:
            break
        time.sleep(0.25)
    return last


def test_contacts_pointing_at_the_server_are_refused(start_server):
    server = start_server()
    phone = Peer()
    contacts = ["<sip:alice@%s;x=%d>" % (server.address, i) for i in range(5)]
    reply = register(server, phone, "alice", contacts, expect=403)
    assert b"Contact points to this server" in reply
    for contact in ("<sip:alice@localhost:%d>" % server.port, "<sip:alice@127.0.0.1:%d;"
                    "transport=tcp>" % server.port):
        assert b"Contact points" in register(server, phone, "alice", [contact], expect=403)
    caller = Peer()
    call_id = uuid.uuid4().hex
    caller.send(invite("sip:alice@" + DOMAIN, caller.address, call_id=call_id), server)
    assert status(caller.final()) == 480  # nobody there: no spiral
    assert _wait_until_stable(lambda: _count_invites(server, call_id)) == 1
    phone.close()
    caller.close()


def test_a_spiral_between_two_servers_stays_bounded(start_server):
    """alice's five contacts at server A point at server B and hers at B point back at A:
    one INVITE would fan out 5 x 5 x ... until loop detection stops each path. Max-Breadth
    divides the breadth at every pass instead."""
    a = start_server(domains=["a.test"])
    b = start_server(domains=["b.test"])
    phone = Peer()
    # (;transport=tcp: a Contact that names another transport is reached as written)
    register(a, phone, "alice", ["<sip:alice@%s;transport=tcp;i=%d>" % (b.address, i)
                                 for i in range(5)], ruri="sip:a.test", aor_host="a.test")
    register(b, phone, "alice", ["<sip:alice@%s;transport=tcp;i=%d>" % (a.address, i)
                                 for i in range(5)], ruri="sip:b.test", aor_host="b.test")
    caller = Peer(ATTACKER)
    call_id = uuid.uuid4().hex
    caller.send(invite("sip:alice@a.test", caller.address, call_id=call_id), a)
    caller.final(timeout=60)

    total = _wait_until_stable(lambda: _count_invites(a, call_id) + _count_invites(b, call_id))
    # the attacker's one INVITE plus at most 60 concurrent branches on each of a few passes;
    # without Max-Breadth the same spiral produced well over a thousand
    print("INVITEs seen by the two servers:", total)
    assert total <= 400, total
    phone.close()
    caller.close()


def test_max_contacts_refuses_one_more_and_keeps_the_others(start_server):
    server = start_server(registrar={"max_contacts": 3})
    phone = Peer()
    contacts = ["<sip:alice@127.0.0.1:%d>" % (20000 + i) for i in range(3)]
    register(server, phone, "alice", contacts)
    reply = register(server, phone, "alice", ["<sip:alice@127.0.0.1:20009>"], expect=503)
    assert b"Too many registered contacts" in reply
    listed = register(server, phone, "alice", contacts[:1])  # a refresh still works
    assert listed.count(b"<sip:alice@127.0.0.1:2000") == 3 and b":20009" not in listed
    phone.close()


# -- 6. no reflection --------------------------------------------------------------------------


def _drain(peer) -> list:
    return peer.collect(0.2)


def test_one_answer_per_request_to_a_spoofable_source(start_server):
    server = start_server()
    attackers = [Peer(ATTACKER), Peer("127.0.0.6"), Peer("127.0.0.7")]
    requests = [
        # a "local user" without credentials: 407
        invite("sip:bob@" + DOMAIN, attackers[0].address, from_="<sip:alice@%s>;tag=x" % DOMAIN,
               branch="z9hG4bK-refl-1"),
        # relaying for a stranger: 403
        invite("sip:someone@example.net", attackers[1].address, branch="z9hG4bK-refl-2"),
        # nobody of that name: 404
        invite("sip:nobody@" + DOMAIN, attackers[2].address, branch="z9hG4bK-refl-3"),
    ]
    for peer, data in zip(attackers, requests):
        peer.send(data, server)
    time.sleep(4.0)  # Timer G would have resent at 0.5, 1.5 and 3.5 s
    firsts = []
    for peer in attackers:
        got = _drain(peer)
        assert len(got) == 1, got
        assert status(got[0]) in (403, 404, 407)
        firsts.append(got[0])
    # a retransmission of the request gets the same answer once more...
    for peer, data in zip(attackers, requests):
        peer.send(data, server)
    time.sleep(1.5)
    for peer, first in zip(attackers, firsts):
        again = _drain(peer)
        assert len(again) == 1 and status(again[0]) == status(first)
        assert _header(again[0], "To") == _header(first, "To")
    # ... and the ACK for it is absorbed: neither forwarded nor answered
    for peer, data, first in zip(attackers, requests, firsts):
        branch = re.search(rb"branch=([^;\r]+)", data).group(1).decode()
        peer.send(ack_for(first, "sip:bob@" + DOMAIN, peer.address, _header(data, "Call-ID"),
                          branch), server)
    time.sleep(1.0)
    for peer in attackers:
        assert _drain(peer) == []
        peer.close()
    assert "Dropping ACK" not in server.read_log()
