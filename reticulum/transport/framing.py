"""Sans-IO framing of SIP messages on a byte stream (RFC 3261 §18.3, RFC 5626 §4.4.1).

``StreamFramer.feed(data)`` takes whatever bytes arrived and returns a list of
events, each a ``(kind, data)`` tuple:

``(MESSAGE, whole_message_bytes)``
    one complete SIP message: head, blank line and Content-Length bytes of body.
``(PING, b"")``
    an RFC 5626 keep-alive ping (CRLFCRLF) between messages; answer it with
    a CRLF pong (``PONG``).
``(TOO_LARGE, head)``
    the head grows past ``max_message_size`` without ending, or head plus
    Content-Length exceed it.  ``head`` is what there is of the header block
    (at most ``max_message_size`` bytes) so a 413 can still be built.
``(BAD_FRAMING, head)``
    the Content-Length is negative, garbage, or given twice with different
    values; ``head`` is the header block.  The message can be answered
    (400) but the stream cannot be resynchronised.

After TOO_LARGE or BAD_FRAMING the framer is closed: it returns nothing more
and the connection should be closed once the answer is written.

A lone CRLF (or LF) before a message is skipped.  A stream message without a
Content-Length has an empty body.  Header blocks ending in bare LFs are
accepted.  The framer does not otherwise look inside the messages.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

__all__ = [
    "MESSAGE",
    "PING",
    "TOO_LARGE",
    "BAD_FRAMING",
    "PONG",
    "StreamFramer",
    "find_head_end",
    "message_head",
    "is_keepalive",
]

MESSAGE = "message"
PING = "ping"
TOO_LARGE = "too_large"
BAD_FRAMING = "bad_framing"

#: the answer to a PING
PONG = b"\r\n"

Event = Tuple[str, bytes]

_PING_EVENT: Event = (PING, b"")
_CRLFCRLF = b"\r\n\r\n"
_CR = 13
_LF = 10


def find_head_end(buf, start: int = 0, end: Optional[int] = None) -> int:
    """Index just past the blank line ending the head in ``buf[start:end]``, or -1."""
    if end is None:
        end = len(buf)
    i = buf.find(_CRLFCRLF, start, end)
    # a bare-LF head ends in "\n\n"; CRLFCRLF contains no "\n\n", so this scan
    # normally runs over the head only and finds nothing
    j = buf.find(b"\n\n", start, i + 3 if i >= 0 else end)
    if j >= 0:
        return j + 2
    if i >= 0:
        return i + 4
    return -1


def message_head(data: bytes, limit: Optional[int] = None) -> bytes:
    """The header block of ``data`` (through the blank line), cut to ``limit`` bytes."""
    end = find_head_end(data)
    head = data if end < 0 else data[:end]
    if limit is not None and len(head) > limit:
        head = head[:limit]
    return bytes(head)


def is_keepalive(data: bytes) -> bool:
    """True for a datagram made only of CR and LF (a keep-alive)."""
    return not data.strip(b"\r\n")


def _content_length(head) -> Tuple[int, Optional[bytes]]:
    """(length, None) or (-1, reason) from a header block; missing -> 0."""
    h = head.lower()
    value = None
    for name in (b"\ncontent-length", b"\nl"):
        nlen = len(name)
        p = h.find(name)
        while p >= 0:
            k = p + nlen
            # optional whitespace, then the colon
            while k < len(h) and h[k] in b" \t":
                k += 1
            if k < len(h) and h[k] == 58:  # ":"
                e = h.find(b"\n", k)
                if e < 0:
                    e = len(h)
                v = bytes(h[k + 1 : e]).strip()
                if value is None:
                    value = v
                elif v != value:
                    return -1, b"conflicting Content-Length"
            p = h.find(name, p + 1)
    if value is None:
        return 0, None
    if not value.isdigit():
        return -1, b"bad Content-Length"
    return int(value), None


class StreamFramer:
    """Cuts a byte stream into SIP messages; see the module docstring."""

    __slots__ = ("max_size", "closed", "_buf", "_scan", "_head_len", "_body_len", "reason")

    def __init__(self, max_message_size: int = 65535) -> None:
        self.max_size = max_message_size
        self.closed = False
        #: why the framer closed (a short phrase), or None
        self.reason: Optional[str] = None
        self._buf = bytearray()
        self._scan = 0  # where the search for the blank line resumes
        self._head_len = -1  # known head length of the pending message
        self._body_len = 0

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of their message."""
        return len(self._buf)

    def feed(self, data: bytes) -> List[Event]:
        if self.closed:
            return []
        buf = self._buf
        buf += data
        n = len(buf)
        events: List[Event] = []
        start = 0
        max_size = self.max_size
        while start < n:
            head_len = self._head_len
            if head_len < 0:
                c = buf[start]
                if c == _CR or c == _LF:
                    if buf.startswith(_CRLFCRLF, start):
                        events.append(_PING_EVENT)
                        start += 4
                        continue
                    if n - start < 4 and _CRLFCRLF.startswith(buf[start:n]):
                        break  # may still become a ping
                    start += 2 if buf.startswith(b"\r\n", start) else 1
                    continue
                scan = self._scan
                if scan < start:
                    scan = start
                end = find_head_end(buf, scan, n)
                if end < 0:
                    if n - start > max_size:
                        return self._close(events, TOO_LARGE, bytes(buf[start : start + max_size]), "head too large")
                    self._scan = n - 3 if n - 3 > start else start
                    break
                head_len = end - start
                body_len, error = _content_length(buf[start:end])
                if error is not None:
                    return self._close(events, BAD_FRAMING, bytes(buf[start:end]), error.decode())
                if head_len + body_len > max_size:
                    return self._close(events, TOO_LARGE, bytes(buf[start : start + min(head_len, max_size)]), "message too large")
                self._head_len = head_len
                self._body_len = body_len
            total = head_len + self._body_len
            if n - start < total:
                break
            events.append((MESSAGE, bytes(buf[start : start + total])))
            start += total
            self._head_len = -1
        if start:
            del buf[:start]
            self._scan = self._scan - start if self._scan > start else 0
        return events

    def _close(self, events: List[Event], kind: str, head: bytes, reason: str) -> List[Event]:
        events.append((kind, head))
        self.closed = True
        self.reason = reason
        self._buf = bytearray()
        return events
