"""Digest arithmetic against the published RFC examples and an independent computation."""
from __future__ import annotations

import hashlib

import pytest

from reticulum.sip import digest

RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def test_rfc2617_example():
    # RFC 2617 §3.5
    ha1 = digest.ha1("Mufasa", "testrealm@host.com", "Circle Of Life", "MD5")
    assert ha1 == "939e7578ed9e3c518a452acee763bce9"
    got = digest.response(ha1, "GET", "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                          "00000001", "0a4f113b", "auth", "MD5")
    assert got == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize("algorithm, expected", [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_examples(algorithm, expected):
    # RFC 7616 §3.9.1
    ha1 = digest.ha1("Mufasa", RFC7616_REALM, "Circle of Life", algorithm)
    got = digest.response(ha1, "GET", "/dir/index.html", RFC7616_NONCE, "00000001",
                          RFC7616_CNONCE, "auth", algorithm)
    assert got == expected


def _h(name, text):
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    return hashlib.new(name, data).hexdigest()


@pytest.mark.parametrize("algorithm, hash_name", [
    ("MD5", "md5"), ("SHA-256", "sha256"), ("SHA-512-256", "sha512_256"),
])
def test_sess_and_auth_int_match_the_definition(algorithm, hash_name):
    if algorithm not in digest.SUPPORTED_ALGORITHMS:
        pytest.skip("%s not available in this hashlib" % algorithm)
    user, realm, password = "alice", "example.com", "pässword"
    method, uri, nonce, nc, cnonce = "INVITE", "sip:bob@example.com", "n0nce", "0000000a", "c"
    body = b"v=0\r\n"
    ha1 = digest.ha1(user, realm, password, algorithm)
    assert ha1 == _h(hash_name, "%s:%s:%s" % (user, realm, password))
    # -sess uses the same stored HA1 and derives the session key from it.
    assert digest.ha1(user, realm, password, algorithm + "-sess") == ha1
    sess = _h(hash_name, "%s:%s:%s" % (ha1, nonce, cnonce))
    ha2 = _h(hash_name, "%s:%s" % (method, uri))
    ha2_int = _h(hash_name, "%s:%s:%s" % (method, uri, _h(hash_name, body)))

    def expect(key, qop, ha2_):
        return _h(hash_name, ":".join([key, nonce, nc, cnonce, qop, ha2_]))

    assert digest.response(ha1, method, uri, nonce, nc, cnonce, "auth", algorithm) == \
        expect(ha1, "auth", ha2)
    assert digest.response(ha1, method, uri, nonce, nc, cnonce, "auth",
                           algorithm + "-sess") == expect(sess, "auth", ha2)
    assert digest.response(ha1, method, uri, nonce, nc, cnonce, "auth-int", algorithm,
                           body=body) == expect(ha1, "auth-int", ha2_int)
    assert digest.response(ha1, method, uri, nonce, nc, cnonce, "auth-int",
                           algorithm + "-sess", body=body) == expect(sess, "auth-int", ha2_int)
    # RFC 2069 form (no qop)
    assert digest.response(ha1, method, uri, nonce, None, None, None, algorithm) == \
        _h(hash_name, "%s:%s:%s" % (ha1, nonce, ha2))


def test_algorithm_names():
    assert digest.normalize_algorithm(None) == "MD5"
    assert digest.normalize_algorithm("md5-SESS") == "MD5-sess"
    assert digest.normalize_algorithm("sha-256") == "SHA-256"
    assert digest.base_algorithm("SHA-256-sess") == "SHA-256"
    with pytest.raises(ValueError):
        digest.normalize_algorithm("SHA-1")
    with pytest.raises(ValueError):
        digest.response("00", "GET", "/", "n", "00000001", "c", "auth-conf", "MD5")


def test_equal_is_case_insensitive_and_exact():
    value = "8ca523f5e9506fed4657c9700eebdbec"
    assert digest.equal(value, value.upper())
    assert not digest.equal(value, value[:-1])
    assert not digest.equal(value, value[:-1] + "0")
