"""SIP over WebSocket through the real server: a WebSocket phone (autobahn client,
tests/transport/test_ws.py) registers, calls and is called by SIPp over UDP."""
from __future__ import annotations

import time
import uuid
from typing import List, Optional, Sequence, Tuple

import pytest

from reticulum.sip import Request, Response, parse, parse_auth
from reticulum.sip import digest
from tests.integration.harness import free_port, start_sipp
from tests.integration.sipclient import DOMAIN, UDPPeer, build, register, status
from tests.transport.test_ws import WSClient

SDP = (
    "v=0\r\n"
    "o=- 1 1 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)


class WSPhone:
    """A SIP user agent over one WebSocket, the way a browser is one (RFC 7118):
    its Contact and Via name a made-up ``.invalid`` host, so it can only be
    reached back over its own WebSocket."""

    def __init__(self, url: str, user: str, password: Optional[str] = None, cafile: Optional[str] = None) -> None:
        self.url = url
        self.ws = WSClient(url, cafile=cafile)
        assert self.ws.opened.is_set(), self.ws.close_reason
        self.user = user
        self.password = password or "%s-secret" % user
        self.transport = "WSS" if url.startswith("wss:") else "WS"
        self.host = uuid.uuid4().hex[:10] + ".invalid"
        self.contact = "sip:%s@%s;transport=%s" % (uuid.uuid4().hex[:8], self.host, self.transport.lower())
        self.aor = "sip:%s@%s" % (user, DOMAIN)
        self.tag = uuid.uuid4().hex[:8]
        self.inbox: List[object] = []

    # -- wire

    def request(self, method: str, ruri: str, cseq: int, call_id: str, to: Optional[str] = None,
                headers: Sequence[str] = (), body: str = "", from_tag: Optional[str] = None,
                branch: Optional[str] = None) -> str:
        lines = [
            "%s %s SIP/2.0" % (method, ruri),
            "Via: SIP/2.0/%s %s;branch=%s" % (self.transport, self.host, branch or "z9hG4bK" + uuid.uuid4().hex),
            "Max-Forwards: 70",
            "From: <%s>;tag=%s" % (self.aor, from_tag or self.tag),
            "To: %s" % (to or "<%s>" % ruri),
            "Call-ID: %s" % call_id,
            "CSeq: %d %s" % (cseq, method),
            # like JsSIP: the dialog Contact carries RFC 5626 "ob", the registered one not
            "Contact: <%s>" % (self.contact if method == "REGISTER" else self.contact + ";ob"),
        ]
        lines.extend(headers)
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append("Content-Length: %d" % len(body.encode()))
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def send(self, text: str) -> None:
        self.ws.send(text.encode())

    def recv(self, timeout: float = 5.0):
        if self.inbox:
            return self.inbox.pop(0)
        return parse(self.ws.recv(timeout))

    def wait(self, pred, timeout: float = 5.0):
        """The first message matching pred; others are kept for later."""
        for m in self.inbox:
            if pred(m):
                self.inbox.remove(m)
                return m
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no matching SIP message; kept: %r" % ([str(m.to_bytes()[:60]) for m in self.inbox],))
            m = parse(self.ws.recv(left))
            if pred(m):
                return m
            self.inbox.append(m)

    def final(self, method: str, timeout: float = 5.0) -> Response:
        return self.wait(lambda m: isinstance(m, Response) and m.status >= 200 and m.cseq.method == method, timeout)

    def request_of(self, method: str, timeout: float = 5.0) -> Request:
        return self.wait(lambda m: isinstance(m, Request) and m.method == method, timeout)

    # -- digest

    def credentials(self, challenge: Response, method: str, uri: str) -> Tuple[str, str]:
        if challenge.status == 401:
            name, header = "WWW-Authenticate", "Authorization"
        else:
            name, header = "Proxy-Authenticate", "Proxy-Authorization"
        offers = [parse_auth(v) for v in challenge.get_all(name)]
        scheme, params = next((o for o in offers if (o[1].get("algorithm") or "MD5").upper() == "MD5"), offers[0])
        algorithm = params.get("algorithm") or "MD5"
        cnonce = uuid.uuid4().hex[:12]
        qop = "auth" if "auth" in (params.get("qop") or "").split(",") else None
        h1 = digest.ha1(self.user, params["realm"], self.password, algorithm)
        resp = digest.response(h1, method, uri, params["nonce"], "00000001", cnonce, qop, algorithm)
        parts = ['username="%s"' % self.user, 'realm="%s"' % params["realm"], 'nonce="%s"' % params["nonce"],
                 'uri="%s"' % uri, 'response="%s"' % resp, "algorithm=%s" % algorithm]
        if qop:
            parts += ["qop=auth", "nc=00000001", 'cnonce="%s"' % cnonce]
        if "opaque" in params:
            parts.append('opaque="%s"' % params["opaque"])
        return header, "Digest " + ", ".join(parts)

    # -- procedures

    def register(self, expires: int = 600) -> Response:
        call_id = uuid.uuid4().hex
        ruri = "sip:%s" % DOMAIN
        to = "<%s>" % self.aor
        extra = ["Expires: %d" % expires]
        self.send(self.request("REGISTER", ruri, 1, call_id, to=to, headers=extra))
        answer = self.final("REGISTER")
        if answer.status == 401:
            header, value = self.credentials(answer, "REGISTER", ruri)
            self.send(self.request("REGISTER", ruri, 2, call_id, to=to, headers=extra + ["%s: %s" % (header, value)]))
            answer = self.final("REGISTER")
        return answer

    def close(self) -> None:
        self.ws.close()


def route_set(response: Response) -> List[str]:
    """The caller's route set: the Record-Route values reversed (RFC 3261 §12.1.2)."""
    return [str(a) for a in reversed(response.record_routes)]


def ws_server(start_server, **overrides):
    ws_port, wss_port = free_port(), free_port()
    server = start_server(listen={"ws": ["127.0.0.1:%d" % ws_port], "wss": ["127.0.0.1:%d" % wss_port]}, **overrides)
    server.ws_url = "ws://127.0.0.1:%d/" % ws_port
    server.wss_url = "wss://127.0.0.1:%d/" % wss_port
    server.ws_port = ws_port
    server.certificate = str(server.state_dir / "tls" / "certificate.pem")
    return server


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
def test_register_over_websocket(start_server, secure):
    server = ws_server(start_server)
    phone = WSPhone(server.wss_url if secure else server.ws_url, "alice", cafile=server.certificate)
    try:
        answer = phone.register()
        assert answer.status == 200, answer.to_bytes()
        contacts = [str(c.uri) for c in answer.contacts]
        assert any(phone.host in c for c in contacts), contacts
    finally:
        phone.close()


def test_register_with_a_wrong_password_is_refused(start_server):
    server = ws_server(start_server)
    phone = WSPhone(server.ws_url, "alice", password="wrong")
    try:
        assert phone.register().status in (401, 403)
    finally:
        phone.close()


def test_websocket_phone_calls_a_udp_phone_and_hangs_up(start_server, tmp_path):
    server = ws_server(start_server)
    port = free_port()
    assert register(server, tmp_path, "bob", port).ok
    uas = start_sipp("uas", None, local_port=port, cwd=tmp_path, timeout=30, name="uas-bob")
    alice = WSPhone(server.ws_url, "alice")
    try:
        assert alice.register().status == 200
        time.sleep(0.3)
        call_id = uuid.uuid4().hex
        ruri = "sip:bob@%s" % DOMAIN
        alice.send(alice.request("INVITE", ruri, 1, call_id, body=SDP))
        challenge = alice.final("INVITE")
        assert challenge.status == 407
        # the ACK of a non-2xx final response stays with the proxy
        alice.send(alice.request("ACK", ruri, 1, call_id, to=challenge.get("To"),
                                 branch=challenge.via.branch))
        header, value = alice.credentials(challenge, "INVITE", ruri)
        alice.send(alice.request("INVITE", ruri, 2, call_id, body=SDP, headers=["%s: %s" % (header, value)]))
        ok = alice.final("INVITE", timeout=10)
        assert ok.status == 200, ok.to_bytes()
        # two Record-Routes: the UDP side and the WebSocket side (RFC 5658)
        rr = [str(a.uri) for a in ok.record_routes]
        assert len(rr) == 2, rr
        assert "transport=ws" in rr[1] and "transport" not in rr[0], rr
        target = str(ok.contacts[0].uri)
        routes = ["Route: %s" % r for r in route_set(ok)]
        alice.send(alice.request("ACK", target, 2, call_id, to=ok.get("To"), headers=routes))
        time.sleep(0.3)
        alice.send(alice.request("BYE", target, 3, call_id, to=ok.get("To"), headers=routes))
        bye = alice.final("BYE")
        assert bye.status == 200
    finally:
        alice.close()
    result = uas.wait()
    assert result.ok, result.describe()


def test_udp_phone_calls_a_websocket_phone_which_hangs_up_on_its_bye(start_server, tmp_path):
    server = ws_server(start_server)
    alice = WSPhone(server.ws_url, "alice")
    try:
        assert alice.register().status == 200
        uac = start_sipp("uac", server.address, "-s", "alice", "-key", "domain", DOMAIN,
                         "-key", "caller", "carol@example.org", "-d", "500",
                         cwd=tmp_path, timeout=30, name="uac-carol")
        invite = alice.request_of("INVITE", timeout=10)
        assert invite.via.transport == "WS"
        rr = [str(a.uri) for a in invite.record_routes]
        assert len(rr) == 2 and "transport=ws" in rr[0], rr
        assert str(invite.uri).startswith(alice.contact.split(";")[0])
        tag = uuid.uuid4().hex[:8]

        def answer(request: Request, code: int, reason: str, body: str = "", rr: bool = True,
                   to_tag: Optional[str] = tag) -> str:
            lines = ["SIP/2.0 %d %s" % (code, reason)]
            lines += ["Via: %s" % v for v in request.get_all("Via")]
            if rr:
                lines += ["Record-Route: %s" % v for v in request.get_all("Record-Route")]
            lines += ["From: %s" % request.get("From"),
                      "To: %s" % (request.get("To") if ";tag=" in request.get("To") else "%s;tag=%s" % (request.get("To"), to_tag)),
                      "Call-ID: %s" % request.call_id, "CSeq: %s" % request.get("CSeq"),
                      "Contact: <%s;ob>" % alice.contact]
            if body:
                lines.append("Content-Type: application/sdp")
            lines.append("Content-Length: %d" % len(body.encode()))
            return "\r\n".join(lines) + "\r\n\r\n" + body

        alice.send(answer(invite, 180, "Ringing"))
        alice.send(answer(invite, 200, "OK", SDP))
        ack = alice.request_of("ACK", timeout=10)
        assert ack.call_id == invite.call_id
        bye = alice.request_of("BYE", timeout=10)
        assert bye.call_id == invite.call_id
        assert not bye.routes  # both of our Record-Route entries were taken off
        alice.send(answer(bye, 200, "OK", rr=False))
        result = uac.wait()
        assert result.ok, result.describe()
    finally:
        alice.close()


def test_bindings_of_a_closed_websocket_are_not_used(start_server):
    server = ws_server(start_server)
    alice = WSPhone(server.ws_url, "alice")
    assert alice.register(expires=3600).status == 200
    alice.ws.abort()
    time.sleep(0.3)
    peer = UDPPeer()
    try:
        peer.send(build("INVITE", "sip:alice@%s" % DOMAIN, peer.address, body=SDP), server)
        final = peer.final()
        assert status(final) == 480, final
    finally:
        peer.close()


def test_in_dialog_request_to_a_closed_websocket_fails_at_once(start_server, tmp_path):
    """A request routed to a .invalid contact whose WebSocket is gone: answered, never
    sent anywhere else."""
    server = ws_server(start_server)
    alice = WSPhone(server.ws_url, "alice")
    assert alice.register().status == 200
    contact = alice.contact
    alice.close()
    time.sleep(0.3)
    peer = UDPPeer()
    try:
        route = "Route: <sip:127.0.0.1:%d;lr>, <sip:127.0.0.1:%d;transport=ws;lr>" % (server.port, server.ws_port)
        peer.send(build("BYE", contact, peer.address, headers=[route], to="<sip:alice@%s>;tag=x1" % DOMAIN), server)
        final = peer.final()
        assert status(final) >= 400, final
    finally:
        peer.close()
