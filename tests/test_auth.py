"""Digest challenges and verification, nonce lifetime and replay, lockout."""
from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from reticulum import auth as auth_module
from reticulum.auth import AuthResult, Authenticator, load_or_create_secret
from reticulum.sip import format_auth, parse, parse_auth, parse_uri
from reticulum.sip import digest

REALMS = ["example.com", "example.org"]
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
SECRET = b"k" * 32
START = 1_700_000_000.0


class Accounts:
    """Stand-in for AccountStore: HA1 from a dict of plain passwords."""

    def __init__(self, passwords=PASSWORDS):
        self.passwords = dict(passwords)

    def ha1(self, name, realm, algorithm):
        if name not in self.passwords or realm not in REALMS:
            return None
        return digest.ha1(name, realm, self.passwords[name], digest.base_algorithm(algorithm))


@pytest.fixture
def clock():
    c = Clock()
    c.advance(START)
    return c


def make_auth(clock, **kw):
    kw.setdefault("accounts", Accounts())
    return Authenticator(kw.pop("accounts"), REALMS, clock, SECRET, **kw)


@pytest.fixture
def authn(clock):
    return make_auth(clock)


def request(method="REGISTER", uri="sip:example.com", user="alice", domain="example.com",
            to=None, headers=(), cseq=1):
    to = to or "sip:%s@%s" % (user, domain)
    lines = [
        "%s %s SIP/2.0" % (method, uri),
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-%d" % cseq,
        "Max-Forwards: 70",
        "From: <sip:%s@%s>;tag=f1" % (user, domain),
        "To: <%s>" % to,
        "Call-ID: call-1@192.0.2.10",
        "CSeq: %d %s" % (cseq, method),
    ]
    lines += ["%s: %s" % h for h in headers]
    lines += ["Content-Length: 0", "", ""]
    return parse("\r\n".join(lines).encode())


def challenges(response, proxy=False):
    name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    out = []
    for value in response.get_all(name):
        scheme, params = parse_auth(value)
        assert scheme == "Digest"
        out.append(params)
    return out


def credentials(challenge, user="alice", password=None, method="REGISTER", uri="sip:example.com",
                nc=1, cnonce="0a4f113b", algorithm=None, realm=None, **extra):
    algorithm = algorithm or challenge.get("algorithm", "MD5")
    realm = realm or challenge["realm"]
    password = PASSWORDS.get(user, "x") if password is None else password
    ha1 = digest.ha1(user, realm, password, algorithm)
    nc_text = "%08x" % nc
    params = {
        "username": user, "realm": realm, "nonce": challenge["nonce"], "uri": uri,
        "response": digest.response(ha1, method, uri, challenge["nonce"], nc_text, cnonce,
                                    "auth", algorithm),
        "algorithm": algorithm, "cnonce": cnonce, "opaque": challenge.get("opaque", ""),
        "qop": "auth", "nc": nc_text,
    }
    params.update(extra)
    return format_auth("Digest", params, {"username", "realm", "nonce", "uri", "response",
                                          "cnonce", "opaque"})


def first_challenge(authn, proxy=False, ip="192.0.2.10", **kw):
    result = authn.authenticate(request(**kw), ip, proxy=proxy)
    assert result.user is None
    return challenges(result.response, proxy)


def attempt(authn, value, ip="192.0.2.10", proxy=False, **kw):
    header = "Proxy-Authorization" if proxy else "Authorization"
    return authn.authenticate(request(headers=[(header, value)], **kw), ip, proxy=proxy)


def assert_challenge(result, stale=False, proxy=False):
    assert result.user is None
    assert result.response is not None
    assert result.response.status == (407 if proxy else 401)
    found = challenges(result.response, proxy)
    assert found
    for params in found:
        assert (params.get("stale") == "true") is stale, params
    return found


# -- challenges ----------------------------------------------------------------------------------


def test_challenge_shape(authn):
    req = request()
    result = authn.authenticate(req, "192.0.2.10", proxy=False)
    response = result.response
    assert result.user is None and response.status == 401
    assert response.reason == "Unauthorized"
    assert response.call_id == req.call_id and str(response.cseq) == str(req.cseq)
    assert response.to.tag is None  # the transaction user adds its own tag
    # one MD5 challenge by default: clients that give up on any algorithm they do not know
    # (baresip 1.0) register too
    (value,) = response.get_all("WWW-Authenticate")
    assert response.get_all("Proxy-Authenticate") == []
    (params,) = challenges(response)
    assert value.startswith('Digest realm="example.com", nonce="')
    assert 'opaque="%s", algorithm=MD5, qop="auth"' % params["opaque"] in value
    assert "stale" not in params


def test_md5_leading_a_list_also_closes_it(clock):
    # clients reading only the first (SIPp) or only the last (JsSIP) challenge both find MD5
    authn = make_auth(clock, algorithms=("MD5", "SHA-256"))
    response = authn.authenticate(request(), "192.0.2.10", proxy=False).response
    values = response.get_all("WWW-Authenticate")
    first, second, last = challenges(response)
    assert [first["algorithm"], second["algorithm"], last["algorithm"]] == ["MD5", "SHA-256", "MD5"]
    assert values[0] == values[2]
    assert first["nonce"] == second["nonce"]


def test_proxy_challenge(authn):
    result = authn.authenticate(request("INVITE", "sip:bob@example.com"), "192.0.2.10", proxy=True)
    assert result.response.status == 407
    assert result.response.get_all("WWW-Authenticate") == []
    assert [c["algorithm"] for c in challenges(result.response, proxy=True)] == ["MD5"]


def test_algorithm_order_follows_configuration(clock):
    authn = make_auth(clock, algorithms=("SHA-256", "MD5"))
    assert [c["algorithm"] for c in first_challenge(authn)] == ["SHA-256", "MD5"]
    authn = make_auth(clock, algorithms=("SHA-256",))
    assert [c["algorithm"] for c in first_challenge(authn)] == ["SHA-256"]


def test_challenge_realm(authn):
    assert first_challenge(authn, domain="example.org")[0]["realm"] == "example.org"
    # REGISTER: the To host; the From host of a third-party registration does not count
    reg = request(to="sip:alice@example.org", domain="elsewhere.net")
    assert challenges(authn.authenticate(reg, "192.0.2.10", False).response)[0]["realm"] == \
        "example.org"
    # other requests: the From host
    invite = request("INVITE", "sip:carol@elsewhere.net", domain="example.org",
                     to="sip:carol@elsewhere.net")
    assert challenges(authn.authenticate(invite, "192.0.2.10", True).response, True)[0]["realm"] \
        == "example.org"
    # a domain not served here: the first realm
    assert first_challenge(authn, domain="elsewhere.net")[0]["realm"] == "example.com"


def test_nonces_differ(authn):
    assert first_challenge(authn)[0]["nonce"] != first_challenge(authn)[0]["nonce"]


# -- success -------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 2])
def test_correct_credentials(clock, index):
    authn = make_auth(clock, algorithms=("MD5", "SHA-256"))
    challenge = first_challenge(authn)[index]
    result = attempt(authn, credentials(challenge))
    assert result == AuthResult(user="alice", response=None, realm="example.com")


def test_proxy_credentials(authn):
    challenge = first_challenge(authn, proxy=True)[0]
    value = credentials(challenge, method="INVITE", uri="sip:bob@example.com")
    result = attempt(authn, value, proxy=True, method="INVITE", uri="sip:bob@example.com")
    assert result.user == "alice"
    # Proxy-Authorization is not looked at for a 401 challenge, nor the other way round
    fresh = credentials(challenge, method="INVITE", uri="sip:bob@example.com", nc=2)
    req = request("INVITE", "sip:bob@example.com", headers=[("Proxy-Authorization", fresh)])
    assert_challenge(authn.authenticate(req, "192.0.2.10", proxy=False))
    req = request("INVITE", "sip:bob@example.com", headers=[("Authorization", fresh)])
    assert_challenge(authn.authenticate(req, "192.0.2.10", proxy=True), proxy=True)
    req = request("INVITE", "sip:bob@example.com", headers=[("Proxy-Authorization", fresh)])
    assert authn.authenticate(req, "192.0.2.10", proxy=True).user == "alice"


def test_credentials_for_the_other_served_realm(authn):
    challenge = first_challenge(authn, domain="example.org")[0]
    assert attempt(authn, credentials(challenge)).user == "alice"


def test_nonce_survives_a_restart(clock):
    challenge = first_challenge(make_auth(clock))[0]
    assert attempt(make_auth(clock), credentials(challenge)).user == "alice"


def test_scheme_and_algorithm_are_case_insensitive(clock):
    authn = make_auth(clock, algorithms=("SHA-256",))
    challenge = first_challenge(authn)[0]
    value = credentials(challenge, algorithm="sha-256").replace("Digest ", "digest ", 1)
    assert attempt(authn, value).user == "alice"


def test_absent_algorithm_means_md5(authn):
    challenge = dict(first_challenge(authn)[0])
    value = credentials(challenge)
    value = value.replace(", algorithm=MD5", "")
    assert "algorithm" not in parse_auth(value)[1]
    assert attempt(authn, value).user == "alice"


def test_sha512_256_when_configured(clock):
    if "SHA-512-256" not in digest.SUPPORTED_ALGORITHMS:
        pytest.skip("no SHA-512/256 in this hashlib")
    authn = make_auth(clock, algorithms=("SHA-512-256", "SHA-256", "MD5"))
    challenge = first_challenge(authn)[0]
    assert challenge["algorithm"] == "SHA-512-256"
    assert attempt(authn, credentials(challenge)).user == "alice"


def test_with_the_account_store(clock, tmp_path):
    from reticulum.accounts import AccountStore

    store = AccountStore(str(tmp_path / "reticulum.sqlite3"), REALMS, watch=False)
    store.start()
    try:
        store.set_password("alice", "alice-pw")
        authn = make_auth(clock, accounts=store)
        for nc, challenge in enumerate(first_challenge(authn), 1):
            assert attempt(authn, credentials(challenge, nc=nc)).user == "alice"
        assert attempt(authn, credentials(challenge, password="other", nc=9)).user is None
    finally:
        store.stop()


def test_loose_uri_match(clock):
    authn = make_auth(clock, check_uri=True)
    challenge = first_challenge(authn)[0]
    value = credentials(challenge, uri="sip:EXAMPLE.com")
    assert attempt(authn, value, uri="sip:example.com").user == "alice"


# -- refusals ------------------------------------------------------------------------------------


def test_stale_nonce(authn, clock):
    challenge = first_challenge(authn)[0]
    clock.advance(299)
    assert attempt(authn, credentials(challenge, nc=1)).user == "alice"
    clock.advance(2)
    renewed = assert_challenge(attempt(authn, credentials(challenge, nc=2)), stale=True)
    assert renewed[0]["nonce"] != challenge["nonce"]
    assert attempt(authn, credentials(renewed[0])).user == "alice"


def test_expired_nonce_with_a_wrong_password_is_not_stale(authn, clock):
    challenge = first_challenge(authn)[0]
    clock.advance(301)
    assert_challenge(attempt(authn, credentials(challenge, password="nope")), stale=False)
    assert authn._failures  # and it counted


def test_nonce_lifetime_is_configurable(clock):
    authn = make_auth(clock, nonce_lifetime=10)
    challenge = first_challenge(authn)[0]
    clock.advance(11)
    assert_challenge(attempt(authn, credentials(challenge)), stale=True)


def test_replayed_nonce_count(authn):
    challenge = first_challenge(authn)[0]
    first = credentials(challenge, nc=1)
    assert attempt(authn, first).user == "alice"
    assert_challenge(attempt(authn, first), stale=True)  # the same credentials again
    assert attempt(authn, credentials(challenge, nc=2)).user == "alice"
    assert_challenge(attempt(authn, credentials(challenge, nc=2)), stale=True)
    assert_challenge(attempt(authn, credentials(challenge, nc=1)), stale=True)
    assert attempt(authn, credentials(challenge, nc=7)).user == "alice"  # gaps are fine
    assert not authn._failures  # a replay is not a password failure


def test_a_forged_nonce_count_cannot_block_the_owner(authn):
    challenge = first_challenge(authn)[0]
    forged = credentials(challenge, password="guess", nc=0xFFFFFFF0)
    assert_challenge(attempt(authn, forged, ip="203.0.113.9"), stale=True)  # not its nonce
    assert_challenge(attempt(authn, forged))  # behind the same address: a wrong password
    assert attempt(authn, credentials(challenge, nc=1)).user == "alice"


def test_nonce_counts_are_forgotten_when_nonces_expire(authn, clock):
    for _ in range(5):
        assert attempt(authn, credentials(first_challenge(authn)[0])).user == "alice"
    assert len(authn._counts) == 5
    clock.advance(301)
    assert attempt(authn, credentials(first_challenge(authn)[0])).user == "alice"
    assert len(authn._counts) == 1


def test_nonce_tracking_is_bounded(authn, monkeypatch):
    monkeypatch.setattr(auth_module, "MAX_TRACKED_NONCES", 3)
    old = first_challenge(authn)[0]
    assert attempt(authn, credentials(old, nc=1)).user == "alice"
    for _ in range(3):
        assert attempt(authn, credentials(first_challenge(authn)[0])).user == "alice"
    assert len(authn._counts) <= 3
    # the forgotten nonce's history is gone, so it is refused rather than replayable
    assert_challenge(attempt(authn, credentials(old, nc=1)), stale=True)
    assert_challenge(attempt(authn, credentials(old, nc=2)), stale=True)


def test_other_realm_is_treated_as_absent(authn):
    challenge = dict(first_challenge(authn)[0])
    value = credentials(challenge, realm="elsewhere.net")
    assert_challenge(attempt(authn, value))
    assert not authn._failures


def test_unknown_scheme_is_treated_as_absent(authn):
    assert_challenge(attempt(authn, "Basic YWxpY2U6YWxpY2UtcHc="))
    assert_challenge(attempt(authn, "Bearer abc.def.ghi"))
    assert_challenge(attempt(authn, "Digest"))
    assert_challenge(attempt(authn, "garbage ==="))
    assert not authn._failures


def test_forged_or_foreign_nonce(authn, clock):
    challenge = dict(first_challenge(authn)[0])
    mac = challenge["nonce"][25]  # a character of the MAC over time, random and realm
    forged = challenge["nonce"][:25] + ("B" if mac == "A" else "A") + challenge["nonce"][26:]
    for nonce in ("abc", forged, "A" * len(challenge["nonce"])):
        challenge["nonce"] = nonce
        assert_challenge(attempt(authn, credentials(challenge)))
    # a nonce made for example.org does not serve example.com
    other = first_challenge(authn, domain="example.org")[0]
    assert_challenge(attempt(authn, credentials(other, realm="example.com")))
    # nor one made with another secret
    stranger = Authenticator(Accounts(), REALMS, clock, b"z" * 32)
    theirs = challenges(stranger.authenticate(request(), "192.0.2.10", False).response)[0]
    assert_challenge(attempt(authn, credentials(theirs)))


def test_missing_or_unusable_parameters(authn):
    challenge = first_challenge(authn)[0]
    good = parse_auth(credentials(challenge))[1]
    for drop in ("username", "nonce", "uri", "response", "qop", "nc", "cnonce"):
        params = {k: v for k, v in good.items() if k != drop}
        assert_challenge(attempt(authn, format_auth("Digest", params, {"username", "realm",
                                                                        "nonce", "uri", "response",
                                                                        "cnonce", "opaque"})))
    for name, value in (("qop", "auth-int"), ("nc", "1"), ("nc", "zzzzzzzz"),
                        ("algorithm", "SHA-1"), ("algorithm", "SHA-512-256")):
        params = dict(good, **{name: value})
        assert_challenge(attempt(authn, format_auth("Digest", params, {"username", "realm",
                                                                        "nonce", "uri", "response",
                                                                        "cnonce", "opaque"})))
    assert attempt(authn, credentials(challenge)).user == "alice"


def test_algorithm_not_offered(clock):
    authn = make_auth(clock, algorithms=("SHA-256",))
    md5 = dict(first_challenge(authn)[0], algorithm="MD5")
    assert_challenge(attempt(authn, credentials(md5)))


def test_uri_mismatch_with_check_uri(clock):
    authn = make_auth(clock, check_uri=True)
    challenge = first_challenge(authn)[0]
    value = credentials(challenge, uri="sip:example.org")
    assert_challenge(attempt(authn, value, uri="sip:example.com"))


def test_a_uri_other_than_the_request_uri_is_accepted_by_default(authn):
    """SIPp names the server's address as the digest uri; the response over that uri is
    what counts, with nonce, realm and nonce-count checked all the same."""
    challenge = first_challenge(authn, method="INVITE", uri="sip:bob@example.com", proxy=True)[0]
    named = "sip:192.0.2.1:5060"
    value = credentials(challenge, method="INVITE", uri=named)
    result = attempt(authn, value, proxy=True, method="INVITE", uri="sip:bob@example.com")
    assert result.user == "alice"
    # the same nonce-count again is a replay
    assert_challenge(attempt(authn, value, proxy=True, method="INVITE",
                             uri="sip:bob@example.com"), stale=True, proxy=True)
    # a response computed over another uri than the one it names is wrong
    forged = credentials(challenge, method="INVITE", uri="sip:bob@example.com", nc=2)
    forged = forged.replace('uri="sip:bob@example.com"', 'uri="%s"' % named)
    assert attempt(authn, forged, proxy=True, method="INVITE",
                   uri="sip:bob@example.com").user is None
    # and a nonce of another realm (or not ours at all) still fails
    other = credentials(dict(challenge, realm="example.org"), method="INVITE", uri=named, nc=3)
    assert attempt(authn, other, proxy=True, method="INVITE",
                   uri="sip:bob@example.com").user is None


def test_method_is_covered(authn):
    challenge = first_challenge(authn)[0]
    value = credentials(challenge, method="REGISTER", uri="sip:bob@example.com")
    assert_challenge(attempt(authn, value, method="INVITE", uri="sip:bob@example.com"))


def test_wrong_password_and_unknown_user_look_alike(authn):
    def shape(result):
        assert result.user is None and result.response.status == 401
        found = challenges(result.response)
        return (result.response.status, result.response.reason,
                [sorted((k, v) for k, v in c.items() if k != "nonce") for c in found],
                [h for h, _ in result.response.headers.items()]
                if hasattr(result.response.headers, "items") else None)

    challenge = first_challenge(authn)[0]
    wrong = attempt(authn, credentials(challenge, password="nope"))
    unknown = attempt(authn, credentials(challenge, user="mallory", password="nope"))
    assert shape(wrong) == shape(unknown)
    assert challenges(wrong.response)[0]["nonce"] != challenge["nonce"]  # a fresh challenge


# -- lockout -------------------------------------------------------------------------------------


def fail(authn, user="alice", ip="198.51.100.7", times=1):
    for _ in range(times):
        challenge = first_challenge(authn, ip=ip)[0]
        assert_challenge(attempt(authn, credentials(challenge, user=user, password="nope"), ip=ip))


def guess(authn, user="alice", ip="198.51.100.7", password="nope"):
    """One try as an attacker makes it: a challenge, then an answer; the last result."""
    result = authn.authenticate(request(user=user), ip, proxy=False)
    if result.response.status != 401:
        return result
    challenge = challenges(result.response)[0]
    return attempt(authn, credentials(challenge, user=user, password=password), ip=ip, user=user)


def succeed(authn, user="alice", ip="192.0.2.10"):
    return guess(authn, user=user, ip=ip, password=PASSWORDS[user])


def refused(result):
    return result.user is None and result.response.status == 403 and \
        result.response.reason == "Forbidden"


def test_a_source_is_refused_for_the_user_it_failed_for(clock):
    authn = make_auth(clock, max_failures=3, lockout_seconds=60)
    fail(authn, user="alice", ip="198.51.100.7", times=3)
    # that source, for that user: refused, right password or not
    assert refused(succeed(authn, user="alice", ip="198.51.100.7"))
    # the same source for another user, and another source for alice: served
    assert succeed(authn, user="bob", ip="198.51.100.7").user == "bob"
    assert succeed(authn, user="alice", ip="192.0.2.10").user == "alice"
    clock.advance(59)
    assert refused(succeed(authn, user="alice", ip="198.51.100.7"))
    clock.advance(1.5)
    assert succeed(authn, user="alice", ip="198.51.100.7").user == "alice"
    # counting starts afresh
    fail(authn, user="alice", ip="198.51.100.7", times=2)
    assert succeed(authn, user="alice", ip="198.51.100.7").user == "alice"


def test_nobody_can_lock_a_user_out(clock):
    authn = make_auth(clock)  # the defaults: 10 failures, 300 s
    for _ in range(200):
        guess(authn, user="bob", ip="198.51.100.7")
    assert refused(guess(authn, user="bob", ip="198.51.100.7", password="bob-pw"))
    # many attacking addresses, each failing as often as it may
    for i in range(1, 60):
        for _ in range(12):
            guess(authn, user="bob", ip="203.0.113.%d" % i)
    # bob, from anywhere clean, gets in at once
    assert succeed(authn, user="bob", ip="192.0.2.10").user == "bob"
    assert succeed(authn, user="bob", ip="2001:db8:5::1").user == "bob"


def test_a_source_failing_for_many_users_is_refused_for_everything(clock):
    authn = make_auth(clock, max_failures=3, lockout_seconds=60)
    limit = 3 * auth_module.SOURCE_FACTOR
    for i in range(limit - 1):
        fail(authn, user="user%d" % i, ip="198.51.100.7")
    assert succeed(authn, user="alice", ip="198.51.100.7").user == "alice"
    fail(authn, user="user99", ip="198.51.100.7")
    # every user, with or without credentials
    assert refused(succeed(authn, user="alice", ip="198.51.100.7"))
    assert refused(authn.authenticate(request(), "198.51.100.7", False))
    assert succeed(authn, user="alice", ip="192.0.2.10").user == "alice"
    clock.advance(61)
    assert succeed(authn, user="alice", ip="198.51.100.7").user == "alice"


def test_unknown_users_count_too(clock):
    authn = make_auth(clock, max_failures=2, lockout_seconds=60)
    fail(authn, user="nobody", ip="198.51.100.1", times=2)
    assert refused(guess(authn, user="nobody", ip="198.51.100.1"))
    for i in range(2 * auth_module.SOURCE_FACTOR):
        guess(authn, user="nobody%d" % i, ip="198.51.100.2")
    assert refused(succeed(authn, ip="198.51.100.2"))


def test_a_user_failing_from_many_sources_slows_each_source(clock):
    authn = make_auth(clock, max_failures=3, lockout_seconds=60)
    many = 3 * auth_module.SOURCE_FACTOR
    for i in range(many):
        fail(authn, user="bob", ip="203.0.113.%d" % i)
    # from now on, one failure refuses a source for bob...
    fail(authn, user="bob", ip="198.51.100.50")
    assert refused(succeed(authn, user="bob", ip="198.51.100.50"))
    # ...but not for anyone else, and a clean source still gets in
    assert succeed(authn, user="alice", ip="198.51.100.50").user == "alice"
    assert succeed(authn, user="bob", ip="192.0.2.10").user == "bob"
    clock.advance(61)
    fail(authn, user="bob", ip="198.51.100.51")
    assert succeed(authn, user="bob", ip="198.51.100.51").user == "bob"


def test_failures_leave_the_window(clock):
    authn = make_auth(clock, max_failures=3, lockout_seconds=60)
    fail(authn, times=2)
    clock.advance(61)
    fail(authn, times=2)
    assert succeed(authn).user == "alice"
    assert succeed(authn, ip="198.51.100.7").user == "alice"


def test_successes_do_not_count(clock):
    authn = make_auth(clock, max_failures=2, lockout_seconds=60)
    for _ in range(20):
        assert succeed(authn).user == "alice"


def test_challenges_do_not_count(clock):
    authn = make_auth(clock, max_failures=2, lockout_seconds=60)
    for _ in range(20):
        first_challenge(authn)
        assert_challenge(attempt(authn, "Basic YWxpY2U6YWxpY2UtcHc="))
    assert succeed(authn).user == "alice"


def test_a_nonce_serves_only_the_source_it_was_issued_to(authn):
    challenge = first_challenge(authn, ip="192.0.2.10")[0]
    # guesses with it from other (spoofed) addresses: stale, never checked, never counted
    for i in range(500):
        value = credentials(challenge, password="guess%d" % i, nc=i + 1)
        renewed = assert_challenge(attempt(authn, value, ip="203.0.113.%d" % (i % 250)),
                                   stale=True)
        assert renewed[0]["nonce"] != challenge["nonce"]
    assert not authn._failures and not authn._counts
    # the right answer from elsewhere is stale too; its owner's is not
    assert_challenge(attempt(authn, credentials(challenge), ip="198.51.100.7"), stale=True)
    assert attempt(authn, credentials(challenge), ip="192.0.2.10").user == "alice"
    # the fresh challenge sent to the other address serves there
    elsewhere = first_challenge(authn, ip="198.51.100.7")[0]
    assert attempt(authn, credentials(elsewhere), ip="198.51.100.7").user == "alice"


def test_ipv6_sources_are_counted_per_64(clock):
    assert auth_module.source_key("2001:db8:1:2:a:b:c:d") == "2001:db8:1:2::/64"
    assert auth_module.source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert auth_module.source_key("192.0.2.1") == "192.0.2.1"
    authn = make_auth(clock, max_failures=3, lockout_seconds=60)
    for i in range(1, 4):
        fail(authn, ip="2001:db8:1:2::%x" % i)
    assert refused(succeed(authn, ip="2001:db8:1:2::ffff"))
    assert succeed(authn, ip="2001:db8:1:3::1").user == "alice"
    # a nonce serves the whole /64 it was sent to
    challenge = first_challenge(authn, ip="2001:db8:1:3::1")[0]
    assert attempt(authn, credentials(challenge), ip="2001:db8:1:3::2").user == "alice"


def test_lockout_disabled(clock):
    authn = make_auth(clock, max_failures=0)
    fail(authn, times=30)
    assert succeed(authn, ip="198.51.100.7").user == "alice"
    assert not authn._failures


def test_failure_tracking_is_bounded(clock, monkeypatch):
    monkeypatch.setattr(auth_module, "MAX_TRACKED_FAILURES", 10)
    authn = make_auth(clock, max_failures=3, lockout_seconds=60)
    for i in range(50):
        fail(authn, user="u%d" % i, ip="198.51.100.%d" % i)
    assert len(authn._failures) <= 10
    clock.advance(61)
    fail(authn, user="z", ip="203.0.113.1")
    assert len(authn._failures) == 3  # the user, the (source, user) pair, the source
    # user names from the wire are kept at a bounded size
    fail(authn, user="x" * 5000, ip="203.0.113.1")
    assert max(len(part) for key in authn._failures for part in key) < 100


def test_lockout_is_logged(clock):
    class Log:
        def __init__(self):
            self.events = []

        def __getattr__(self, level):
            return lambda fmt, **kw: self.events.append((level, fmt, kw))

    log = Log()
    authn = make_auth(clock, max_failures=2, lockout_seconds=60, log=log)
    fail(authn, times=2)
    assert refused(succeed(authn, ip="198.51.100.7"))
    warnings = [e for e in log.events if e[0] == "warn"]
    assert len(warnings) == 1
    assert warnings[0][2]["source"] == "198.51.100.7" and warnings[0][2]["user"] == "alice"
    for i in range(2 * auth_module.SOURCE_FACTOR):
        guess(authn, user="x%d" % i, ip="198.51.100.8")
    assert any(kw.get("source") == "198.51.100.8" and "user" not in kw
               for _, _, kw in log.events)


# -- helpers for the proxy -----------------------------------------------------------------------


def test_strip_credentials(authn):
    ours = 'Digest username="alice", realm="example.com", nonce="n", uri="sip:x", response="r"'
    theirs = 'Digest username="alice", realm="carrier.net", nonce="n", uri="sip:x", response="r"'
    req = request("INVITE", "sip:bob@example.com", headers=[
        ("Proxy-Authorization", ours), ("Proxy-Authorization", theirs),
        ("Proxy-Authorization", "Basic abc"), ("Authorization", ours),
    ])
    authn.strip_credentials(req, proxy=True)
    assert req.get_all("Proxy-Authorization") == [theirs, "Basic abc"]
    assert req.get_all("Authorization") == [ours]
    authn.strip_credentials(req, proxy=False)
    assert req.get_all("Authorization") == []
    assert req.get_all("Proxy-Authorization") == [theirs, "Basic abc"]


def test_owns(authn):
    assert authn.owns("alice", parse_uri("sip:alice@example.com"))
    assert authn.owns("alice", parse_uri("sips:alice@EXAMPLE.ORG;transport=tcp"))
    assert authn.owns("al.ice", parse_uri("sip:al%2eice@example.com"))
    assert not authn.owns("alice", parse_uri("sip:bob@example.com"))
    assert not authn.owns("alice", parse_uri("sip:alice@elsewhere.net"))
    assert not authn.owns("alice", parse_uri("sip:example.com"))
    assert not authn.owns("alice", parse_uri("tel:+15551234"))
    assert not authn.owns(None, parse_uri("sip:alice@example.com"))


# -- the secret ----------------------------------------------------------------------------------


def test_load_or_create_secret(tmp_path):
    state = str(tmp_path / "state")
    secret = load_or_create_secret(state)
    assert len(secret) >= 16
    path = os.path.join(state, "nonce.secret")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_secret(state) == secret
    assert load_or_create_secret(str(tmp_path / "other")) != secret
    assert os.listdir(state) == ["nonce.secret"]


def test_corrupt_secret_is_reported(tmp_path):
    (tmp_path / "nonce.secret").write_text("not hex\n")
    with pytest.raises(ValueError, match="nonce.secret"):
        load_or_create_secret(str(tmp_path))


# -- robustness ----------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60)
_names = st.sampled_from(["username", "realm", "nonce", "uri", "response", "algorithm",
                          "cnonce", "nc", "qop", "opaque", "x"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_names, _text, max_size=11), st.booleans())
def test_arbitrary_credentials_never_break_anything(params, realm_ok):
    clock = Clock()
    clock.advance(START)
    authn = make_auth(clock)
    if realm_ok:
        params["realm"] = "example.com"
    value = format_auth("Digest", params, set(params))
    result = attempt(authn, value)
    assert result.user is None
    assert result.response.status == 401
