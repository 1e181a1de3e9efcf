"""Typed header values: Address, Via, CSeq, generic parameters, auth headers, dates."""
from __future__ import annotations

import pytest

from reticulum.sip import (
    URI,
    Address,
    CSeq,
    ParseError,
    Via,
    format_auth,
    format_date,
    parse_address,
    parse_auth,
    parse_cseq,
    parse_date,
    parse_params,
    parse_uri,
    parse_via,
    quote,
    unquote,
)
from reticulum.sip.values import date_timestamp

# -- Address -------------------------------------------------------------------------------


def test_name_addr_quoted_display():
    a = parse_address('"Alice Liddell" <sip:alice@example.com>;tag=1928301774')
    assert a.display == "Alice Liddell"
    assert a.uri == parse_uri("sip:alice@example.com")
    assert a.params == {"tag": "1928301774"} and a.tag == "1928301774"
    assert not a.star
    assert str(a) == '"Alice Liddell" <sip:alice@example.com>;tag=1928301774'


def test_name_addr_token_display():
    a = parse_address("Bob <sips:bob@biloxi.com> ;tag=a6c85cf")
    assert a.display == "Bob" and a.tag == "a6c85cf"
    assert str(a) == '"Bob" <sips:bob@biloxi.com>;tag=a6c85cf'


def test_display_without_space_before_angle():
    a = parse_address("caller<sip:caller@example.com>;tag=323")
    assert a.display == "caller" and a.uri.user == "caller"


def test_multi_token_display_and_non_ascii():
    a = parse_address("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>")
    assert a.display == "token1~` token2'+_ token3*%!.-"
    assert parse_address("Jörg Müller <sip:j@example.com>").display == "Jörg Müller"


def test_no_display():
    a = parse_address("<sip:bob@biloxi.com>")
    assert a.display is None and a.params == {} and str(a) == "<sip:bob@biloxi.com>"
    a = parse_address('"" <sip:bob@biloxi.com>')
    assert a.display == ""


def test_escaped_quotes_in_display():
    a = parse_address(r'"J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8')
    assert a.display == 'J Rosenberg \\"'
    assert parse_address(str(a)) == a


def test_control_characters_in_display_round_trip():
    a = parse_address('"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:x@example.com>')
    assert a.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert parse_address(str(a)) == a


def test_addr_spec_params_bind_to_header():
    a = parse_address("sip:+19725552222@gw1.example.net;unknownparam")
    assert a.uri.params == {} and a.params == {"unknownparam": None}
    b = parse_address("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert b.uri.params == {"unknownparam": None} and b.params == {}


def test_addr_spec_with_spaces_before_params():
    a = parse_address("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
    assert a.uri.user == "vivekg" and a.tag == "1918181833n"


def test_params_lowercase_names_values_as_sent_quotes_kept():
    a = parse_address('<sip:a@b.example>;Expires=60;+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1;Q=0.5')
    assert list(a.params) == ["expires", "+sip.instance", "reg-id", "q"]
    assert a.params["+sip.instance"] == '"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"'
    assert unquote(a.params["+sip.instance"]) == "<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"
    assert parse_address(str(a)) == a


def test_addr_spec_with_quoted_param_holding_angle():
    a = parse_address('sip:a@b.example;+sip.instance="<urn:x>"')
    assert a.uri == parse_uri("sip:a@b.example") and a.params == {"+sip.instance": '"<urn:x>"'}


def test_star():
    a = parse_address("*")
    assert a.star and a.uri is None and str(a) == "*"


def test_opaque_uri_addresses():
    assert parse_address("isbn:2983792873").uri.scheme == "isbn"
    assert parse_address("<http://www.example.com>;tag=3234233").uri.opaque == "//www.example.com"


@pytest.mark.parametrize("value,reason", [
    ('"Mr. J. User <sip:j.user@example.com>', "Unterminated quoted string"),
    ("Bell, Alexander <sip:a.g.bell@example.com>;tag=43", "Bad display name"),
    ('"Watson, Thomas" < sip:t.watson@example.org >', "Bad address"),
    ("sip:user@example.com?Route=%3Csip:sip.example.com%3E", "Bad address"),
    ('"Joe" <sip:joe@example.org>;;;;', "Bad address"),
    ("<sip:joe@example.org", "Bad address"),
    ("<sip:joe@example.org> junk", "Bad address"),
    ("", "Bad address"),
    ("sip:a@b;tag", None),
    ('"x" sip:a@b', "Bad display name"),
    ('Joe "x" <sip:a@b>', "Bad display name"),
    ("<sip:a@b>;tag=", "Bad address"),
    ("<sip:a@b>;tag=a b", "Bad address"),
    ('<sip:a@b>;p="open', "Bad address"),
])
def test_bad_addresses(value, reason):
    if reason is None:
        parse_address(value)
        return
    with pytest.raises(ParseError) as info:
        parse_address(value)
    assert info.value.reason == reason


def test_address_constructor_and_tag_setter():
    uri = parse_uri("sip:a@example.com")
    a = Address(uri, "Alice", {"tag": "x"})
    b = Address("Alice", uri, {"tag": "x"})  # (display, uri) order is accepted too
    c = Address("sip:a@example.com", display="Alice", params={"tag": "x"})
    assert a == b == c
    a.tag = "y"
    assert str(a) == '"Alice" <sip:a@example.com>;tag=y'
    a.tag = None
    assert a.tag is None and str(a) == '"Alice" <sip:a@example.com>'
    d = c.copy()
    d.uri.params["lr"] = None
    assert c.uri.params == {}


def test_quote_never_emits_cr_lf():
    assert quote('a"b\\c\r\nd') == '"a\\"b\\\\c  d"'
    assert "\n" not in str(Address(URI(host="x"), "evil\r\nVia: x"))


# -- Via -----------------------------------------------------------------------------------


def test_via_simple():
    v = parse_via("SIP/2.0/UDP pc33.Atlanta.com;branch=z9hG4bK776asdhds;rport")
    assert v.transport == "UDP" and v.host == "pc33.atlanta.com" and v.port is None
    assert v.branch == "z9hG4bK776asdhds" and v.rport == "" and v.received is None
    assert str(v) == "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;rport"


def test_via_port_received_rport_value():
    v = parse_via("SIP/2.0/tcp 192.0.2.1:5070;branch=z9hG4bKx;received=192.0.2.99;rport=5071")
    assert v.transport == "TCP" and v.port == 5070
    assert v.received == "192.0.2.99" and v.rport == "5071"
    assert v.sent_by() == "192.0.2.1:5070"


def test_via_ipv6():
    v = parse_via("SIP/2.0/UDP [2001:DB8::9]:5060;received=2001:db8::9;branch=z9hG4bK1")
    assert v.host == "2001:db8::9" and v.port == 5060 and v.received == "2001:db8::9"
    assert str(v) == "SIP/2.0/UDP [2001:db8::9]:5060;received=2001:db8::9;branch=z9hG4bK1"
    assert parse_via(str(v)) == v


def test_via_lws_everywhere():
    v = parse_via("SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw")
    assert v.transport == "UDP" and v.host == "192.0.2.2" and v.branch == "390skdjuw"
    v = parse_via("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8")
    assert v.transport == "TCP" and v.host == "spindle.example.com" and v.branch == "z9hG4bK9ikj8"
    v = parse_via("SIP/2.0/UDP host.example.com : 5060 ;branch=z9hG4bK1")
    assert v.port == 5060
    v = parse_via("SIP/2.0/UDP\thost.example.com")
    assert v.host == "host.example.com"


def test_via_unknown_transport_and_quoted_param():
    v = parse_via('SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf;x="a;b"')
    assert v.transport == "SCTP" and v.params["x"] == '"a;b"'


@pytest.mark.parametrize("value", [
    "SIP/2.0/UDP 192.0.2.15;;", ";", "", "SIP/2.0/UDP", "SIP/2.0 UDP host", "SIP/3.0/UDP host",
    "SIP/2.0/UDP host:99999", "SIP/2.0/UDP host:x", "SIP/2.0/UDP ho st", "SIP/2.0/UDP [::1",
    "SIP/2.0/UDP [zz::1]", "SIP/2.0/UDP host;branch=", "HTTP/2.0/UDP host", "SIP/2.0//UDP host",
    "SIP/2.0/UDP host junk;branch=1",
])
def test_bad_via(value):
    with pytest.raises(ParseError) as info:
        parse_via(value)
    assert info.value.reason == "Bad Via"


def test_via_constructor():
    v = Via("tcp", "[2001:db8::1]", 5060, {"branch": "z9hG4bK1"})
    assert str(v) == "SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bK1"
    w = v.copy()
    w.params["received"] = "1.2.3.4"
    assert "received" not in v.params


# -- CSeq ----------------------------------------------------------------------------------


def test_cseq():
    c = parse_cseq("314159 INVITE")
    assert c == CSeq(314159, "INVITE") and str(c) == "314159 INVITE"
    assert parse_cseq("0009   INVITE").number == 9
    assert parse_cseq("1\tACK").method == "ACK"
    assert parse_cseq("2147483647 BYE").number == 2 ** 31 - 1
    assert hash(c) == hash(CSeq(314159, "INVITE"))


@pytest.mark.parametrize("value,reason", [
    ("2147483648 INVITE", "CSeq out of range"),
    ("36893488147419103232 REGISTER", "CSeq out of range"),
    ("9" * 5000 + " INVITE", "CSeq out of range"),
    ("-1 INVITE", "Bad CSeq"), ("INVITE", "Bad CSeq"), ("1", "Bad CSeq"), ("1 INVITE x", "Bad CSeq"),
    ("one INVITE", "Bad CSeq"), ("1 INV\"ITE", "Bad CSeq"), ("", "Bad CSeq"), ("١ INVITE", "Bad CSeq"),
])
def test_bad_cseq(value, reason):
    with pytest.raises(ParseError) as info:
        parse_cseq(value)
    assert info.value.reason == reason


# -- parameters ----------------------------------------------------------------------------


def test_parse_params():
    assert parse_params(";Tag=ABC ; lr ;q = 0.7") == {"tag": "ABC", "lr": None, "q": "0.7"}
    assert parse_params("a=1;b") == {"a": "1", "b": None}
    assert parse_params('x="semi;colon=\\"quoted\\"";y=[2001:db8::1]') == {
        "x": '"semi;colon=\\"quoted\\""', "y": "[2001:db8::1]"}
    assert parse_params("") == {}
    assert list(parse_params(";a=1;A=2")) == ["a"]


@pytest.mark.parametrize("text", [";;", "a=", ";a b=1", ";a=b c", ';a="x', ";a=<x>", ";a=1 ;;"])
def test_bad_params(text):
    with pytest.raises(ParseError):
        parse_params(text)


# -- auth ----------------------------------------------------------------------------------


def test_parse_digest_credentials():
    value = ('Digest username="alice", realm="atlanta.com", nonce="84a4cc6f3082121f32b42a2187831a9e",'
             ' uri="sip:alice@atlanta.com", response="7587245234b3434cc3412213e5f113a5432",'
             ' algorithm=MD5, qop=auth, nc=00000001, cnonce="0a4f113b"')
    scheme, params = parse_auth(value)
    assert scheme == "Digest"
    assert params == {
        "username": "alice", "realm": "atlanta.com", "nonce": "84a4cc6f3082121f32b42a2187831a9e",
        "uri": "sip:alice@atlanta.com", "response": "7587245234b3434cc3412213e5f113a5432",
        "algorithm": "MD5", "qop": "auth", "nc": "00000001", "cnonce": "0a4f113b"}


def test_parse_challenge_with_quoted_comma_and_escapes():
    scheme, params = parse_auth('digest  Realm="a \\"b\\", c" ,nonce="n",qop="auth,auth-int", stale=FALSE')
    assert scheme == "Digest"
    assert params == {"realm": 'a "b", c', "nonce": "n", "qop": "auth,auth-int", "stale": "FALSE"}


def test_unknown_auth_scheme():
    assert parse_auth("NoOneKnowsThisScheme opaque-data=here") == (
        "NoOneKnowsThisScheme", {"opaque-data": "here"})
    assert parse_auth("Bearer") == ("Bearer", {})


@pytest.mark.parametrize("value", [
    "", "Digest realm", 'Digest realm="x', "Digest realm=x nonce=y", 'Digest realm="a", realm="b"',
    "Digest =x", "Basic dXNlcjpwYXNz=", 'Digest realm=a"b',
])
def test_bad_auth(value):
    with pytest.raises(ParseError):
        parse_auth(value)


def test_format_auth_round_trip():
    params = {"username": 'bo"b', "realm": "example.com", "nonce": "abc", "uri": "sip:example.com",
              "response": "0123", "algorithm": "MD5", "qop": "auth", "nc": "00000001",
              "cnonce": "xyz"}
    text = format_auth("Digest", params, {"username", "realm", "nonce", "uri", "response", "cnonce"})
    assert text.startswith('Digest username="bo\\"b", realm="example.com", nonce="abc"')
    assert "algorithm=MD5, qop=auth, nc=00000001" in text
    assert parse_auth(text) == ("Digest", params)
    assert format_auth("Digest", params) == text  # default quoted set
    challenge = format_auth("Digest", {"realm": "r", "nonce": "n", "qop": "auth,auth-int"},
                            {"realm", "nonce", "qop"})
    assert challenge == 'Digest realm="r", nonce="n", qop="auth,auth-int"'


# -- dates ---------------------------------------------------------------------------------


def test_dates():
    d = parse_date("Sat, 13 Nov 2010 23:29:00 GMT")
    assert (d.year, d.month, d.day, d.hour, d.minute, d.second) == (2010, 11, 13, 23, 29, 0)
    assert format_date(date_timestamp("Sat, 13 Nov 2010 23:29:00 GMT")) == "Sat, 13 Nov 2010 23:29:00 GMT"
    assert format_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


@pytest.mark.parametrize("value", [
    "Fri, 01 Jan 2010 16:00:00 EST", "Fri, 1 Jan 2010 16:00:00 GMT", "Fri, 31 Feb 2010 16:00:00 GMT",
    "Fri 01 Jan 2010 16:00:00 GMT", "Fri, 01 Foo 2010 16:00:00 GMT", "", "Xyz, 01 Jan 2010 16:00:00 GMT",
    "Fri, 01 Jan 2010 16:00:0x GMT",
])
def test_bad_dates(value):
    with pytest.raises(ParseError) as info:
        parse_date(value)
    assert info.value.reason == "Bad Date"
