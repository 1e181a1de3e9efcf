"""URIs: sip, sips, tel, opaque schemes; IPv6; params; escaping; comparison (RFC 3261 §19)."""
from __future__ import annotations

import pytest

from reticulum.sip import URI, ParseError, parse_uri


def test_basic_sip_uri():
    u = parse_uri("sip:alice@Atlanta.COM")
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sip", "alice", None, "atlanta.com", None)
    assert u.params == {} and u.headers is None
    assert str(u) == "sip:alice@atlanta.com"


def test_full_sip_uri():
    u = parse_uri("sips:alice:secretword@gateway.example.com:5061;transport=TCP;lr;Maddr=239.255.255.1?subject=project%20x&priority=urgent")
    assert u.scheme == "sips" and u.secure
    assert u.user == "alice" and u.password == "secretword"
    assert u.host == "gateway.example.com" and u.port == 5061
    assert list(u.params.items()) == [("transport", "TCP"), ("lr", None), ("maddr", "239.255.255.1")]
    assert u.transport == "tcp"
    assert u.headers == "subject=project%20x&priority=urgent"
    assert str(u) == "sips:alice:secretword@gateway.example.com:5061;transport=TCP;lr;maddr=239.255.255.1?subject=project%20x&priority=urgent"


def test_scheme_case_insensitive():
    u = parse_uri("SIP:bob@example.com")
    assert u.scheme == "sip"


def test_host_only_and_port():
    u = parse_uri("sip:example.com:5080;lr")
    assert u.user is None and u.host == "example.com" and u.port == 5080 and u.params == {"lr": None}
    assert u.host_port() == "example.com:5080"
    assert str(u) == "sip:example.com:5080;lr"


@pytest.mark.parametrize("text,host,port", [
    ("sip:[2001:DB8::1]", "2001:db8::1", None),
    ("sip:alice@[2001:db8::10]:5070;transport=tcp", "2001:db8::10", 5070),
    ("sip:[::1]:5060", "::1", 5060),
    ("sip:[::ffff:192.0.2.1]", "::ffff:192.0.2.1", None),
])
def test_ipv6(text, host, port):
    u = parse_uri(text)
    assert u.host == host and u.port == port
    assert u.is_ip()
    assert u.host_port().startswith("[")
    assert parse_uri(str(u)) == u


def test_ipv4_is_ip():
    assert parse_uri("sip:192.0.2.4:5060").is_ip()
    assert not parse_uri("sip:phone21.boxesbybob.com").is_ip()
    assert not parse_uri("sip:300.1.1.1").is_ip()


def test_escapes_kept_as_sent():
    u = parse_uri("sip:%61lice%20x@example.com;na%6De=v%61l")
    assert u.user == "%61lice%20x"
    assert u.params == {"na%6de": "v%61l"}
    assert str(u) == "sip:%61lice%20x@example.com;na%6de=v%61l"


def test_null_escape_stays_escaped():
    u = parse_uri("sip:null-%00-null@example.com")
    assert u.user == "null-%00-null"
    assert "\x00" not in str(u) and "\x00" not in u.aor()
    assert u.aor() == "sip:null-%00-null@example.com"


def test_user_with_semicolon_and_question_mark():
    u = parse_uri("sip:user;par=u%40example.net@example.com")
    assert u.user == "user;par=u%40example.net" and u.host == "example.com" and u.params == {}
    u = parse_uri("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com")
    assert u.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert u.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"


def test_telephone_user():
    u = parse_uri("sip:+1-212-555-1212:1234@gateway.com;user=phone")
    assert u.user == "+1-212-555-1212" and u.password == "1234" and u.params == {"user": "phone"}


@pytest.mark.parametrize("text", [
    "sip:", "sip:@example.com", "sip:alice@", "sip:alice@exa mple.com", " sip:a@b", "sip:a@b ",
    "sip:alice@example.com:abc", "sip:alice@example.com:65536", "sip:alice@[2001:db8::1",
    "sip:alice@[notv6]", "sip:alice@2001:db8::1", "sip:al%zzice@example.com", "sip:a@b;;lr",
    "sip:a@b;=x", "sip:a@b;x=", "sip:a@b?", "sip:a@b?x=<y>", "<sip:a@b>", "sip:a b@c",
    "sip:a@b;p=%4", "nocolon", ":opaque", "1abc:x", "sip:a@b\x00", "sip:a\"b@c",
])
def test_bad_uris(text):
    with pytest.raises(ParseError) as info:
        parse_uri(text)
    assert info.value.reason == "Bad URI"


def test_tel_uri():
    u = parse_uri("tel:+1-201-555-0123;Phone-Context=example.com")
    assert u.scheme == "tel" and u.user == "+1-201-555-0123"
    assert u.params == {"phone-context": "example.com"}
    assert u.host is None
    assert str(u) == "tel:+1-201-555-0123;Phone-Context=example.com"  # round-trips as sent
    assert u.aor() == "tel:+12015550123"
    changed = u.copy(params={"phone-context": "other.example"})
    assert str(changed) == "tel:+1-201-555-0123;phone-context=other.example"


def test_tel_local_number():
    u = parse_uri("tel:7042;phone-context=example.com")
    assert u.user == "7042"
    assert parse_uri(str(u)) == u


@pytest.mark.parametrize("text", [
    "nobodyKnowsThisScheme:totallyopaquecontent", "soap.beep://192.0.2.103:3002",
    "isbn:2983792873", "http://www.example.com", "name:John_Smith", "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    "mailto:alice@example.com",
])
def test_opaque_schemes(text):
    u = parse_uri(text)
    assert u.scheme == text.split(":")[0].lower()
    assert u.host is None and u.user is None
    assert u.opaque == text.split(":", 1)[1]
    assert str(u) == u.scheme + ":" + u.opaque
    assert parse_uri(str(u)) == u


def test_aor_canonical():
    assert parse_uri("sips:%75se%72@Example.COM;transport=tcp?x=y").aor() == "sip:user@example.com"
    assert parse_uri("sip:I%20have%20spaces@example.net").aor() == "sip:I%20have%20spaces@example.net"
    assert parse_uri("sip:a%2fb@example.net").aor() == "sip:a/b@example.net"
    assert parse_uri("sip:alice:pw@example.com:5070").aor() == "sip:alice@example.com"
    assert parse_uri("sip:example.com").aor() == "sip:example.com"
    assert parse_uri("sip:bob@[2001:db8::1]").aor() == "sip:bob@[2001:db8::1]"


@pytest.mark.parametrize("a,b", [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
    ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
])
def test_rfc3261_equivalent(a, b):
    assert parse_uri(a).equivalent(parse_uri(b))
    assert parse_uri(b).equivalent(parse_uri(a))


@pytest.mark.parametrize("a,b", [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:alice@atlanta.com;maddr=10.0.0.1", "sip:alice@atlanta.com"),
])
def test_rfc3261_not_equivalent(a, b):
    assert not parse_uri(a).equivalent(parse_uri(b))
    assert not parse_uri(b).equivalent(parse_uri(a))


def test_structural_equality():
    assert parse_uri("sip:a@B.com;X=1") == parse_uri("sip:a@b.com;x=1")
    assert parse_uri("sip:a@b.com;x=1") != parse_uri("sip:a@b.com;x=2")
    assert parse_uri("sip:a@b.com") != "sip:a@b.com"


def test_copy_and_constructor():
    u = parse_uri("sip:alice@example.com;transport=tcp")
    v = u.copy(host="[2001:DB8::2]", port=5070)
    assert str(v) == "sip:alice@[2001:db8::2]:5070;transport=tcp"
    v.params["lr"] = None
    assert "lr" not in u.params
    w = URI("SIPS", user="bob", host="Example.org", port="5061", params={"lr": None})
    assert str(w) == "sips:bob@example.org:5061;lr"
    with pytest.raises(TypeError):
        u.copy(nonsense=1)
