"""Messages: parse, validate, serialize, copy, make_response."""
from __future__ import annotations

import pytest

from reticulum.sip import (
    REASONS,
    Address,
    Headers,
    ParseError,
    Request,
    Response,
    make_response,
    parse,
    parse_uri,
    reason_phrase,
)

SDP = (b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\ns=-\r\n"
       b"c=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def invite(*extra: str, body: bytes = SDP, length=None, first="INVITE sip:bob@biloxi.example.com SIP/2.0") -> bytes:
    lines = [
        first,
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70",
        "To: Bob <sip:bob@biloxi.example.com>",
        'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
        "CSeq: 314159 INVITE",
        "Contact: <sip:alice@pc33.atlanta.example.com>",
        "Content-Type: application/sdp",
    ] + list(extra)
    if length is not False:
        lines.append("Content-Length: %s" % (len(body) if length is None else length))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_parse_request():
    m = parse(invite())
    assert isinstance(m, Request)
    assert m.method == "INVITE" and m.version == "SIP/2.0"
    assert m.uri == parse_uri("sip:bob@biloxi.example.com")
    assert m.via.branch == "z9hG4bK776asdhds" and m.via.host == "pc33.atlanta.example.com"
    assert m.max_forwards == 70
    assert m.to.display == "Bob" and m.to.tag is None
    assert m.from_.tag == "1928301774"
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert (m.cseq.number, m.cseq.method) == (314159, "INVITE")
    assert [c.uri.user for c in m.contacts] == ["alice"]
    assert m.routes == [] and m.record_routes == [] and m.expires is None
    assert m.body == SDP
    m.validate()


def test_parse_response():
    data = (b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n"
            b"To: <sip:b@example.com>;tag=x\r\nFrom: <sip:a@example.com>;tag=y\r\n"
            b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    m = parse(data)
    assert isinstance(m, Response) and m.status == 180 and m.reason == "Ringing"
    m.validate()
    assert bytes(m) == data


def test_unmodified_serialization_reuses_raw_values():
    data = invite("X-Odd:   spaced  value", "Subject: a,b")
    m = parse(data)
    assert m.to_bytes() == data.replace(b"X-Odd:   spaced  value", b"X-Odd: spaced  value")
    assert bytes(m) == m.to_bytes()


def test_serializer_writes_content_length():
    m = parse(invite(length=False))  # UDP without Content-Length: body is everything
    assert m.body == SDP
    out = bytes(m)
    assert b"\r\nContent-Length: %d\r\n\r\n" % len(SDP) in out
    m.body = b"hello"
    assert bytes(m).endswith(b"Content-Length: 5\r\n\r\nhello")
    r = Request("OPTIONS", "sip:x@example.com")
    assert bytes(r) == b"OPTIONS sip:x@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n"


def test_udp_body_cut_to_content_length_and_extra_ignored():
    m = parse(invite(length=10))
    assert m.body == SDP[:10]
    m = parse(invite(body=b"", length=0) + b"garbage after the message")
    assert m.body == b""


def test_udp_content_length_too_large():
    with pytest.raises(ParseError) as info:
        parse(invite(length=len(SDP) + 1))
    assert info.value.reason == "Incomplete body" and info.value.status == 400
    assert isinstance(info.value.partial, Request) and info.value.partial.call_id


@pytest.mark.parametrize("value", ["-999", "abc", "", "1 2", "0x10", "99999999999999999999999"])
def test_bad_content_length(value):
    with pytest.raises(ParseError) as info:
        parse(invite(length=value))
    assert info.value.reason in ("Bad Content-Length", "Incomplete body")


def test_stream_mode():
    assert parse(invite(), stream=True).body == SDP
    with pytest.raises(ParseError) as info:
        parse(invite(length=False), stream=True)
    assert info.value.reason == "Missing Content-Length"
    with pytest.raises(ParseError) as info:
        parse(invite("Content-Length: 5"), stream=True)
    assert info.value.reason == "Multiple Content-Length"


def test_multiple_content_length_udp_parses_validate_refuses():
    m = parse(invite("l: 5"))
    assert m.body == SDP
    with pytest.raises(ParseError) as info:
        m.validate()
    assert info.value.reason == "Multiple Content-Length"


def test_leading_crlf_bare_lf_and_missing_blank_line():
    m = parse(b"\r\n\r\n" + invite())
    assert m.method == "INVITE"
    m = parse(invite(body=b"hello\n").replace(b"\r\n", b"\n"))
    assert m.body == b"hello\n"
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    head = invite(body=b"", length=0)[:-4]
    m = parse(head)
    assert m.body == b"" and m.cseq.number == 314159


def test_bare_cr_rejected():
    with pytest.raises(ParseError):
        parse(invite("X-A: a\rb"))


@pytest.mark.parametrize("first,reason,status", [
    ("INVITE  sip:bob@biloxi.example.com  SIP/2.0", "Bad Request-Line", 400),
    ("INVITE sip:bob@biloxi.example.com SIP/2.0  ", "Bad Request-Line", 400),
    (" INVITE sip:bob@biloxi.example.com SIP/2.0", "Bad Request-Line", 400),
    ("INVITE\tsip:bob@biloxi.example.com SIP/2.0", "Bad Request-Line", 400),
    ("INVITE sip:bob@biloxi.example.com; lr SIP/2.0", "Bad Request-URI", 400),
    ("INVITE <sip:bob@biloxi.example.com> SIP/2.0", "Bad Request-URI", 400),
    ("INVITE sip:bob@ SIP/2.0", "Bad Request-URI", 400),
    ("INVITE sip:bob@biloxi.example.com SIP/7.0", "Version Not Supported", 505),
    ("INVITE sip:bob@biloxi.example.com SIP/2.00x", "Bad Request-Line", 400),
    ("INVITE sip:bob@biloxi.example.com", "Bad Request-Line", 400),
])
def test_bad_request_lines(first, reason, status):
    with pytest.raises(ParseError) as info:
        parse(invite(first=first))
    assert (info.value.reason, info.value.status) == (reason, status)
    partial = info.value.partial
    assert isinstance(partial, Request) and partial.method == "INVITE"
    response = make_response(partial, status, reason)
    assert response.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert response.via.branch == "z9hG4bK776asdhds"


def test_lowercase_version_accepted():
    assert parse(invite(first="INVITE sip:bob@biloxi.example.com sip/2.0")).method == "INVITE"


def test_bad_method_token_has_no_partial():
    with pytest.raises(ParseError) as info:
        parse(invite(first="INV(ITE sip:bob@biloxi.example.com SIP/2.0"))
    assert info.value.partial is None


@pytest.mark.parametrize("first,reason,status", [
    ("SIP/2.0 4294967301 better not break the receiver", "Bad status code", 400),
    ("SIP/2.0 20 OK", "Bad status code", 400),
    ("SIP/2.0 099 Odd", "Bad status code", 400),
    ("SIP/2.0 700 Odd", "Bad status code", 400),
    ("SIP/2.0 2x0 OK", "Bad status code", 400),
    ("SIP/3.0 200 OK", "Version Not Supported", 505),
    ("SIP/2.0", "Bad Status-Line", 400),
])
def test_bad_status_lines(first, reason, status):
    data = (first + "\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n").encode()
    with pytest.raises(ParseError) as info:
        parse(data)
    assert (info.value.reason, info.value.status, info.value.partial) == (reason, status, None)


def test_empty_reason_phrase():
    m = parse(b"SIP/2.0 100 \r\nContent-Length: 0\r\n\r\n")
    assert m.status == 100 and m.reason == ""
    assert parse(b"SIP/2.0 100\r\n\r\n").reason == ""


def test_bad_header_line_gives_partial():
    with pytest.raises(ParseError) as info:
        parse(invite("this line has no colon"))
    assert info.value.reason == "Bad header line"
    assert info.value.partial.cseq.number == 314159
    with pytest.raises(ParseError):
        parse(invite("Bad Name: x"))
    with pytest.raises(ParseError):
        parse(b"INVITE sip:a@b SIP/2.0\r\n continuation-first\r\n\r\n")


@pytest.mark.parametrize("data", [b"", b"\r\n\r\n", b"\r\n", b"   ", b"\x00\x01", b"SIP/2.0 200 OK"])
def test_garbage(data):
    with pytest.raises(ParseError):
        parse(data).validate()


def test_str_input_accepted():
    assert parse(invite().decode()).method == "INVITE"


# -- validate ------------------------------------------------------------------------------


def _drop(data: bytes, name: bytes) -> bytes:
    return b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(name + b":"))


@pytest.mark.parametrize("name,reason", [
    (b"To", "Missing To"), (b"From", "Missing From"), (b"Call-ID", "Missing Call-ID"),
    (b"CSeq", "Missing CSeq"), (b"Via", "Missing Via"),
])
def test_validate_missing(name, reason):
    m = parse(_drop(invite(), name))
    with pytest.raises(ParseError) as info:
        m.validate()
    assert info.value.reason == reason


def test_validate_allows_missing_max_forwards():
    parse(_drop(invite(), b"Max-Forwards")).validate()


@pytest.mark.parametrize("extra,reason", [
    ("To: <sip:other@example.com>", "Multiple To"),
    ("f: <sip:other@example.com>;tag=1", "Multiple From"),
    ("i: other-call-id", "Multiple Call-ID"),
    ("CSeq: 1 INVITE", "Multiple CSeq"),
    ("Max-Forwards: 70", "Multiple Max-Forwards"),
    ("Expires: 1", None), ("Date: Sat, 13 Nov 2010 23:29:00 GMT", None),
])
def test_validate_duplicates(extra, reason):
    m = parse(invite(extra))
    if reason is None:
        m.validate()
        m = parse(invite(extra, extra))
        reason = "Multiple " + extra.split(":")[0]
    with pytest.raises(ParseError) as info:
        m.validate()
    assert info.value.reason == reason


@pytest.mark.parametrize("old,new,reason", [
    (b"CSeq: 314159 INVITE", b"CSeq: 314159 OPTIONS", "CSeq method mismatch"),
    (b"CSeq: 314159 INVITE", b"CSeq: 4294967296 INVITE", "CSeq out of range"),
    (b"CSeq: 314159 INVITE", b"CSeq: x INVITE", "Bad CSeq"),
    (b"Max-Forwards: 70", b"Max-Forwards: 256", "Max-Forwards out of range"),
    (b"Max-Forwards: 70", b"Max-Forwards: -1", "Bad Max-Forwards"),
    (b"Max-Forwards: 70", b"Expires: 4294967296", "Expires out of range"),
    (b"Max-Forwards: 70", b"Expires: soon", "Bad Expires"),
    (b"Max-Forwards: 70", b"Date: Fri, 01 Jan 2010 16:00:00 EST", "Bad Date"),
    (b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com", b"Call-ID: a b", "Bad Call-ID"),
    (b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com", b"Call-ID: a@b@c", "Bad Call-ID"),
    (b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com", b"Call-ID: a;b", "Bad Call-ID"),
    (b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com", b"Call-ID:", "Bad Call-ID"),
    (b"To: Bob <sip:bob@biloxi.example.com>", b"To: Bob <sip:bob@biloxi.example.com", "Bad To"),
    (b"To: Bob <sip:bob@biloxi.example.com>", b"To: Bob, Jr <sip:bob@biloxi.example.com>", "Bad display name"),
    (b"Contact: <sip:alice@pc33.atlanta.example.com>", b"Contact: *, <sip:a@b>", "Bad Contact"),
    (b"Contact: <sip:alice@pc33.atlanta.example.com>", b"Contact: sip:a@b?x=y", "Bad Contact"),
    (b"Contact: <sip:alice@pc33.atlanta.example.com>", b"Contact: <sip:a@b>,", "Bad Contact"),
    (b"Max-Forwards: 70", b"Route: <sip:p.example.com;lr", "Bad Route"),
    (b"Max-Forwards: 70", b"Record-Route: junk junk", "Bad Record-Route"),
    (b"INVITE sip:bob@biloxi.example.com SIP/2.0", b"INVITE sip:bob@biloxi.example.com?Route=%3Csip:x%3E SIP/2.0",
     "Bad Request-URI"),
    (b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds", b"Via: SIP/2.0/UDP a;;", "Bad Via"),
    (b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds", b"Via:", "Bad Via"),
])
def test_validate_errors(old, new, reason):
    data = invite().replace(old, new)
    assert data != invite()
    m = parse(data)
    with pytest.raises(ParseError) as info:
        m.validate()
    assert info.value.reason == reason and info.value.status == 400


def test_validate_accepts_star_contact_and_opaque_request_uri():
    parse(invite().replace(b"Contact: <sip:alice@pc33.atlanta.example.com>", b"Contact: *")).validate()
    m = parse(invite(first="OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0").replace(
        b"314159 INVITE", b"314159 OPTIONS"))
    m.validate()
    assert m.uri.scheme == "nobodyknowsthisscheme"


def test_max_forwards_zero_and_leading_zeros():
    m = parse(invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
    m.validate()
    assert m.max_forwards == 0
    assert parse(invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0068")).max_forwards == 68


# -- building, copying, responses ---------------------------------------------------------


def test_build_request():
    r = Request("REGISTER", parse_uri("sip:example.com"), [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
                                                          ("To", "<sip:a@example.com>"),
                                                          ("From", "<sip:a@example.com>;tag=1"),
                                                          ("Call-ID", "c"), ("CSeq", "1 REGISTER")])
    r.add("Contact", Address("sip:a@192.0.2.1", params={"expires": "60"}))
    r.validate()
    again = parse(bytes(r))
    assert again == r and again.contacts[0].params == {"expires": "60"}


def test_copy_is_independent():
    m = parse(invite())
    m.flow = "attached by the core"
    c = m.copy()
    assert c == m and c.flow == m.flow
    c.add("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp", first=True)
    c.uri.params["lr"] = None
    c.set("Max-Forwards", "69")
    assert m.via.host == "pc33.atlanta.example.com" and m.uri.params == {} and m.max_forwards == 70
    assert c.via.host == "proxy.example.com" and c.max_forwards == 69
    r = make_response(m, 200)
    r2 = r.copy()
    r2.status = 500
    assert r.status == 200


def test_stamp_received_like_the_core_does():
    m = parse(invite().replace(b"branch=z9hG4bK776asdhds", b"branch=z9hG4bK776asdhds;rport"))
    via = m.via
    via.params["received"] = "192.0.2.9"
    via.params["rport"] = "5062"
    m.remove_first("Via")
    m.add("Via", str(via), first=True)
    assert m.get("Via") == "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport=5062;received=192.0.2.9"
    assert m.via.received == "192.0.2.9" and m.via.rport == "5062"


def test_make_response():
    m = parse(invite("Via: SIP/2.0/UDP second.example.com;branch=z9hG4bK2", "Timestamp: 54",
                     "Record-Route: <sip:p.example.com;lr>"))
    r = make_response(m, 180, to_tag="abc")
    assert r.status == 180 and r.reason == "Ringing"
    assert [v.host for v in r.vias] == ["pc33.atlanta.example.com", "second.example.com"]
    assert r.get("To") == "Bob <sip:bob@biloxi.example.com>;tag=abc" and r.to.tag == "abc"
    assert r.get("From") == m.get("From") and r.call_id == m.call_id and r.cseq == m.cseq
    assert r.get("Timestamp") is None and r.get("Record-Route") is None and r.body == b""
    r.validate()
    assert make_response(m, 100).get("Timestamp") == "54"
    assert make_response(m, 486, "Busy Here Now").reason == "Busy Here Now"
    tagged = parse(invite().replace(b"To: Bob <sip:bob@biloxi.example.com>", b"To: <sip:b@x>;tag=old"))
    assert make_response(tagged, 200, to_tag="new").to.tag == "old"
    out = bytes(r)
    assert out.startswith(b"SIP/2.0 180 Ringing\r\nVia: ") and out.endswith(b"Content-Length: 0\r\n\r\n")


def test_make_response_with_broken_to():
    m = parse(invite().replace(b"To: Bob <sip:bob@biloxi.example.com>", b'To: "Bob <sip:bob@x>'))
    r = make_response(m, 400, "Bad To", to_tag="t1")
    assert r.get("To") == '"Bob <sip:bob@x>;tag=t1'


def test_reason_phrases():
    for code in (100, 180, 181, 182, 183, 200, 202, 300, 301, 302, 305, 380, 400, 401, 402, 403,
                 404, 405, 406, 407, 408, 410, 413, 414, 415, 416, 420, 421, 423, 429, 480, 481,
                 482, 483, 484, 485, 486, 487, 488, 489, 491, 493, 494, 500, 501, 502, 503, 504,
                 505, 513, 580, 600, 603, 604, 606):
        assert REASONS[code]
    assert reason_phrase(483) == "Too Many Hops" and reason_phrase(423) == "Interval Too Brief"
    assert reason_phrase(499) == "Bad Request" and reason_phrase(299) == "OK"
    assert Response(404).reason == "Not Found"
    assert Response(202, headers=Headers([("Expires", "5")])).expires == 5


def test_hashing():
    m = parse(invite())
    assert m in {m} and m.copy() == m
    assert {parse_uri("sip:a@B.com;x=1")} == {parse_uri("sip:a@b.com;x=1")}
    assert len({m.to, parse(invite()).to}) == 1 and len({m.via, parse(invite()).via}) == 1


def test_many_continuation_lines_are_linear():
    import time
    data = invite("Subject: start" + "\r\n x" * 40000)
    started = time.perf_counter()
    m = parse(data)
    assert time.perf_counter() - started < 2.0
    assert m.get("Subject") == "start" + " x" * 40000


def test_reason_phrase_cannot_inject_lines():
    r = make_response(parse(invite()), 400, "Bad\r\nVia: SIP/2.0/UDP evil")
    out = bytes(r)
    assert out.startswith(b"SIP/2.0 400 Bad  Via: SIP/2.0/UDP evil\r\n")
    assert parse(out).get_all("Via") == [parse(invite()).get("Via")]
