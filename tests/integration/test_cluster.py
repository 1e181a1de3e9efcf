"""Two nodes on two loopback addresses sharing one real Redis (redis-server, append-only
file): registrations made on one are found on the other, a WebSocket phone held by node 1 is
called through node 1, node 1 dies, Redis restarts and goes away."""
from __future__ import annotations

import time
import uuid
from typing import Optional

import pytest

from reticulum.sip import Request
from tests.integration.harness import free_port, start_sipp
from tests.integration.sipclient import DOMAIN, UDPPeer, build, register, status
from tests.integration.test_ws import SDP, WSPhone
from tests.redisserver import RedisServer

NODE1, NODE2 = "127.0.0.31", "127.0.0.32"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def cluster(start_server, redis_server, request):
    """start(host, name, **overrides) -> a node of a cluster of this test's own (key prefix)."""
    prefix = "t-%s:" % uuid.uuid4().hex[:8]

    def start(host: str, name: str, ws: bool = False, **overrides):
        listen = {}
        if ws:
            ws_port = free_port(host)
            listen["ws"] = ["%s:%d" % (host, ws_port)]
        node = start_server(host=host, listen=listen,
                            cluster={"redis": redis_server.url, "node": name, "prefix": prefix},
                            users={"carol": "carol-secret", "dave": "dave-secret"}, **overrides)
        if ws:
            node.ws_url = "ws://%s:%d/" % (host, ws_port)
        return node

    start.prefix = prefix
    return start


def wait_for_peers(*nodes, timeout: float = 20.0) -> None:
    """Each node has seen every other one's heartbeat (it trusts them from then on)."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        others = {other.host for other in nodes if other is not node}
        while not all("cluster: peers" in line and other in line
                      for other in others for line in [_last_peers(node)]):
            assert time.monotonic() < deadline, "%s never saw %s" % (node, others)
            time.sleep(0.1)


def _last_peers(node) -> str:
    lines = [line for line in node.read_log().splitlines() if "cluster: peers" in line]
    return lines[-1] if lines else ""


def callee(tmp_path, port: int, scenario: str = "uas"):
    return start_sipp(scenario, None, local_port=port, cwd=tmp_path, timeout=40,
                      name="%s-%d" % (scenario, port))


def foreign_call(node, tmp_path, user: str):
    """carol@example.org (no credentials needed) calls user@reticulum.local through node."""
    return start_sipp("uac", node.address, "-s", user, "-key", "domain", DOMAIN,
                      "-key", "caller", "carol@example.org", "-d", "200", cwd=tmp_path,
                      timeout=30)


def local_call(node, tmp_path, callee_user: str, port: int):
    """alice, registered on node from `port`, calls with SIPp's own [authentication]."""
    return start_sipp("uac_auth", node.address, "-s", callee_user, "-au", "alice", "-ap",
                      "alice-secret", "-key", "domain", DOMAIN, "-key", "caller",
                      "alice@" + DOMAIN, "-d", "500", local_port=port, cwd=tmp_path, timeout=30)


def reaches(node, user: str, peer: UDPPeer, timeout: float = 0.3) -> bool:
    """Does an OPTIONS for user@domain sent to node arrive at peer (its registered Contact)?"""
    asker = UDPPeer()
    try:
        asker.send(build("OPTIONS", "sip:%s@%s" % (user, DOMAIN), asker.address), node)
        try:
            data = peer.recv(timeout)
        except OSError:
            return False
        return data.startswith(b"OPTIONS ")
    finally:
        asker.close()


def answer(request: Request, code: int, reason: str, contact: str, tag: str,
           body: str = "") -> str:
    lines = ["SIP/2.0 %d %s" % (code, reason)]
    lines += ["Via: %s" % v for v in request.get_all("Via")]
    lines += ["Record-Route: %s" % v for v in request.get_all("Record-Route")]
    to = request.get("To")
    lines += ["From: %s" % request.get("From"),
              "To: %s" % (to if ";tag=" in to else "%s;tag=%s" % (to, tag)),
              "Call-ID: %s" % request.call_id, "CSeq: %s" % request.get("CSeq"),
              "Contact: <%s;ob>" % contact]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append("Content-Length: %d" % len(body.encode()))
    return "\r\n".join(lines) + "\r\n\r\n" + body


def answer_call(phone: WSPhone, timeout: float = 15.0) -> Request:
    """The WebSocket phone answers an INVITE, takes the ACK and the BYE."""
    invite = phone.request_of("INVITE", timeout=timeout)
    tag = uuid.uuid4().hex[:8]
    phone.send(answer(invite, 180, "Ringing", phone.contact, tag))
    phone.send(answer(invite, 200, "OK", phone.contact, tag, SDP))
    assert phone.request_of("ACK", timeout=timeout).call_id == invite.call_id
    bye = phone.request_of("BYE", timeout=timeout)
    phone.send(answer(bye, 200, "OK", phone.contact, tag))
    return invite


# ---------------------------------------------------------------------------------------------


def test_a_registration_on_node_1_is_found_on_node_2_within_a_second(cluster, tmp_path):
    node1, node2 = cluster(NODE1, "n1"), cluster(NODE2, "n2")
    phone = UDPPeer()
    try:
        assert register(node1, tmp_path, "bob", phone.address[1], source_port=free_port()).ok
        registered = time.monotonic()
        while not reaches(node2, "bob", phone, timeout=0.1):
            assert time.monotonic() - registered < 1.0, "node 2 did not know bob within 1 s"
        # and the other way round, through node 2's registrar
        other = UDPPeer()
        try:
            assert register(node2, tmp_path, "alice", other.address[1],
                            source_port=free_port()).ok
            deadline = time.monotonic() + 1.0
            while not reaches(node1, "alice", other, timeout=0.1):
                assert time.monotonic() < deadline
        finally:
            other.close()
    finally:
        phone.close()


def test_a_websocket_phone_on_node_1_is_called_from_a_udp_phone_on_node_2(cluster, tmp_path):
    node1 = cluster(NODE1, "n1", ws=True)
    node2 = cluster(NODE2, "n2")
    bob = WSPhone(node1.ws_url, "bob")
    try:
        assert bob.register().status == 200
        alice_port = free_port()
        assert register(node2, tmp_path, "alice", alice_port).ok
        wait_for_peers(node1, node2)
        uac = local_call(node2, tmp_path, "bob", alice_port)
        invite = answer_call(bob)
        result = uac.wait()
        assert result.ok, result.describe()
        hosts = [via.host for via in invite.vias]
        assert hosts[0] == NODE1 and NODE2 in hosts, hosts  # node 2 -> node 1 -> the phone
        assert "transport=ws" in str(invite.record_routes[0].uri)
        # what node 2 may pass on unchallenged, a phone sending the same straight to node 1
        # may not: it is challenged like any local caller
        stranger = UDPPeer()
        try:
            stranger.send(build("INVITE", bob.contact, stranger.address, body=SDP,
                                from_="<sip:alice@%s>;tag=s1" % DOMAIN,
                                to="<sip:bob@%s>" % DOMAIN), node1)
            assert status(stranger.final()) == 407
        finally:
            stranger.close()
    finally:
        bob.close()


def test_killing_node_1_keeps_node_2_bindings_and_calls(cluster, tmp_path):
    node1 = cluster(NODE1, "n1", ws=True)
    node2 = cluster(NODE2, "n2")
    bob = WSPhone(node1.ws_url, "bob")
    dave = UDPPeer()  # registered through node 1, reached at its Contact: not node 1's to keep
    try:
        assert bob.register().status == 200
        assert register(node1, tmp_path, "dave", dave.address[1], source_port=free_port()).ok
        carol_port = free_port()
        assert register(node2, tmp_path, "carol", carol_port, source_port=free_port()).ok
        node1.proc.kill()  # no goodbye: its heartbeat just stops
        node1.proc.wait(10)
        # node 1's WebSocket binding goes once its heartbeat has lapsed; dave's stays
        asker = UDPPeer()
        try:
            deadline = time.monotonic() + 40
            while True:
                asker.send(build("OPTIONS", "sip:bob@%s" % DOMAIN, asker.address), node2)
                try:
                    got = asker.final(timeout=1)  # sent on to the dead node 1: no answer
                except OSError:
                    got = b"SIP/2.0 000 none"
                if status(got) in (404, 480):
                    break
                assert time.monotonic() < deadline, got
        finally:
            asker.close()
        assert reaches(node2, "dave", dave, timeout=2.0)
        uas = callee(tmp_path, carol_port)
        uac = foreign_call(node2, tmp_path, "carol").wait()
        assert uac.ok, uac.describe()
        assert uas.wait().ok
    finally:
        bob.close()
        dave.close()


def test_restarting_redis_loses_no_binding(cluster, redis_server, tmp_path):
    node1, node2 = cluster(NODE1, "n1"), cluster(NODE2, "n2")
    bob_port = free_port()
    assert register(node1, tmp_path, "bob", bob_port, source_port=free_port()).ok
    key = cluster.prefix + "b:sip:bob@" + DOMAIN
    deadline = time.monotonic() + 10
    while redis_server.client().hlen(key) != 1:  # written behind, within milliseconds
        assert time.monotonic() < deadline
        time.sleep(0.05)
    redis_server.kill()  # SIGKILL: only what the append-only file holds comes back
    redis_server.start()
    assert redis_server.client().hlen(key) == 1
    # a node started now learns bob from Redis; the running ones take REGISTER again
    node3 = cluster("127.0.0.33", "n3")
    uas = callee(tmp_path, bob_port)
    uac = foreign_call(node3, tmp_path, "bob").wait()
    assert uac.ok, uac.describe()
    assert uas.wait().ok
    deadline = time.monotonic() + 20
    while not register(node2, tmp_path, "carol", free_port(), source_port=free_port()).ok:
        assert time.monotonic() < deadline, "node 2 did not take REGISTER after Redis returned"
        time.sleep(0.5)


def test_without_redis_register_gets_503_and_cached_calls_still_route(cluster, redis_server,
                                                                       tmp_path):
    node = cluster(NODE2, "n2")
    bob_port = free_port()
    assert register(node, tmp_path, "bob", bob_port, source_port=free_port()).ok
    redis_server.stop()
    try:
        peer = UDPPeer()
        try:
            deadline = time.monotonic() + 20
            while True:
                peer.send(build("REGISTER", "sip:" + DOMAIN, peer.address,
                                from_="<sip:carol@%s>;tag=r1" % DOMAIN,
                                to="<sip:carol@%s>" % DOMAIN,
                                headers=["Contact: <sip:carol@127.0.0.1:%d>" % peer.address[1]]),
                          node)
                final = peer.final()
                if status(final) == 503:
                    break
                assert time.monotonic() < deadline, final
                time.sleep(0.2)
            assert b"\r\nRetry-After: " in final, final
        finally:
            peer.close()
        uas = callee(tmp_path, bob_port)
        uac = foreign_call(node, tmp_path, "bob").wait()
        assert uac.ok, uac.describe()
        assert uas.wait().ok
    finally:
        redis_server.start()
    deadline = time.monotonic() + 20
    while not register(node, tmp_path, "carol", free_port(), source_port=free_port()).ok:
        assert time.monotonic() < deadline, "REGISTER still refused after Redis returned"
        time.sleep(0.5)


def test_two_workers_share_the_ports_and_the_bindings(cluster, tmp_path):
    """[server] workers = 2: two processes on the same UDP/TCP ports (SO_REUSEPORT), each
    with a UDP port of its own in its Via; calls from several phones all connect."""
    node = cluster(NODE1, "w", server={"workers": 2})
    deadline = time.monotonic() + 30
    while node.read_log().count("Cluster node w.w") < 2:
        assert time.monotonic() < deadline, "the second worker did not start"
        time.sleep(0.1)
    bob_port = free_port()
    assert register(node, tmp_path, "bob", bob_port, source_port=free_port()).ok
    uas = start_sipp("uas", None, "-m", "6", local_port=bob_port, cwd=tmp_path, timeout=60,
                     name="uas-many")
    time.sleep(1.0)  # the other worker heard of bob (within a second)
    for _ in range(6):  # each SIPp sends from a port of its own: the kernel spreads them
        uac = foreign_call(node, tmp_path, "bob").wait()
        assert uac.ok, uac.describe()
    result = uas.wait()
    assert result.ok, result.describe()
    vias = [line for line in result.messages.splitlines() if line.startswith("Via: SIP/2.0/UDP %s:" % NODE1)]
    assert vias and all(":%d;" % node.port not in v for v in vias), vias[:3]  # own ports


def test_a_nonce_one_node_issued_is_good_on_the_other(cluster, tmp_path):
    """The nonce secret is the cluster's: answer node 1's challenge to node 2."""
    from reticulum.sip import digest, parse, parse_auth

    node1, node2 = cluster(NODE1, "n1"), cluster(NODE2, "n2")
    assert (node1.state_dir / "nonce.secret").read_text() == \
        (node2.state_dir / "nonce.secret").read_text()
    phone = UDPPeer()
    try:
        call_id = uuid.uuid4().hex
        ruri = "sip:" + DOMAIN

        def register_to(node, cseq, extra=()):
            phone.send(build("REGISTER", ruri, phone.address, cseq=cseq, call_id=call_id,
                             from_="<sip:alice@%s>;tag=r1" % DOMAIN,
                             to="<sip:alice@%s>" % DOMAIN,
                             headers=["Contact: <sip:alice@127.0.0.1:%d>" % phone.address[1]]
                             + list(extra)), node)
            return phone.final()

        challenge = parse(register_to(node1, 1))
        assert challenge.status == 401
        _, params = parse_auth(challenge.get("WWW-Authenticate"))
        ha1 = digest.ha1("alice", params["realm"], "alice-secret", "MD5")
        response = digest.response(ha1, "REGISTER", ruri, params["nonce"], "00000001", "c0ffee",
                                   "auth", "MD5")
        value = ('Digest username="alice", realm="%s", nonce="%s", uri="%s", response="%s", '
                 'algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee", opaque="%s"'
                 % (params["realm"], params["nonce"], ruri, response, params.get("opaque", "")))
        assert status(register_to(node2, 2, ["Authorization: " + value])) == 200
    finally:
        phone.close()
