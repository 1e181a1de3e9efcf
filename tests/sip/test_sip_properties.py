"""Property tests: messages built from random components parse to those components, and
parse -> serialize -> parse is stable; random and mutated input raises nothing but ParseError."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reticulum.sip import (
    URI,
    Address,
    CSeq,
    ParseError,
    Request,
    Response,
    Via,
    make_response,
    parse,
    parse_address,
    parse_auth,
    parse_uri,
    parse_via,
    quote,
)
from reticulum.sip.headers import COMPACT_FORMS

# RETICULUM_HYPOTHESIS_SCALE=10 runs ten times as many examples (a deeper search).
SCALE = float(os.environ.get("RETICULUM_HYPOTHESIS_SCALE", "1"))
SETTINGS = settings(max_examples=int(200 * SCALE), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_SETTINGS = settings(max_examples=int(1000 * SCALE), deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LOWER = "abcdefghijklmnopqrstuvwxyz"
ALNUM = LOWER + LOWER.upper() + "0123456789"
UNRESERVED = ALNUM + "-_.!~*'()"
TOKEN = ALNUM + "-.!%*_+`'~"
WORD = ALNUM + "-.!%*_+`'~()<>:\\\"/[]?{}"
METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
           "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"]

# -- components ------------------------------------------------------------------------------

token = st.text(alphabet=TOKEN, min_size=1, max_size=10)
method = st.one_of(st.sampled_from(METHODS), token)
escape = st.integers(0, 255).flatmap(
    lambda b: st.sampled_from(["%%%02X" % b, "%%%02x" % b]))


def chars_or_escapes(alphabet: str, min_size: int = 1, max_size: int = 8):
    return st.lists(st.one_of(st.sampled_from(alphabet), escape), min_size=min_size,
                    max_size=max_size).map("".join)


label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=1, max_size=4).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: "%d.%d.%d.%d" % t)
ipv6 = st.integers(0, 2 ** 128 - 1).map(lambda i: str(ipaddress.IPv6Address(i)))
host = st.one_of(hostname, ipv4, ipv6)
port = st.one_of(st.none(), st.integers(0, 65535))
uri_param_name = st.text(alphabet=LOWER + "0123456789-_.!~*'()[]/:&+$", min_size=1, max_size=8)
uri_param_value = st.one_of(st.none(), chars_or_escapes(UNRESERVED + "[]/:&+$"))
uri_header_part = chars_or_escapes(UNRESERVED + "[]/?:+$")
uri_headers = st.one_of(st.none(), st.lists(
    st.tuples(uri_header_part, chars_or_escapes(UNRESERVED + "[]/?:+$", min_size=0)),
    min_size=1, max_size=3).map(lambda pairs: "&".join(n + "=" + v for n, v in pairs)))


@st.composite
def sip_uris(draw, with_headers: bool = True) -> URI:
    user = draw(st.one_of(st.none(), chars_or_escapes(UNRESERVED + "&=+$,;?/")))
    password = draw(st.one_of(st.none(), chars_or_escapes(UNRESERVED + "&=+$,", min_size=0))) \
        if user is not None else None
    return URI(draw(st.sampled_from(["sip", "sips"])), user=user, password=password,
               host=draw(host), port=draw(port),
               params=draw(st.dictionaries(uri_param_name, uri_param_value, max_size=4)),
               headers=draw(uri_headers) if with_headers else None)


@st.composite
def tel_uris(draw) -> URI:
    number = draw(st.one_of(
        st.from_regex(r"\+[0-9][0-9().-]{0,12}", fullmatch=True),
        st.from_regex(r"[0-9*#A-F][0-9*#A-F.-]{0,8}", fullmatch=True)))
    params = draw(st.dictionaries(st.text(alphabet=LOWER + "-", min_size=1, max_size=8),
                                  st.one_of(st.none(), hostname), max_size=2))
    text = number + "".join(";" + k + ("" if v is None else "=" + v) for k, v in params.items())
    return URI("tel", user=number, params=params, opaque=text)


@st.composite
def opaque_uris(draw) -> URI:
    scheme = draw(st.from_regex(r"[a-z][a-z0-9+.-]{0,8}", fullmatch=True)
                  .filter(lambda s: s not in ("sip", "sips", "tel")))
    rest = draw(chars_or_escapes(UNRESERVED + ";/?:@&=+$,#[]", max_size=15))
    return URI(scheme, opaque=rest)


uris = st.one_of(sip_uris(), sip_uris(), tel_uris(), opaque_uris())
display_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                       max_size=12)
token_display = st.lists(token, min_size=1, max_size=3).map(" ".join)
header_param_name = st.text(alphabet=LOWER + "0123456789-.!%*_+`'~", min_size=1, max_size=8)
header_param_value = st.one_of(
    st.none(), st.text(alphabet=TOKEN + ":[]", min_size=1, max_size=10),
    display_text.map(quote))


@st.composite
def addresses(draw, uri_strategy=uris):
    display = draw(st.one_of(st.none(), display_text, token_display))
    params = draw(st.dictionaries(header_param_name, header_param_value, max_size=3))
    return Address(draw(uri_strategy), display, params)


@st.composite
def vias(draw) -> Via:
    params = {"branch": "z9hG4bK" + draw(token)}
    if draw(st.booleans()):
        params["received"] = draw(st.one_of(ipv4, ipv6))
    if draw(st.booleans()):
        params["rport"] = draw(st.one_of(st.none(), st.integers(1, 65535).map(str)))
    params.update(draw(st.dictionaries(header_param_name, header_param_value, max_size=2)))
    transport = draw(st.one_of(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "WSS"]),
                               token.map(str.upper)))
    return Via(transport, draw(host), draw(port), params)


call_ids = st.one_of(st.text(alphabet=WORD.replace("@", ""), min_size=1, max_size=20),
                     st.tuples(st.text(alphabet=WORD, min_size=1, max_size=10),
                               hostname).map("@".join))
extension_value = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                          max_size=30).map(lambda s: s.strip(" \t"))

# -- rendering with the liberties the grammar allows -----------------------------------------


def render_address(a: Address, style: int) -> str:
    if style == 1 and a.display is not None and a.display and all(
            part and all(c in TOKEN for c in part) for part in a.display.split(" ")):
        return a.display + " <" + str(a.uri) + ">" + "".join(
            " ; " + k if v is None else " ;" + k + " = " + v for k, v in a.params.items())
    # RFC 3261 §20: a URI with a comma, question mark or semicolon anywhere (user, password,
    # opaque part) must stay in angle brackets
    if style == 2 and a.display is None and not a.uri.params and a.uri.headers is None and \
            not any(c in str(a.uri) for c in ";?,"):
        return str(a)[1:].replace(">", "", 1)  # addr-spec form
    return str(a)


@st.composite
def header_spelling(draw, name: str) -> str:
    forms = [name, name.lower(), name.upper()]
    for short, long in COMPACT_FORMS.items():
        if long == name:
            forms.append(short)
    return draw(st.sampled_from(forms)) + draw(st.sampled_from([": ", ":", " : ", ":\t", ":   "]))


def fold(value: str, where: int) -> str:
    """Fold a header value at one single space that has no whitespace beside it."""
    spots = [i for i, c in enumerate(value) if c == " " and 0 < i < len(value) - 1
             and value[i - 1] not in " \t" and value[i + 1] not in " \t"]
    if not spots:
        return value
    i = spots[where % len(spots)]
    return value[:i] + "\r\n" + value[i:]


@st.composite
def messages(draw):
    """(raw bytes, the components it was made of)."""
    is_request = draw(st.booleans())
    m = draw(method)
    parts = {}
    if is_request:
        parts["method"] = m
        parts["uri"] = draw(st.one_of(sip_uris(with_headers=False), tel_uris(), opaque_uris()))
        start = "%s %s SIP/2.0" % (m, parts["uri"])
    else:
        parts["status"] = draw(st.integers(100, 699))
        parts["reason"] = draw(st.text(st.characters(blacklist_categories=("Cs",),
                                                     blacklist_characters="\r\n"), max_size=20))
        start = "SIP/2.0 %d %s" % (parts["status"], parts["reason"])
    parts["vias"] = draw(st.lists(vias(), min_size=1, max_size=4))
    parts["from"] = draw(addresses())
    parts["to"] = draw(addresses())
    parts["call_id"] = draw(call_ids)
    parts["cseq"] = CSeq(draw(st.integers(0, 2 ** 31 - 1)), m)
    parts["contacts"] = draw(st.lists(addresses(sip_uris()), max_size=3))
    parts["routes"] = draw(st.lists(addresses(sip_uris(with_headers=False)), max_size=3))
    parts["max_forwards"] = draw(st.one_of(st.none(), st.integers(0, 255)))
    parts["extensions"] = draw(st.lists(
        st.tuples(token.map(lambda t: "X-" + t), extension_value), max_size=3,
        unique_by=lambda pair: pair[0].lower()))
    parts["body"] = draw(st.binary(max_size=300))
    folded = draw(st.booleans())
    where = draw(st.integers(0, 1000))

    lines = []  # (name, value, typed): typed values may be folded
    via_values = [str(v) for v in parts["vias"]]
    if draw(st.booleans()):
        lines.append(("Via", ", ".join(via_values)))
    else:
        lines.extend(("Via", v) for v in via_values)
    lines.append(("From", render_address(parts["from"], draw(st.integers(0, 2)))))
    lines.append(("To", render_address(parts["to"], draw(st.integers(0, 2)))))
    lines.append(("Call-ID", parts["call_id"]))
    lines.append(("CSeq", str(parts["cseq"]).replace(" ", draw(st.sampled_from([" ", "  ", "\t"])))))
    if parts["max_forwards"] is not None:
        lines.append(("Max-Forwards", str(parts["max_forwards"])))
    if parts["contacts"]:
        values = [render_address(c, draw(st.integers(0, 2))) for c in parts["contacts"]]
        if draw(st.booleans()):
            lines.append(("Contact", " , ".join(values)))
        else:
            lines.extend(("Contact", v) for v in values)
    for route in parts["routes"]:
        lines.append(("Route", str(route)))
    lines.extend(parts["extensions"])
    # any order of lines, but lines of the same name keep their relative order
    order = draw(st.permutations(range(len(lines))))
    by_name: dict = {}
    for i in range(len(lines)):
        by_name.setdefault(lines[i][0], []).append(i)
    order = [by_name[lines[i][0]].pop(0) for i in order]
    text = [start]
    for i in order:
        name, value = lines[i]
        if folded and name not in ("Call-ID", "Max-Forwards") and not name.startswith("X-"):
            value = fold(value, where + i)
        text.append(draw(header_spelling(name)) + value)
    body = parts["body"]
    if draw(st.booleans()) or body.startswith((b"\r", b"\n")):
        text.append(draw(header_spelling("Content-Length")) + str(len(body)))
    raw = ("\r\n".join(text) + "\r\n\r\n").encode("utf-8") + body
    return raw, parts


def check_components(msg, parts) -> None:
    if "method" in parts:
        assert isinstance(msg, Request)
        assert msg.method == parts["method"]
        assert msg.uri == parts["uri"]
    else:
        assert isinstance(msg, Response)
        assert (msg.status, msg.reason) == (parts["status"], parts["reason"])
    assert msg.vias == parts["vias"]
    assert msg.from_ == parts["from"]
    assert msg.to == parts["to"]
    assert msg.call_id == parts["call_id"]
    assert msg.cseq == parts["cseq"]
    assert msg.contacts == parts["contacts"]
    assert msg.routes == parts["routes"]
    assert msg.max_forwards == parts["max_forwards"]
    for name, value in parts["extensions"]:
        assert msg.get_all(name) == [value]
    assert msg.body == parts["body"]


@SETTINGS
@given(messages())
def test_generated_messages_parse_to_their_components(sample):
    raw, parts = sample
    msg = parse(raw)
    check_components(msg, parts)
    if "method" in parts:
        msg.validate()
    else:
        msg.validate()


@SETTINGS
@given(messages())
def test_parse_serialize_parse_is_stable(sample):
    raw, parts = sample
    first = parse(raw)
    out = bytes(first)
    second = parse(out)
    assert second == first
    assert bytes(second) == out
    check_components(second, parts)
    assert parse(out, stream=True) == first


@SETTINGS
@given(uris)
def test_uri_str_round_trip(uri):
    assert parse_uri(str(uri)) == uri
    assert parse_uri(str(uri)).equivalent(uri)
    assert str(parse_uri(str(uri))) == str(uri)


@SETTINGS
@given(addresses())
def test_address_str_round_trip(address):
    again = parse_address(str(address))
    assert again == address
    assert str(again) == str(address)


@SETTINGS
@given(vias())
def test_via_str_round_trip(via):
    again = parse_via(str(via))
    assert again == via
    assert str(again) == str(via)


# -- nothing but ParseError ------------------------------------------------------------------

TORTURE = Path(__file__).resolve().parents[2].parent / "shared" / "rfc4475"
SEEDS = sorted(p.read_bytes() for p in TORTURE.glob("*.dat")) if TORTURE.is_dir() else []
SEEDS.append(b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1"
             b"\r\nTo: <sip:bob@example.com>\r\nFrom: \"A\" <sip:a@example.com>;tag=1\r\n"
             b"Call-ID: x@y\r\nCSeq: 1 INVITE\r\nContact: <sip:a@192.0.2.1>;expires=60\r\n"
             b"Route: <sip:[2001:db8::1]:5060;lr>\r\nAuthorization: Digest username=\"a\", "
             b"realm=\"b\", nonce=\"n\", uri=\"sip:x\", response=\"r\", algorithm=MD5\r\n"
             b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\nExpires: 30\r\nMax-Forwards: 70\r\n"
             b"Content-Length: 4\r\n\r\nbody")
SPECIAL = [b"\r\n", b"\r\n ", b"\n", b"\r", b" ", b"\t", b",", b";", b"<", b">", b'"', b":", b"\\",
           b"%", b"%00", b"\x00", b"@", b"[", b"]", b"=", b"?", b"*", b"SIP/2.0", b"\xff\xfe",
           b"\xc3", b"9" * 30, b"-1", b"\r\n\r\n", b"Content-Length: 99\r\n", b"v: ", b"\r\nm: *"]


def exercise(data: bytes) -> None:
    """Everything a caller may do with whatever came in; only ParseError may come out."""
    for stream in (False, True):
        try:
            msg = parse(data, stream=stream)
        except ParseError as error:
            assert isinstance(error.reason, str) and error.reason
            assert error.status in (400, 505)
            if error.partial is not None:
                assert isinstance(error.partial, Request)
                bytes(make_response(error.partial, error.status, error.reason, to_tag="x"))
                bytes(error.partial)
            continue
        bytes(msg)
        for name in msg.headers.names():
            msg.get_all(name)
        for attr in ("vias", "via", "call_id", "cseq", "from_", "to", "contacts", "routes",
                     "record_routes", "max_forwards", "expires"):
            try:
                value = getattr(msg, attr)
            except ParseError:
                continue
            for one in value if isinstance(value, list) else [value]:
                str(one)
                uri = getattr(one, "uri", None)
                if uri is not None:
                    uri.aor()
                    uri.equivalent(uri)
        for value in msg.get_all("Authorization"):
            try:
                parse_auth(value)
            except ParseError:
                pass
        try:
            msg.validate()
        except ParseError:
            continue
        if isinstance(msg, Request):
            msg.uri.aor()
            bytes(make_response(msg, 200, to_tag="x"))
        again = parse(bytes(msg))
        assert again == msg


@FUZZ_SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes(data):
    exercise(data)


@FUZZ_SETTINGS
@given(st.text(alphabet="SIP/2.0 INVITEsip:@;=,<>\"\\%\r\n\t:viatofrmcl0123456789*[]", max_size=300))
def test_random_sip_like_text(text):
    exercise(text.encode("utf-8"))


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 5))
        pos = draw(st.integers(0, len(data)))
        if op == 0:
            del data[pos:pos + draw(st.integers(1, 20))]
        elif op == 1:
            data[pos:pos] = draw(st.sampled_from(SPECIAL))
        elif op == 2:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 3 and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == 4:
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[draw(st.integers(0, len(lines) - 1))])
            data = bytearray(b"\r\n".join(lines))
        else:
            del data[pos:]
    return bytes(data)


@FUZZ_SETTINGS
@given(mutated())
def test_mutated_messages(data):
    exercise(data)


@SETTINGS
@given(messages(), st.data())
def test_mutated_generated_messages(sample, data):
    raw = bytearray(sample[0])
    pos = data.draw(st.integers(0, len(raw)))
    raw[pos:pos] = data.draw(st.sampled_from(SPECIAL))
    exercise(bytes(raw))
