"""Authentication and authorization in the proxy, with the real account store and digest
math: who is challenged, who is refused, which credentials travel on."""
from __future__ import annotations

from twisted.internet.task import Clock

from reticulum.accounts import AccountStore
from reticulum.config import config_from_dict
from reticulum.service import build_core
from reticulum.location import Binding, MemoryLocation
from reticulum.sip import Request, parse_auth
from reticulum.sip import digest
from tests.proxy.test_proxy import CALLEE, CALLER, RecordingTransports, request, statuses, to_flow

DOMAIN = "reticulum.local"


def make_core(tmp_path):
    config = config_from_dict({
        "domains": [DOMAIN], "state_dir": str(tmp_path),
        "listen": {"udp": ["127.0.0.1:5060"]},
        "users": {"alice": "alice-secret", "bob": "bob-secret"},
    }, base_dir=str(tmp_path))
    clock = Clock()
    clock.advance(1_800_000_000)
    net = RecordingTransports()
    accounts = AccountStore(str(tmp_path / "reticulum.sqlite3"), realms=[DOMAIN], watch=False)
    core = build_core(config, clock, net, location=MemoryLocation(), accounts=accounts)
    core.start()
    core.location.put(Binding(aor="sip:bob@" + DOMAIN, contact="sip:bob@127.0.0.1:7000",
                              expires_at=clock.seconds() + 3600, flow=CALLEE))
    return core, clock, net


def credentials(challenge_value, user, password, method, uri, header="Proxy-Authorization"):
    _, params = parse_auth(challenge_value)
    algorithm = params.get("algorithm", "MD5")
    ha1 = digest.ha1(user, params["realm"], password, algorithm)
    answer = digest.response(ha1, method, uri, params["nonce"], "00000001", "c0ffee", "auth",
                             algorithm)
    return ('%s: Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
            'algorithm=%s, qop=auth, nc=00000001, cnonce="c0ffee", opaque="%s"'
            % (header, user, params["realm"], params["nonce"], uri, answer, algorithm,
               params.get("opaque", "")))


def challenge_for(net, name="Proxy-Authenticate"):
    (reply,) = [m for m, _ in net.take() if not isinstance(m, Request) and m.status >= 200]
    return reply, reply.get_all(name)


def test_local_caller_is_challenged_with_one_md5_challenge(tmp_path):
    core, clock, net = make_core(tmp_path)
    core.message_received(request("MESSAGE", from_="<sip:alice@%s>;tag=a" % DOMAIN), CALLER)
    reply, challenges = challenge_for(net)
    assert reply.status == 407
    assert [parse_auth(c)[1]["algorithm"] for c in challenges] == ["MD5"]


def test_our_credentials_are_removed_and_others_pass_through(tmp_path):
    core, clock, net = make_core(tmp_path)
    uri = "sip:bob@" + DOMAIN
    core.message_received(request("MESSAGE", from_="<sip:alice@%s>;tag=a" % DOMAIN), CALLER)
    _, challenges = challenge_for(net)
    ours = credentials(challenges[0], "alice", "alice-secret", "MESSAGE", uri)
    theirs = ('Proxy-Authorization: Digest username="alice", realm="elsewhere.example", '
              'nonce="x", uri="%s", response="00"' % uri)
    core.message_received(request("MESSAGE", branch="z9hG4bKc2", cseq=2,
                               from_="<sip:alice@%s>;tag=a" % DOMAIN,
                               extra=ours + "\r\n" + theirs), CALLER)
    (fwd,) = to_flow(net.take(), CALLEE)
    assert fwd.get_all("Proxy-Authorization") == [theirs.split(": ", 1)[1]]


def test_wrong_password_and_unknown_user_look_the_same(tmp_path):
    core, clock, net = make_core(tmp_path)
    uri = "sip:bob@" + DOMAIN
    replies = []
    for user, password in (("alice", "nope"), ("mallory", "nope")):
        core.message_received(request("MESSAGE", from_="<sip:%s@%s>;tag=a" % (user, DOMAIN),
                                   branch="z9hG4bK" + user), CALLER)
        _, challenges = challenge_for(net)
        core.message_received(request("MESSAGE", from_="<sip:%s@%s>;tag=a" % (user, DOMAIN),
                                   branch="z9hG4bK2" + user, cseq=2,
                                   extra=credentials(challenges[0], user, password, "MESSAGE",
                                                     uri)), CALLER)
        reply, again = challenge_for(net)
        replies.append((reply.status, reply.reason, len(again)))
    assert replies[0] == replies[1] == (407, replies[0][1], 1)


def test_someone_elses_from_is_refused(tmp_path):
    core, clock, net = make_core(tmp_path)
    uri = "sip:bob@" + DOMAIN
    core.message_received(request("MESSAGE", from_="<sip:bob@%s>;tag=a" % DOMAIN), CALLER)
    _, challenges = challenge_for(net)
    core.message_received(request("MESSAGE", branch="z9hG4bKc2", cseq=2,
                               from_="<sip:bob@%s>;tag=a" % DOMAIN,
                               extra=credentials(challenges[0], "alice", "alice-secret",
                                                 "MESSAGE", uri)), CALLER)
    reply, _ = challenge_for(net)
    assert reply.status == 403


def test_in_dialog_requests_through_our_route_are_not_challenged(tmp_path):
    core, clock, net = make_core(tmp_path)
    route = "Route: <sip:127.0.0.1:5060;lr;rtok=%s>" % core.proxy.tokens.token(
        "call-1", "127.0.0.1:7000")
    bye = request("BYE", "sip:bob@127.0.0.1:7000", from_="<sip:alice@%s>;tag=a" % DOMAIN,
                  to="<sip:bob@%s>;tag=b" % DOMAIN, extra=route)
    core.message_received(bye, CALLER)
    (fwd,) = to_flow(net.take(), CALLEE)
    assert fwd.method == "BYE"


def test_ack_and_cancel_are_never_challenged(tmp_path):
    core, clock, net = make_core(tmp_path)
    core.message_received(request("CANCEL", from_="<sip:alice@%s>;tag=a" % DOMAIN), CALLER)
    assert statuses(to_flow(net.take(), CALLER)) == [481]
    core.message_received(request("ACK", "sip:bob@127.0.0.1:7000",
                               from_="<sip:alice@%s>;tag=a" % DOMAIN,
                               to="<sip:bob@%s>;tag=b" % DOMAIN,
                               extra="Route: <sip:127.0.0.1:5060;lr>"), CALLER)
    assert [m.method for m in to_flow(net.take(), CALLEE)] == ["ACK"]


def test_foreign_caller_reaches_a_local_user_without_credentials(tmp_path):
    core, clock, net = make_core(tmp_path)
    core.message_received(request("MESSAGE"), CALLER)  # From carol@example.org
    assert [m.method for m in to_flow(net.take(), CALLEE)] == ["MESSAGE"]
