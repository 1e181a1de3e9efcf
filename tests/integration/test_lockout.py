"""Nobody can lock a user out: an attacker's failures refuse the attacker, not the victim.

Other 127.x source addresses stand for other clients. The clients here are small digest
clients on raw UDP sockets (the digest `uri` is the Request-URI, as RFC 3261 says)."""
from __future__ import annotations

import socket
import uuid

from reticulum.sip import digest, parse_auth
from tests.integration.sipclient import DOMAIN, build, status

ATTACKER = "127.0.0.2"
VICTIM = "127.0.0.3"
BYSTANDER = "127.0.0.4"


class DigestClient:
    """REGISTERs from one source address, answering the first MD5 challenge."""

    def __init__(self, ip: str):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(5)
        self.address = self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()

    def request(self, server, user, cseq, call_id, headers=()):
        contact = "Contact: <sip:%s@%s:%d>" % (user, self.address[0], self.address[1])
        data = build("REGISTER", "sip:" + DOMAIN, self.address, cseq=cseq, call_id=call_id,
                     from_="<sip:%s@%s>;tag=%s" % (user, DOMAIN, call_id[:8]),
                     to="<sip:%s@%s>" % (user, DOMAIN),
                     headers=[contact, "Expires: 60"] + list(headers))
        self.sock.sendto(data, (server.host, server.port))
        while True:
            answer = self.sock.recv(65535)
            if not answer.startswith(b"SIP/2.0 1"):
                return answer

    def challenge(self, server, user):
        """A fresh challenge for `user`: (status, challenge parameters or None)."""
        answer = self.request(server, user, 1, uuid.uuid4().hex)
        if status(answer) != 401:
            return status(answer), None
        for line in answer.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "www-authenticate":
                params = parse_auth(value.strip())[1]
                if params.get("algorithm", "MD5").upper() == "MD5":
                    return 401, params
        raise AssertionError("no MD5 challenge in %r" % answer)

    def answer(self, server, user, password, challenge):
        """Answer `challenge` (which may have been sent to someone else); the final answer."""
        uri = "sip:" + DOMAIN
        realm, nonce = challenge["realm"], challenge["nonce"]
        cnonce = uuid.uuid4().hex[:8]
        ha1 = digest.ha1(user, realm, password, "MD5")
        response = digest.response(ha1, "REGISTER", uri, nonce, "00000001", cnonce, "auth",
                                   "MD5")
        auth = ('Authorization: Digest username="%s", realm="%s", nonce="%s", uri="%s", '
                'response="%s", algorithm=MD5, cnonce="%s", qop=auth, nc=00000001, '
                'opaque="%s"' % (user, realm, nonce, uri, response, cnonce,
                                 challenge.get("opaque", "")))
        return self.request(server, user, 2, uuid.uuid4().hex, headers=[auth])

    def register(self, server, user, password):
        """Challenge and answer; the final status."""
        code, challenge = self.challenge(server, user)
        if challenge is None:
            return code
        return status(self.answer(server, user, password, challenge))


def test_an_attacker_cannot_lock_bob_out(start_server):
    server = start_server()  # the bundled defaults: 10 failures, 300 s
    attacker = DigestClient(ATTACKER)
    victim = DigestClient(VICTIM)
    try:
        answers = [attacker.register(server, "bob", "guess-%d" % i) for i in range(40)]
        assert answers[:10] == [401] * 10  # wrong passwords: challenged again
        assert set(answers[10:]) == {403}  # then refused
        # bob, from his own address, registers at once with the right password
        assert victim.register(server, "bob", "bob-secret") == 200
        # the attacker is refused even with the right password
        assert attacker.register(server, "bob", "bob-secret") == 403
        assert "Refusing source %s for 'bob'" % ATTACKER in server.read_log()
    finally:
        attacker.close()
        victim.close()


def test_a_nonce_serves_only_the_address_it_was_sent_to(start_server):
    server = start_server(auth={"max_failures": 3})
    attacker = DigestClient(ATTACKER)
    spoofed = DigestClient(BYSTANDER)
    try:
        code, challenge = attacker.challenge(server, "bob")
        assert code == 401
        # guesses with the attacker's nonce from another address are never checked: each
        # gets a fresh stale challenge and none counts against that address
        for i in range(10):
            answer = spoofed.answer(server, "bob", "guess-%d" % i, challenge)
            assert status(answer) == 401 and b"stale=true" in answer
        # not even the right password passes with a nonce sent elsewhere
        answer = spoofed.answer(server, "bob", "bob-secret", challenge)
        assert status(answer) == 401 and b"stale=true" in answer
        # with its own nonce, the right password is taken from that address
        assert spoofed.register(server, "bob", "bob-secret") == 200
        assert "authentication failed" not in server.read_log()
    finally:
        attacker.close()
        spoofed.close()
