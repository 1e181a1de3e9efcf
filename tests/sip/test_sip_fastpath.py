"""The fast paths of the parsers (regular expressions for the usual shapes of URIs, addresses
and Vias, the CRLF split of a message head, the table of header spellings, validate()'s quick
checks) agree with the full grammar: whatever they accept, the full parser accepts with the
same result, and everything else still gets the full parser's answer."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reticulum.sip import ParseError, Request
from reticulum.sip.headers import _INFO, _name_info_of, name_info
from reticulum.sip.message import _head_lines, _head_lines_general
from reticulum.sip.grammar import FAST_ADDR_SPEC, FAST_NAME_ADDR, FAST_URI, FAST_VIA
from reticulum.sip.uri import parse_uri, parse_uri_full
from reticulum.sip.values import (
    _parse_address,
    _parse_address_full,
    _parse_via_full,
    address_ok,
    parse_via,
)

SCALE = float(os.environ.get("RETICULUM_HYPOTHESIS_SCALE", "1"))
SETTINGS = settings(max_examples=int(1500 * SCALE), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# pieces, valid and not, that the values are put together from
DISPLAY = ["", '"Alice" ', '"" ', 'Bob ', 'Bob  Jr ', '"A\\"b" ', '"x;y"', '"<z>" ', 'é ',
           '"Al', "a,b ", '"\t" ']
SCHEME = ["sip", "sips", "SIP", "tel", "sip ", "", "s1p"]
USER = ["", "alice", "u00001", "a;b", "a?b", "a,b", "a%41", "a%4", "a:pw", "+1-(555)",
        "a b", "a@b", "#1", "é", "\u0663"]
HOST = ["example.com", "127.0.0.1", "HOST.Example.COM", "[::1]", "[2001:db8::1]", "a_b",
        "", "a b", "é.com", "-", "1.2.3.4.5"]
PORT = ["", ":5060", ":0", ":05060", ":65535", ":65536", ":99999", ":", ":\u0663", ":1 ",
        ":123456"]
URI_PARAM = ["", ";lr", ";transport=udp", ";LR", ";a=b;a=c", ";a=", ";=b", ";a==b", ";a%20",
             ";a=b=c", ";maddr=[::1]", "?h=v", ";a;b", "; a"]
PARAM = ["", ";tag=1928301774", ";TAG=x", " ; tag = 1 ", ";expires=60;q=0.5", ';x="q"',
         ';+sip.instance="<urn:uuid:1>"', ';x="a;b"', ';x="a\\"b"', ";x=", ";=1", ";x=a b",
         ";;", "; ", ";x=[::1]", ";x=é", ";x", ';x="unterminated', ";x=a\"b", ",", " "]
MUTATION = ["", " ", "\t", '"', "<", ">", ";", "=", "@", ":", "?", ",", "%", "\\", "é", "[",
            "]", "*", "a", "0"]

piece = st.sampled_from
mutation = st.tuples(piece(MUTATION), st.integers(0, 80))


def _mutate(text: str, mutations) -> str:
    for char, at in mutations:
        at %= len(text) + 1
        text = text[:at] + char + text[at:]
    return text


uri_text = st.builds(
    lambda s, u, h, p, up, m: _mutate(s + ":" + (u + "@" if u else "") + h + p + up, m),
    piece(SCHEME), piece(USER), piece(HOST), piece(PORT), piece(URI_PARAM),
    st.lists(mutation, max_size=2))

address_text = st.one_of(
    st.builds(lambda d, u, p, m: _mutate(d + "<" + u + ">" + p, m),
              piece(DISPLAY), uri_text, piece(PARAM), st.lists(mutation, max_size=2)),
    st.builds(lambda u, p, m: _mutate(u + p, m), uri_text, piece(PARAM),
              st.lists(mutation, max_size=2)),
)

VIA_HEAD = ["SIP/2.0/UDP ", "SIP/2.0/tcp ", "SIP/2.0/UDP  ", "SIP / 2.0 / UDP ", "SIP/2.0/ ",
            "SIP/2.1/UDP ", "SIP/2.0/U;P ", "sip/2.0/UDP "]
via_text = st.builds(
    lambda v, h, p, params, m: _mutate(v + h + p + params, m),
    piece(VIA_HEAD), piece(HOST), piece(PORT),
    st.lists(piece(PARAM + [";branch=z9hG4bK776", ";rport", ";received=192.0.2.1"]),
             max_size=3).map("".join),
    st.lists(mutation, max_size=2))


def _uri_fields(uri):
    return (uri.scheme, uri.user, uri.password, uri.host, uri.port,
            list(uri.params.items()), uri.headers, uri.opaque)


def _address_fields(addr):
    return (addr.display, addr.star, _uri_fields(addr.uri) if addr.uri else None,
            list(addr.params.items()))


def _outcome(parse, fields, text):
    try:
        return fields(parse(text))
    except ParseError as error:
        return ("error", error.reason)


@SETTINGS
@given(uri_text)
def test_uri_fast_path_agrees(text):
    full = _outcome(parse_uri_full, _uri_fields, text)
    if FAST_URI.fullmatch(text):
        assert full[0] != "error", text
    assert _outcome(parse_uri, _uri_fields, text) == full


@SETTINGS
@given(address_text)
def test_address_fast_path_agrees(text):
    full = _outcome(lambda t: _parse_address_full(t, "Bad To"), _address_fields, text)
    if address_ok(text):
        assert full[0] != "error", text
    assert _outcome(lambda t: _parse_address(t, "Bad To"), _address_fields, text) == full


@SETTINGS
@given(via_text)
def test_via_fast_path_agrees(text):
    def fields(via):
        return (via.transport, via.host, via.port, list(via.params.items()))

    full = _outcome(_parse_via_full, fields, text)
    if FAST_VIA.fullmatch(text):
        assert full[0] != "error", text
    assert _outcome(parse_via, fields, text) == full


def test_the_usual_values_take_the_fast_path():
    for text in ('"Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
                 "<sip:u00001@reticulum.local>", "Bob <sips:bob@192.0.2.4:5061;transport=tls>",
                 '<sip:bob@127.0.0.1:7000;ob>;expires=3600;+sip.instance="<urn:uuid:1>"',
                 "sip:carol@chicago.example.com;tag=8321234356"):
        assert FAST_NAME_ADDR.fullmatch(text) or FAST_ADDR_SPEC.fullmatch(text), text
    assert FAST_VIA.fullmatch("SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-1-0;rport")
    assert FAST_URI.fullmatch("sip:bob@127.0.0.1:7000;transport=udp;lr")


AUTH_PIECES = ["Digest", "digest", "Basic", " ", "\t", ",", "=", '"', "\\", "realm", "nonce",
               "NC", "a", "1", "é", '"x y"', '"a,b"', '"a\\"b"', "00000001", "MD5", "-", ";",
               "uri=\"sip:x\"", "qop=auth", " , ", "=="]
auth_text = st.lists(st.sampled_from(AUTH_PIECES), max_size=14).map("".join)


@SETTINGS
@given(auth_text)
def test_auth_fast_path_agrees(text):
    from reticulum.sip.values import _parse_auth_full, parse_auth

    def outcome(parse):
        try:
            scheme, params = parse(text.strip(" \t"))
            return scheme, list(params.items())
        except ParseError as error:
            return ("error", error.reason)

    assert outcome(parse_auth) == outcome(_parse_auth_full)


# -- the message head: CRLF split against the general line grammar -----------------------------

HEAD_PIECES = [b"INVITE sip:bob@example.com SIP/2.0", b"SIP/2.0 200 OK", b"Via: SIP/2.0/UDP h",
               b"To: <sip:b@h>", b"Content-Length: 3", b" folded", b"\tfolded", b"\r\n", b"\n",
               b"\r", b"\r\n\r\n", b"\n\n", b"\r\n\n", b"\n\r\n", b"abc", b"", b":", b"\xc3"]
head_data = st.lists(st.sampled_from(HEAD_PIECES), min_size=1, max_size=16).map(b"".join)


def _head_outcome(split, data):
    try:
        return split(data)
    except ParseError as error:
        return ("error", error.reason)


@SETTINGS
@given(head_data)
def test_head_fast_path_agrees(data):
    data = data.lstrip(b"\r\n")  # as parse() hands it over
    assert _head_outcome(_head_lines, data) == _head_outcome(_head_lines_general, data)


# -- header names: the table of spellings against the rules -------------------------------------

def test_header_name_table_agrees():
    for spelling, info in _INFO.items():
        assert _name_info_of(spelling) == info, spelling


@SETTINGS
@given(st.text(alphabet="ViaTo-vtLCcontent-lengthX \t:é", max_size=16))
def test_header_names_agree(name):
    assert name_info(name) == _name_info_of(name)
    assert name_info(name) == _name_info_of(name)  # again, from the table of names seen


# -- validate(): its quick checks vouch only for what the full parsers accept ------------------

LIST_LINE = st.lists(address_text, min_size=1, max_size=3).map(", ".join)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["Contact", "Route", "Record-Route", "Via"]),
                          st.one_of(LIST_LINE, via_text)), max_size=4))
def test_validate_quick_checks_agree(lines):
    msg = Request("INVITE", "sip:bob@example.com", [
        ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"), ("To", "<sip:bob@example.com>"),
        ("From", "<sip:alice@example.com>;tag=1"), ("Call-ID", "a@b"), ("CSeq", "1 INVITE"),
    ] + lines)
    try:
        msg.validate()
    except ParseError:
        return
    # what validate() passed, the full parsers take too
    check = Request("INVITE", msg.uri, msg.headers.copy())
    check.vias
    check.routes
    check.record_routes
    contacts = check.contacts
    if len(contacts) > 1:
        assert not any(contact.star for contact in contacts)
    assert msg.vias == check.vias
