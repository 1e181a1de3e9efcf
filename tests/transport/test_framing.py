from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reticulum.transport.framing import (
    BAD_FRAMING,
    MESSAGE,
    PING,
    TOO_LARGE,
    StreamFramer,
    find_head_end,
    is_keepalive,
    message_head,
)


def msg(body: bytes = b"", cl=None, extra: bytes = b"", compact: bool = False, lf: bool = False) -> bytes:
    name = b"l" if compact else b"Content-Length"
    if cl is None:
        cl = str(len(body)).encode()
    lines = [
        b"MESSAGE sip:bob@example.com SIP/2.0",
        b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1",
        b"Call-ID: x@y",
        b"CSeq: 1 MESSAGE",
    ]
    if extra:
        lines.append(extra)
    if cl is not False:
        lines.append(name + b": " + cl)
    eol = b"\n" if lf else b"\r\n"
    return eol.join(lines) + eol + eol + body


def feed_all(framer: StreamFramer, *chunks: bytes):
    events = []
    for c in chunks:
        events.extend(framer.feed(c))
    return events


def messages(events):
    return [d for k, d in events if k == MESSAGE]


def test_one_message():
    m = msg(b"hello")
    assert StreamFramer().feed(m) == [(MESSAGE, m)]


def test_several_messages_in_one_segment():
    a, b, c = msg(b"a"), msg(b""), msg(b"ccc\r\n\r\nccc")
    assert StreamFramer().feed(a + b + c) == [(MESSAGE, a), (MESSAGE, b), (MESSAGE, c)]


def test_message_over_many_segments():
    m = msg(b"x" * 1000)
    f = StreamFramer()
    events = []
    for i in range(len(m)):
        events.extend(f.feed(m[i : i + 1]))
    assert events == [(MESSAGE, m)]
    assert f.buffered == 0


def test_body_containing_blank_line_is_not_cut():
    body = b"v=0\r\n\r\nINVITE sip:x SIP/2.0\r\n\r\n"
    m = msg(body)
    assert StreamFramer().feed(m + msg()) == [(MESSAGE, m), (MESSAGE, msg())]


def test_missing_content_length_means_empty_body():
    m = msg(cl=False)
    assert StreamFramer().feed(m + b"garbage-start") == [(MESSAGE, m)]


def test_compact_content_length():
    m = msg(b"12345", compact=True)
    assert StreamFramer().feed(m + m) == [(MESSAGE, m), (MESSAGE, m)]


def test_content_length_case_and_spaces():
    m = b"OPTIONS sip:x SIP/2.0\r\ncontent-LENGTH   :   3\r\n\r\nabc"
    assert StreamFramer().feed(m) == [(MESSAGE, m)]


def test_headers_starting_with_l_are_not_compact_content_length():
    m = msg(b"ab", extra=b"Location-Info: 99")
    assert StreamFramer().feed(m) == [(MESSAGE, m)]


def test_ping_and_pong():
    f = StreamFramer()
    assert f.feed(b"\r\n\r\n") == [(PING, b"")]
    assert f.feed(b"\r\n") == []  # may be the start of a ping
    assert f.feed(b"\r\n") == [(PING, b"")]
    assert f.feed(b"\r\n\r") == []
    assert f.feed(b"\n") == [(PING, b"")]
    assert f.buffered == 0


def test_stray_crlf_before_message_skipped():
    m = msg(b"x")
    assert StreamFramer().feed(b"\r\n" + m + b"\r\n" + m) == [(MESSAGE, m), (MESSAGE, m)]
    f = StreamFramer()
    assert f.feed(b"\r\n") == []
    assert f.feed(m) == [(MESSAGE, m)]


def test_ping_between_messages():
    m = msg(b"x")
    assert StreamFramer().feed(m + b"\r\n\r\n" + m) == [(MESSAGE, m), (PING, b""), (MESSAGE, m)]


def test_bare_lf_head():
    m = msg(b"abc", lf=True)
    assert StreamFramer().feed(m + msg()) == [(MESSAGE, m), (MESSAGE, msg())]


def test_head_too_large():
    f = StreamFramer(max_message_size=1024)
    start = b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n"
    events = f.feed(start + b"X-Pad: " + b"a" * 2000)
    assert len(events) == 1
    kind, head = events[0]
    assert kind == TOO_LARGE
    assert head.startswith(start)
    assert len(head) == 1024
    assert f.closed
    assert f.feed(msg()) == []


def test_head_too_large_over_segments():
    f = StreamFramer(max_message_size=1024)
    assert f.feed(b"INVITE sip:x SIP/2.0\r\n") == []
    for _ in range(9):
        assert f.feed(b"X-Pad: " + b"a" * 100 + b"\r\n") == []
    events = f.feed(b"X-Pad: " + b"a" * 100 + b"\r\n")
    assert [k for k, _ in events] == [TOO_LARGE]


def test_content_length_too_large():
    f = StreamFramer(max_message_size=2000)
    m = msg(cl=b"5000")
    events = f.feed(msg(b"ok") + m)
    assert events[0] == (MESSAGE, msg(b"ok"))
    assert events[1] == (TOO_LARGE, m)
    assert f.closed


def test_exactly_max_size_is_fine():
    m = msg(b"")
    body = b"b" * (1500 - len(msg(b"b" * 1500)) + 1500)
    full = msg(body)
    assert len(full) == 1500
    assert StreamFramer(max_message_size=1500).feed(full) == [(MESSAGE, full)]
    assert StreamFramer(max_message_size=1499).feed(full)[0][0] == TOO_LARGE
    assert m


def test_garbage_content_length():
    for bad in (b"-1", b"abc", b"", b"1.5", b"+3", b"0x10"):
        f = StreamFramer()
        m = msg(cl=bad)
        events = f.feed(m + b"rest")
        assert events == [(BAD_FRAMING, m)], bad
        assert f.closed and f.reason


def test_conflicting_content_lengths():
    m = msg(b"abc", extra=b"l: 4")
    assert StreamFramer().feed(m)[0][0] == BAD_FRAMING
    same = msg(b"abc", extra=b"l: 3")
    assert StreamFramer().feed(same) == [(MESSAGE, same)]


def test_helpers():
    m = msg(b"body")
    assert find_head_end(m) == len(m) - 4
    assert find_head_end(b"no end\r\n") == -1
    assert message_head(m) == m[:-4]
    assert message_head(m, 10) == m[:10]
    assert is_keepalive(b"\r\n\r\n") and is_keepalive(b"\r\n") and not is_keepalive(m)


# -- properties

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12)
_body = st.binary(max_size=300)


@st.composite
def sip_messages(draw):
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "OPTIONS", "REGISTER"]))
    headers = draw(st.lists(st.tuples(_token, _token), max_size=6))
    body = draw(_body)
    style = draw(st.sampled_from(["long", "compact", "none"]))
    if style == "none":
        body = b""
    lines = ["%s sip:%s SIP/2.0" % (method, draw(_token))]
    lines += ["X-%s: %s" % (k, v) for k, v in headers]
    if style == "long":
        lines.append("Content-Length: %d" % len(body))
    elif style == "compact":
        lines.append("l:%d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@st.composite
def streams(draw):
    items = draw(st.lists(st.tuples(st.sampled_from(["", "stray", "ping"]), sip_messages()), max_size=8))
    trailing_ping = draw(st.booleans())
    data = b""
    expected = []
    for sep, m in items:
        if sep == "stray":
            data += b"\r\n"
        elif sep == "ping":
            data += b"\r\n\r\n"
            expected.append((PING, b""))
        data += m
        expected.append((MESSAGE, m))
    if trailing_ping:
        data += b"\r\n\r\n"
        expected.append((PING, b""))
    return data, expected


@given(streams(), st.lists(st.integers(min_value=0, max_value=10000), max_size=20))
def test_any_split_yields_the_same_events(stream, cuts):
    data, expected = stream
    points = sorted({c % (len(data) + 1) for c in cuts}) if data else []
    chunks = []
    prev = 0
    for p in points + [len(data)]:
        chunks.append(data[prev:p])
        prev = p
    f = StreamFramer()
    assert feed_all(f, *chunks) == expected
    assert f.buffered == 0
    assert not f.closed


@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=3000), max_size=10))
def test_arbitrary_bytes_never_crash_and_respect_limit(data, cuts):
    f = StreamFramer(max_message_size=1024)
    prev = 0
    events = []
    for p in sorted(set(cuts)) + [len(data)]:
        events.extend(f.feed(data[prev:p]))
        prev = max(prev, p)
    for kind, payload in events:
        assert kind in (MESSAGE, PING, TOO_LARGE, BAD_FRAMING)
        assert len(payload) <= 1024
    assert f.buffered <= 1024 + 3
