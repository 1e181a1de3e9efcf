"""The admin port of the real server: token, snapshot, event stream, filters, slow clients,
the JSON API and metrics, with SIPp registering and calling."""
from __future__ import annotations

import json
import os
import re
import socket
import stat
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Optional

import pytest

from tests.integration.harness import SCENARIOS, free_port, start_sipp
from tests.integration.sipclient import DOMAIN, register
from tests.transport.test_ws import WSClient, raw_handshake

TOKEN = "admin-test-token-0123456789"


def register_outbound(server, tmp_path, user, port):
    """`user` registers over TCP as an RFC 5626 (outbound) client does: its binding lives as
    long as its connection."""
    path = tmp_path / "register_outbound.xml"
    path.write_text((SCENARIOS / "register.xml").read_text().replace(
        "Contact: <sip:[service]@[local_ip]:[contact_port][contact_params]>",
        'Contact: <sip:[service]@[local_ip]:[contact_port];transport=tcp>'
        ';+sip.instance="<urn:uuid:5e0f1c2a-4f1d-4a51-9d2e-0a1b2c3d4e5f>";reg-id=1\n'
        "      Supported: outbound, path"))
    return register(server, tmp_path, user, port, transport="t1", scenario=path)


def admin_server(start_server, token: Optional[str] = TOKEN, **overrides):
    port = free_port()
    extra: Dict[str, Any] = {"listen": {"admin": ["127.0.0.1:%d" % port]}}
    if token is not None:
        extra["admin"] = {"token": token}
    extra.update(overrides)
    server = start_server(**extra)
    server.admin_port = port
    wait_http(port)
    return server


def wait_http(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http(port, "/healthz", token=None)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("admin port %d does not answer" % port)
        time.sleep(0.1)


def http(port: int, path: str, token: Optional[str] = TOKEN, header: bool = True,
         cookie: Optional[str] = None):
    """(status, content type, body) of a GET on the admin port."""
    url = "http://127.0.0.1:%d%s" % (port, path)
    request = urllib.request.Request(url)
    if token is not None:
        if header:
            request.add_header("Authorization", "Bearer " + token)
        else:
            url += ("&" if "?" in url else "?") + "token=" + token
            request = urllib.request.Request(url)
    if cookie is not None:
        request.add_header("Cookie", "reticulum_admin=" + cookie)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def api(server, path: str) -> Any:
    code, kind, body = http(server.admin_port, path)
    assert code == 200 and kind == "application/json", (code, body)
    return json.loads(body)


class Admin:
    """An admin WebSocket client: the snapshot, then events as dicts."""

    def __init__(self, server, token: str = TOKEN):
        self.ws = WSClient("ws://127.0.0.1:%d/events?token=%s" % (server.admin_port, token),
                           protocols=())
        assert self.ws.opened.is_set(), self.ws.close_reason
        self.snapshot = self.recv()
        assert self.snapshot["type"] == "snapshot"
        self.seen: List[Dict[str, Any]] = []

    def recv(self, timeout: float = 10.0) -> Dict[str, Any]:
        return json.loads(self.ws.recv(timeout))

    def subscribe(self, **wanted: Any) -> None:
        self.ws.send(json.dumps({"subscribe": wanted}).encode())
        while True:
            event = self.recv()
            if event["type"] == "subscribed":
                return
            self.seen.append(event)

    def until(self, pred: Callable[[Dict[str, Any]], bool], timeout: float = 20.0):
        """Events up to and including the first one matching pred (all are kept in seen)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no such event; seen: %s" % [
                    (e["type"], e.get("action"), e.get("method"), e.get("status"))
                    for e in self.seen][-40:])
            event = self.recv(left)
            self.seen.append(event)
            if pred(event):
                return event

    def close(self) -> None:
        self.ws.close()


# -- the token --------------------------------------------------------------------------------


PATHS = ["/", "/api/status", "/api/registrations", "/api/calls", "/metrics", "/events",
         "/static/app.js", "/static/", "/nothing-here", "/healthz/../api/status"]


def test_nothing_answers_without_the_token_but_healthz(start_server):
    server = admin_server(start_server)
    port = server.admin_port
    for path in PATHS:
        for token in (None, "wrong-token-0123456789", TOKEN[:-1]):
            code, _, body = http(port, path, token=token)
            assert code == 401, (path, token, code)
            assert b"\"aor\"" not in body and b"reticulum_messages" not in body
    code, _, body = http(port, "/api/status", token="wrong", header=False)
    assert code == 401
    assert http(port, "/api/status", cookie=TOKEN, token=None)[0] == 401  # pages only
    assert http(port, "/healthz", token=None)[:1] == (200,)
    # the right token, as a header or in the query
    assert http(port, "/api/status")[0] == 200
    assert http(port, "/api/status", header=False)[0] == 200
    assert http(port, "/static/app.js", cookie=TOKEN, token=None)[0] == 200
    with urllib.request.urlopen("http://127.0.0.1:%d/?token=%s" % (port, TOKEN)) as page:
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert page.headers["X-Frame-Options"] == "DENY"
        assert b"static/app.js" in page.read()
    # WebSocket handshakes: refused without it, accepted with it
    for path in ("/events", "/events?token=wrong", "/events?token="):
        head = raw_handshake(port, protocol=None, path=path)
        assert head.startswith(b"HTTP/1.1 401"), head
    head = raw_handshake(port, protocol=None, path="/events?token=" + TOKEN)
    assert head.startswith(b"HTTP/1.1 101"), head
    ws = WSClient("ws://127.0.0.1:%d/events" % port, protocols=())
    assert not ws.opened.is_set()


def test_a_token_is_made_at_first_start_kept_private_and_logged(start_server):
    server = admin_server(start_server, token=None)
    path = server.state_dir / "admin-token"
    token = path.read_text().strip()
    assert len(token) >= 24
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "#token=" + token in server.read_log()
    assert http(server.admin_port, "/api/status", token=token)[0] == 200
    assert http(server.admin_port, "/api/status", token="x" + token)[0] == 401
    server.restart()
    wait_http(server.admin_port)
    assert path.read_text().strip() == token  # the same token after a restart
    assert http(server.admin_port, "/api/status", token=token)[0] == 200


def test_admin_listens_where_configured_only(start_server):
    server = admin_server(start_server)
    status = api(server, "/api/status")
    assert {"transport": "admin", "host": "127.0.0.1", "port": server.admin_port} \
        in status["listening"]
    assert {"transport": "udp", "host": "127.0.0.1", "port": server.port} in status["listening"]
    assert status["version"] and status["uptime"] >= 0
    assert isinstance(status["counters"]["messages_in"], int)


# -- snapshot, API, metrics -------------------------------------------------------------------


def test_snapshot_and_api_after_sipp_registrations(start_server, tmp_path):
    server = admin_server(start_server)
    alice, bob = free_port(), free_port()
    assert register(server, tmp_path, "alice", alice).ok
    assert register(server, tmp_path, "bob", bob, transport="t1",
                    contact_params=";transport=tcp", expires=600).ok
    admin = Admin(server)
    snapshot = admin.snapshot
    by_aor = {r["aor"]: r for r in snapshot["registrations"]}
    assert set(by_aor) == {"sip:alice@" + DOMAIN, "sip:bob@" + DOMAIN}
    b = by_aor["sip:bob@" + DOMAIN]
    assert b["contact"] == "sip:bob@127.0.0.1:%d;transport=tcp" % bob
    assert b["flow"]["transport"] == "tcp" and b["flow"]["remote"].startswith("127.0.0.1:")
    assert 590 <= b["expires"] <= 600
    a = by_aor["sip:alice@" + DOMAIN]
    assert a["contact"] == "sip:alice@127.0.0.1:%d;line=1" % alice
    assert a["flow"] == {"transport": "udp", "local": server.address,
                         "remote": "127.0.0.1:%d" % alice}
    assert 3590 <= a["expires"] <= 3600
    assert sorted(snapshot["users"]) == ["alice", "bob"]
    text = json.dumps(snapshot)
    assert "alice-secret" not in text and "bob-secret" not in text
    for key in ("dialogs", "transactions", "connections", "counters", "messages"):
        assert key in snapshot
    assert snapshot["counters"]["registrations"] == 2
    assert snapshot["counters"]["registrations_added"] >= 2
    assert any(m["method"] == "REGISTER" and m["direction"] == "in"
               for m in snapshot["messages"])
    admin.close()

    regs = api(server, "/api/registrations")["registrations"]
    assert [r["aor"] for r in regs] == ["sip:alice@" + DOMAIN, "sip:bob@" + DOMAIN]
    assert regs[0]["user_agent"] is None or isinstance(regs[0]["user_agent"], str)
    assert [r["contact"] for r in api(server, "/api/registrations?user=bob")["registrations"]] \
        == ["sip:bob@127.0.0.1:%d;transport=tcp" % bob]
    assert len(api(server, "/api/registrations?user=alice")["registrations"]) == 1
    assert api(server, "/api/registrations?user=carol") == {"registrations": []}

    code, kind, body = http(server.admin_port, "/metrics")
    assert code == 200 and kind.startswith("text/plain")
    text = body.decode()
    assert "reticulum_registrations 2.0" in text
    assert 'reticulum_messages_total{direction="in",method="REGISTER",status_class="request"}' \
        in text
    assert 'reticulum_messages_total{direction="out",method="REGISTER",status_class="2xx"}' in text
    assert 'reticulum_connection_events_total{action="closed",transport="tcp"} 1.0' in text
    assert "reticulum_admin_events_dropped_total 0.0" in text


def test_an_outbound_registration_lasts_as_long_as_its_connection(start_server, tmp_path):
    server = admin_server(start_server)
    admin = Admin(server)
    admin.subscribe(types=["connection", "registration"])
    port = free_port()
    assert register_outbound(server, tmp_path, "bob", port).ok
    opened = admin.until(lambda e: e["type"] == "connection" and e["action"] == "opened")
    added = admin.until(lambda e: e["type"] == "registration" and e["action"] == "added")
    assert added["flow"]["transport"] == "tcp" and added["user"] == "bob"
    removed = admin.until(lambda e: e["type"] == "registration" and e["action"] == "removed")
    assert removed["reason"] == "connection closed"
    closed = admin.until(lambda e: e["type"] == "connection" and e["action"] == "closed")
    assert closed["remote"] == opened["remote"] == "127.0.0.1:%d" % port
    admin.close()


# -- a call -----------------------------------------------------------------------------------


def uac_auth_with_pause(tmp_path):
    """uac_auth.xml with a pause (-d) between the ACK and the BYE."""
    path = tmp_path / "uac_auth_pause.xml"
    text = (SCENARIOS / "uac_auth.xml").read_text()
    bye = text.index("<send", text.index("ACK [next_url]"))
    path.write_text(text[:bye] + "<pause/>\n  " + text[bye:])
    return path


def sipp_call(server, tmp_path, pause_ms: int = 200, port: Optional[int] = None):
    """alice (challenged, then authenticated) calls bob, who answers with SIPp's uas on
    `port`; alice hangs up after pause_ms."""
    port = port or free_port()
    assert register(server, tmp_path, "bob", port).ok
    uas = start_sipp("uas", None, local_port=port, cwd=tmp_path, timeout=30, name="uas-%d" % port)
    time.sleep(0.3)
    uac = start_sipp(uac_auth_with_pause(tmp_path), server.address, "-s", "bob", "-au", "alice", "-ap",
                     "alice-secret", "-key", "domain", DOMAIN,
                     "-key", "caller", "alice@" + DOMAIN, "-d", str(pause_ms), cwd=tmp_path,
                     timeout=30)
    return uac, uas, port


def test_the_events_of_a_sipp_call(start_server, tmp_path):
    server = admin_server(start_server)
    admin = Admin(server)
    admin.subscribe(types=["message", "dialog", "transaction"])
    uac, uas, callee_port = sipp_call(server, tmp_path)
    assert uac.wait().ok and uas.wait().ok
    admin.until(lambda e: e["type"] == "dialog" and e["action"] == "terminated")
    # the BYE's 200 goes out to the caller after the dialog ended
    admin.until(lambda e: e["type"] == "message" and e["direction"] == "out"
                and e["status"] == 200 and e["cseq"].endswith("BYE"))
    invite = next(e for e in admin.seen if e["type"] == "message" and e.get("method") == "INVITE"
                  and e["direction"] == "in" and "Authorization" in e["raw"])
    call_id = invite["call_id"]
    mine = [e for e in admin.seen if e.get("call_id") == call_id]
    callee = "127.0.0.1:%d" % callee_port

    def leg(peer_is_callee: bool):
        return [("%s %s" % (e["direction"], e["method"] if e["status"] is None else e["status"]))
                for e in mine if e["type"] == "message"
                and (e["remote"] == callee) == peer_is_callee
                and not e["cseq"].startswith("1 ")]  # the challenged first INVITE

    assert leg(False) == ["in INVITE", "out 100", "out 180", "out 200", "in ACK", "in BYE",
                          "out 200"]
    assert leg(True) == ["out INVITE", "in 180", "in 200", "out ACK", "out BYE", "in 200"]
    dialogs = [e["action"] for e in mine if e["type"] == "dialog"]
    assert dialogs == ["created", "confirmed", "terminated"]
    ended = [e for e in mine if e["type"] == "dialog"][-1]
    assert ended["from"] == "sip:alice@" + DOMAIN and ended["to"] == "sip:bob@" + DOMAIN
    assert ended["end_reason"] == "bye" and ended["duration"] > 0
    created = [e for e in mine if e["type"] == "transaction" and e["action"] == "created"]
    assert {(t["side"], t["method"]) for t in created} >= {
        ("server", "INVITE"), ("client", "INVITE"), ("server", "BYE"), ("client", "BYE")}
    for event in mine:
        assert isinstance(event["time"], float)
        if event["type"] == "message":
            assert event["transaction"] and event["dialog"][0] == call_id
            assert event["raw"].split(" ")[0] in ("SIP/2.0", event["method"])
    admin.close()


def test_calls_api_shows_a_call_in_progress(start_server, tmp_path):
    server = admin_server(start_server)
    uac, uas, _ = sipp_call(server, tmp_path, pause_ms=4000)
    deadline = time.monotonic() + 20
    calls = []
    while time.monotonic() < deadline:
        calls = api(server, "/api/calls")["calls"]
        if calls and calls[0]["state"] == "confirmed":
            break
        time.sleep(0.1)
    assert len(calls) == 1, calls
    call = calls[0]
    assert call["from"] == "sip:alice@" + DOMAIN and call["to"] == "sip:bob@" + DOMAIN
    assert abs(call["created"] - time.time()) < 30 and call["duration"] >= 0
    assert set(call) == {"call_id", "from", "to", "state", "created", "duration"}
    assert uac.wait().ok and uas.wait().ok
    assert api(server, "/api/calls") == {"calls": []}


# -- filters and slow clients -----------------------------------------------------------------


def test_filters_narrow_the_stream(start_server, tmp_path):
    server = admin_server(start_server)
    by_user = Admin(server)
    by_user.subscribe(user="alice")
    by_type = Admin(server)
    by_type.subscribe(types=["registration"])
    bob = free_port()  # one binding: the calls below are not forked to a second one
    assert register(server, tmp_path, "bob", bob).ok
    assert register(server, tmp_path, "alice", free_port()).ok
    by_type.until(lambda e: e.get("user") == "alice")
    assert {e["type"] for e in by_type.seen} == {"registration"}
    assert [e["user"] for e in by_type.seen] == ["bob", "alice"]
    by_user.until(lambda e: e["type"] == "registration")
    assert by_user.seen and all(
        "alice" in (e.get("user"), e.get("from_user"), e.get("to_user")) for e in by_user.seen)
    # a Call-ID filter: only the messages of that call
    uac, uas, _ = sipp_call(server, tmp_path, port=bob)
    assert uac.wait().ok and uas.wait().ok
    invite = by_user.until(lambda e: e.get("method") == "INVITE" and e["direction"] == "in")
    by_call = Admin(server)
    by_call.subscribe(call_id=invite["call_id"], types=["message"])
    uac, uas, _ = sipp_call(server, tmp_path, port=bob)  # another call: nothing of it may arrive
    assert uac.wait().ok and uas.wait().ok
    with pytest.raises(AssertionError):
        by_call.recv(timeout=1.5)
    # a malformed subscription is answered with an error, the filter stays
    by_call.ws.send(b'{"subscribe": {"types": "message"}}')
    assert by_call.recv()["type"] == "error"
    for client in (by_user, by_type, by_call):
        client.close()


def _handshake(sock: socket.socket, port: int) -> None:
    sock.sendall(("GET /events?token=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n" % (TOKEN, port)).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(1)
    assert data.startswith(b"HTTP/1.1 101"), data


def _frames(data: bytes):
    """Complete text frames in data (server frames are not masked)."""
    out, i = [], 0
    while i + 2 <= len(data):
        length = data[i + 1] & 0x7F
        head = 2
        if length == 126:
            length, head = int.from_bytes(data[i + 2:i + 4], "big"), 4
        elif length == 127:
            length, head = int.from_bytes(data[i + 2:i + 10], "big"), 10
        if i + head + length > len(data):
            break
        out.append(data[i + head:i + head + length])
        i += head + length
    return out


def test_a_client_that_does_not_read_gets_a_dropped_count(start_server, tmp_path):
    server = admin_server(start_server)
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", server.admin_port))
    _handshake(slow, server.admin_port)
    reader = Admin(server)  # a client that reads keeps getting everything
    # a burst of SIP traffic while the slow client reads nothing
    burst = start_sipp("options", server.address, "-r", "300", calls=3000, cwd=tmp_path,
                       timeout=120, name="burst")
    result = burst.wait()
    assert result.ok, result.describe()
    code, _, body = http(server.admin_port, "/metrics")
    dropped = [line for line in body.decode().splitlines()
               if line.startswith("reticulum_admin_events_dropped_total")]
    assert dropped and float(dropped[0].split()[-1]) > 0, dropped
    # now read: a dropped frame comes before the events that were kept
    slow.settimeout(10)
    data = b""
    deadline = time.monotonic() + 30
    found = None
    while found is None and time.monotonic() < deadline:
        try:
            chunk = slow.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
        for frame in _frames(data):
            event = json.loads(frame)
            if event["type"] == "dropped":
                found = event
                break
    slow.close()
    assert found is not None and found["count"] > 0
    status = api(server, "/api/status")
    assert status["counters"]["events_dropped"] >= found["count"]
    # the reading client: every OPTIONS and its 200 arrived, or was counted as dropped
    while True:
        try:
            reader.seen.append(reader.recv(timeout=3))
        except AssertionError:
            break
    got = len([e for e in reader.seen if e["type"] == "message" and e["method"] == "OPTIONS"])
    lost = sum(e["count"] for e in reader.seen if e["type"] == "dropped")
    assert got > 0 and got + lost >= 6000, (got, lost)
    reader.close()


def test_a_wrong_password_is_an_auth_event_and_a_metric(start_server, tmp_path):
    server = admin_server(start_server)
    admin = Admin(server)
    admin.subscribe(types=["auth"])
    assert not register(server, tmp_path, "alice", free_port(), password="not-her-password").ok
    failure = admin.until(lambda e: e["type"] == "auth")
    assert failure["action"] == "failure" and failure["user"] == "alice"
    assert failure["address"] == "127.0.0.1"
    admin.close()
    text = http(server.admin_port, "/metrics")[2].decode()
    assert re.search(r'reticulum_auth_failures_total\{kind="failure"\} [1-9]', text), text
    assert api(server, "/api/status")["counters"]["auth_failures"] >= 1
