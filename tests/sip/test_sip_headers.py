"""Header names, compact forms, folding, list splitting and the Headers container."""
from __future__ import annotations

import pytest

from reticulum.sip import COMPACT_FORMS, LIST_HEADERS, Headers, canonical_name, parse


def _msg(*headers: str, body: bytes = b"") -> bytes:
    return ("OPTIONS sip:bob@example.com SIP/2.0\r\n" + "".join(h + "\r\n" for h in headers)
            + "\r\n").encode() + body


@pytest.mark.parametrize("name,canonical", [
    ("call-id", "Call-ID"), ("CALL-ID", "Call-ID"), ("Call-Id", "Call-ID"), ("i", "Call-ID"),
    ("cseq", "CSeq"), ("www-authenticate", "WWW-Authenticate"), ("max-forwards", "Max-Forwards"),
    ("record-route", "Record-Route"), ("v", "Via"), ("V", "Via"), ("m", "Contact"), ("x-custom", "x-custom"),
    ("X-Custom", "X-Custom"), ("proxy-authorization", "Proxy-Authorization"), ("rseq", "RSeq"),
    ("sip-etag", "SIP-ETag"), ("mime-version", "MIME-Version"),
])
def test_canonical_names(name, canonical):
    assert canonical_name(name) == canonical


def test_all_compact_forms():
    expected = {"i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
                "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
                "v": "Via", "o": "Event", "r": "Refer-To", "b": "Referred-By", "u": "Allow-Events",
                "a": "Accept-Contact", "j": "Reject-Contact", "d": "Request-Disposition",
                "x": "Session-Expires", "y": "Identity", "n": "Identity-Info"}
    assert COMPACT_FORMS == expected
    for short, long in expected.items():
        value = "0" if short == "l" else "value-" + short
        m = parse(_msg("%s: %s" % (short.upper(), value)))
        assert m.get(long) == value
        assert m.get(short) == value
        assert m.get(long.upper()) == value
        assert m.headers.items()[0][0] == long  # serialized with its long name
        assert ("\r\n%s: %s\r\n" % (long, value)).encode() in bytes(m)


def test_case_insensitive_lookup_and_spaces_before_colon():
    m = parse(_msg("ViA  : SIP/2.0/UDP a.example.com", "MaX-fOrWaRdS: 0068", "X-Thing :  v "))
    assert m.get("via") == "SIP/2.0/UDP a.example.com"
    assert m.max_forwards == 68
    assert m.get("x-thing") == "v" and m.headers.items()[2][0] == "X-Thing"


def test_folding():
    m = parse(_msg("Subject: first", "  second\tpart", "\tthird", "cseq: 0009", "  INVITE",
                   "TO :", " sip:vivekg@example.com ;   tag    = 1918181833n"))
    assert m.get("Subject") == "first second\tpart third"
    assert m.cseq.number == 9 and m.cseq.method == "INVITE"
    assert m.to.tag == "1918181833n"


def test_fold_inside_quoted_string_and_params():
    m = parse(_msg('From: "A', ' B" <sip:a@example.com>', "  ;", "  tag = x"))
    assert m.from_.display == "A B" and m.from_.tag == "x"


def test_multi_value_splitting():
    m = parse(_msg(
        "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com;branch=z9hG4bK2",
        "v: SIP/2.0/UDP c.example.com",
        'Contact: "Doe, John" <sip:j,k@example.com;a=1>;q=0.5, <sip:k@example.com>',
        "Supported: path, outbound,,gruu", "Supported:", "Require: 100rel",
        "Date: Sat, 13 Nov 2010 23:29:00 GMT",
        'WWW-Authenticate: Digest realm="a", nonce="b"',
        "Subject: hello, world", "User-Agent: X/1 (a, b)", "X-Unknown: a, b",
    ))
    assert m.get_all("Via") == ["SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
                                "SIP/2.0/TCP b.example.com;branch=z9hG4bK2", "SIP/2.0/UDP c.example.com"]
    assert [v.host for v in m.vias] == ["a.example.com", "b.example.com", "c.example.com"]
    assert m.get("Via") == "SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com;branch=z9hG4bK2"
    assert m.get_all("Contact") == ['"Doe, John" <sip:j,k@example.com;a=1>;q=0.5', "<sip:k@example.com>"]
    assert [c.display for c in m.contacts] == ["Doe, John", None]
    assert m.get_all("supported") == ["path", "outbound", "gruu"]
    assert m.get_all("Require") == ["100rel"]
    assert m.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert m.get_all("WWW-Authenticate") == ['Digest realm="a", nonce="b"']
    assert m.get_all("Subject") == ["hello, world"]
    assert m.get_all("User-Agent") == ["X/1 (a, b)"]
    assert m.get_all("X-Unknown") == ["a, b"]
    assert m.get_all("Route") == [] and m.get("Route") is None


def test_list_headers_table():
    for name in ("via", "contact", "route", "record-route", "path", "allow", "supported", "require",
                 "proxy-require", "unsupported", "accept", "allow-events", "service-route"):
        assert name in LIST_HEADERS
    for name in ("www-authenticate", "authorization", "proxy-authenticate", "proxy-authorization",
                 "date", "subject", "user-agent", "server", "call-id", "cseq", "to", "from",
                 "content-type", "retry-after", "authentication-info"):
        assert name not in LIST_HEADERS


def test_headers_container_operations():
    h = Headers([("Via", "SIP/2.0/UDP a"), ("To", "<sip:b@x>"), ("Via", "SIP/2.0/UDP b, SIP/2.0/UDP c")])
    assert len(h) == 3 and "via" in h and "v" in h and "Route" not in h
    h.add("Via", "SIP/2.0/UDP top", first=True)
    assert h.items()[0] == ("Via", "SIP/2.0/UDP top")
    h.add("Via", "SIP/2.0/UDP bottom")
    assert h.items()[-1] == ("Via", "SIP/2.0/UDP bottom")
    h.add("Record-Route", "<sip:p1;lr>", first=True)
    assert h.items()[0] == ("Record-Route", "<sip:p1;lr>")
    h.add("X-New", "1")
    assert h.items()[-1] == ("X-New", "1")
    h.remove_first("Via")
    h.remove_first("Via")
    assert h.get_all("Via") == ["SIP/2.0/UDP b", "SIP/2.0/UDP c", "SIP/2.0/UDP bottom"]
    h.remove_first("Via")  # one element of a combined line
    assert h.get_all("Via") == ["SIP/2.0/UDP c", "SIP/2.0/UDP bottom"]
    assert h.lines("Via") == ["SIP/2.0/UDP c", "SIP/2.0/UDP bottom"]
    h.set("Via", "SIP/2.0/TCP only")
    assert h.get_all("Via") == ["SIP/2.0/TCP only"] and h.count("via") == 1
    h.remove("VIA")
    assert "Via" not in h
    h.remove_first("Nothing")
    h.set("t", "<sip:c@x>")
    assert h.get("To") == "<sip:c@x>" and h.count("To") == 1
    h2 = h.copy()
    h2.set("To", "<sip:d@x>")
    assert h.get("To") == "<sip:c@x>"
    assert list(h) == h.items()
    assert Headers({"To": "<sip:a@x>", "Via": ["SIP/2.0/UDP a", "SIP/2.0/UDP b"]}).count("via") == 2


def test_remove_first_skips_empty_lines_and_non_list_headers():
    h = Headers([("Route", ""), ("Route", "<sip:a;lr>, <sip:b;lr>"), ("Subject", "a, b"), ("Subject", "c")])
    h.remove_first("Route")
    assert h.get_all("Route") == ["<sip:b;lr>"]
    h.remove_first("Subject")
    assert h.get_all("Subject") == ["c"]


def test_bad_header_names_and_values_on_set():
    h = Headers()
    with pytest.raises(ValueError):
        h.set("Bad Name", "x")
    with pytest.raises(ValueError):
        h.add("X-Evil", "a\r\nVia: injected")
    with pytest.raises(TypeError):
        h.add("X-None", None)


def test_cache_dropped_on_change():
    m = parse(_msg("Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1", "To: <sip:a@example.com>"))
    assert m.via.host == "a.example.com"
    m.add("Via", "SIP/2.0/TCP b.example.com;branch=z9hG4bK2", first=True)
    assert m.via.host == "b.example.com" and len(m.vias) == 2
    m.remove_first("Via")
    assert m.via.host == "a.example.com"
    to = m.to
    to.params["tag"] = "xyz"
    m.set("To", str(to))
    assert m.get("To") == "<sip:a@example.com>;tag=xyz" and m.to.tag == "xyz"
    m.headers.remove("To")
    assert m.to is None
