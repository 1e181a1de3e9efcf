"""SIP requests and responses: parsing, validation, serialization (RFC 3261 §7, §20, §25)."""
from __future__ import annotations

import re
from functools import partial
from typing import AbstractSet, Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple, TypeVar, Union

from .errors import ParseError
from .grammar import TOKEN_CHARS, WS, WORD_CHARS, small_int, split_commas, split_list
from .headers import Headers
from .uri import URI, parse_uri
from .values import (
    MAX_EXPIRES,
    Address,
    CSeq,
    Via,
    _parse_address,
    address_ok,
    parse_cseq,
    parse_date,
    parse_via,
    via_ok,
)

# -- reason phrases ------------------------------------------------------------------------

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    424: "Bad Location Information", 425: "Bad Alert Message", 428: "Use Identity Header",
    429: "Provide Referrer Identity", 430: "Flow Failed", 433: "Anonymity Disallowed",
    436: "Bad Identity-Info", 437: "Unsupported Certificate", 438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support", 440: "Max-Breadth Exceeded",
    469: "Bad Info Package", 470: "Consent Needed", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable", 607: "Unwanted", 608: "Rejected",
}


def reason_phrase(status: int) -> str:
    """The standard reason phrase of a status code (that of its class for unknown codes)."""
    reason = REASONS.get(status)
    if reason is None:
        reason = REASONS.get(status // 100 * 100, "Unknown")
    return reason


MAX_MAX_FORWARDS = 255
_SINGLE = ("from", "to", "call-id", "cseq", "max-forwards", "content-length", "expires", "date")
_SINGLE_SET = frozenset(_SINGLE)
_REQUIRED = (("to", "To"), ("from", "From"), ("call-id", "Call-ID"), ("cseq", "CSeq"))
_M = TypeVar("_M", bound="Message")
#: what a required header's typed property gives on a message that has not passed validate()
#: and lacks it: None, typed as Any so that code handling validated messages needs no checks
_ABSENT: Any = None


class Message:
    """What requests and responses share: ``headers`` (a Headers) and ``body`` (bytes).

    The typed properties (``via``, ``vias``, ``from_``, ``to``, ``call_id``, ``cseq``,
    ``contacts``, ``routes``, ``record_routes``, ``max_forwards``, ``expires``) are parsed when
    first read and cached until a line of that header changes; reading a broken header raises
    ParseError. An absent header gives None (an empty list for the list ones).

    The typed values are read views: to change a header, set it again, e.g.
    ``via.params["received"] = ip; msg.remove_first("Via"); msg.add("Via", str(via), first=True)``.
    """

    version = "SIP/2.0"
    # Attributes others attach (e.g. the flow a message came on) go to __dict__, which
    # stays empty, and untracked by the cycle collector, for most messages.
    __slots__ = ("headers", "body", "__dict__")

    def __init__(self, headers=None, body: bytes = b""):
        if isinstance(headers, Headers):
            self.headers = headers
        else:
            self.headers = Headers(headers)
        self.body = body

    # -- raw header access ---------------------------------------------------------------------

    def get(self, name: str, default=None):
        """The first raw value (the whole line value) of that header, or default."""
        return self.headers.get(name, default)

    def get_all(self, name: str) -> list:
        """Every value of that header; list headers are split on top-level commas."""
        return self.headers.get_all(name)

    def set(self, name: str, value) -> None:
        """Replace every line of that header by one with this value."""
        self.headers.set(name, value)

    def add(self, name: str, value, first: bool = False) -> None:
        """Add a line; first=True puts it above the other lines of that name."""
        self.headers.add(name, value, first)

    def remove(self, name: str) -> None:
        """Remove every line of that header."""
        self.headers.remove(name)

    def remove_first(self, name: str) -> None:
        """Remove one value: the top element of a list header (e.g. top Via or Route)."""
        self.headers.remove_first(name)

    def __contains__(self, name: str) -> bool:
        return name in self.headers

    def forget_parsed(self) -> None:
        """Drop the typed values parsed so far (they are parsed again when asked for): for
        messages kept a long time, such as a transaction's last response."""
        self.headers.typed.clear()

    # -- typed values --------------------------------------------------------------------------

    def _address_list(self, key: str, reason: str) -> list:
        headers = self.headers
        found = headers.typed.get(key)
        if found is None:
            found = []
            for k, _, v in headers.entries():
                if k == key:
                    for part in split_list(v, reason):
                        found.append(_parse_address(part, reason))
            headers.typed[key] = found
        return list(found)

    def _address(self, key: str, reason: str) -> Address:
        headers = self.headers
        found = headers.typed.get(key)
        if found is None:
            value = headers.first(key)
            if value is None:
                return _ABSENT
            found = headers.typed[key] = _parse_address(value, reason)
        return found

    @property
    def vias(self) -> List[Via]:
        headers = self.headers
        found = headers.typed.get("via")
        if found is None or type(found) is _TopVia:
            top = found[0] if found else None
            found = []
            for k, _, v in headers.entries():
                if k == "via":
                    if "," in v:
                        for part in split_list(v, "Bad Via"):
                            found.append(parse_via(part))
                    else:
                        if not v:
                            raise ParseError("Bad Via")
                        found.append(parse_via(v))
            if top is not None:
                found[0] = top  # the same object `via` gave
            headers.typed["via"] = found
        return list(found)

    @property
    def via(self) -> Via:
        """The top Via. Every message that passed `validate()` has one; before that it is
        None when missing (the typed properties below are typed for validated messages)."""
        found = self.headers.typed.get("via")
        if found is None:
            found = self.vias
        return found[0] if found else _ABSENT

    @property
    def call_id(self) -> str:
        value = self.headers.first("call-id")
        return _ABSENT if value is None else value

    @property
    def cseq(self) -> CSeq:
        headers = self.headers
        found = headers.typed.get("cseq")
        if found is None:
            value = headers.first("cseq")
            if value is None:
                return _ABSENT
            found = headers.typed["cseq"] = parse_cseq(value)
        return found

    @property
    def from_(self) -> Address:
        return self._address("from", "Bad From")

    @property
    def to(self) -> Address:
        return self._address("to", "Bad To")

    @property
    def contacts(self) -> List[Address]:
        """Every Contact value; ``Contact: *`` gives [Address with star=True]."""
        return self._address_list("contact", "Bad Contact")

    @property
    def routes(self) -> List[Address]:
        return self._address_list("route", "Bad Route")

    @property
    def record_routes(self) -> List[Address]:
        return self._address_list("record-route", "Bad Record-Route")

    @property
    def max_forwards(self) -> Optional[int]:
        return _bounded(MAX_MAX_FORWARDS, "Max-Forwards", self.headers.first("max-forwards"))

    @property
    def expires(self) -> Optional[int]:
        return _bounded(MAX_EXPIRES, "Expires", self.headers.first("expires"))

    # -- validation ----------------------------------------------------------------------------

    def validate(self) -> None:
        """Check the headers the core relies on; raise ParseError on a missing, broken or
        duplicated one (see docs/architecture.md).

        From, To, CSeq and the top Via are parsed (and cached: every message needs them).
        The other Vias, Contact, Route and Record-Route are only checked, with the fast
        patterns where they fit; their typed values are parsed when first asked for.
        The checks run in a fixed order, so a message with several faults always gets the
        same reason: start line, required headers present once, Via, To, From, Call-ID,
        CSeq (and its method), then the optional single headers and the address lists."""
        firsts, multiple, vias, addresses = _sort_lines(self.headers)
        request = self if isinstance(self, Request) else None
        if request is not None:
            request._check_uri()
        cseq = self._check_required(firsts, multiple, vias)
        if request is not None and cseq.method != request.method:
            raise ParseError("CSeq method mismatch")
        if len(firsts) > len(_REQUIRED):
            _check_optional(firsts, multiple)
        if addresses:
            unsure = _unsure_addresses(addresses, self.headers.typed)
            if unsure:
                for key, check_list in _ADDRESS_CHECKS:
                    if key in unsure:
                        check_list(self)

    def _check_required(self, firsts: Dict[str, str], multiple: AbstractSet[str],
                        vias: List[str]) -> CSeq:
        """validate()'s required headers: To, From, Call-ID and CSeq there once; the top Via,
        To, From and CSeq parsed and kept, the other Vias and Call-ID checked."""
        for key, name in _REQUIRED:
            if key not in firsts:
                raise ParseError("Missing " + name)
            if key in multiple:
                raise ParseError("Multiple " + name)
        typed = self.headers.typed
        if "via" not in typed:
            self._check_vias(vias)
        elif not typed["via"]:
            raise ParseError("Missing Via")
        if "to" not in typed:
            typed["to"] = _parse_address(firsts["to"], "Bad To")
        if "from" not in typed:
            typed["from"] = _parse_address(firsts["from"], "Bad From")
        if not _valid_call_id(firsts["call-id"]):
            raise ParseError("Bad Call-ID")
        cseq = typed.get("cseq")
        if cseq is None:
            cseq = typed["cseq"] = parse_cseq(firsts["cseq"])
        return cseq

    def _check_vias(self, lines: List[str]) -> None:
        """validate()'s Via part: the top one parsed and cached, the others checked (as
        `vias` would, in order: the first broken one raises)."""
        top = None
        for v in lines:
            if "," in v:
                parts = split_list(v, "Bad Via")
            elif not v:
                raise ParseError("Bad Via")
            else:
                parts = [v]
            for part in parts:
                if top is None:
                    top = parse_via(part)
                elif not via_ok(part):
                    parse_via(part)
        if top is None:
            raise ParseError("Missing Via")
        self.headers.typed["via"] = _TopVia((top,))

    # -- serialization -------------------------------------------------------------------------

    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The message on the wire; Content-Length is always written as len(body)."""
        body = self.body
        lines = [self._start_line()]
        append = lines.append
        have_length = False
        for k, d, v in self.headers.entries():
            if k == "content-length":
                if not have_length:
                    append("Content-Length: %d" % len(body))
                    have_length = True
            else:
                append(d + ": " + v)
        if not have_length:
            append("Content-Length: %d" % len(body))
        append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body

    __bytes__ = to_bytes

    def _copy_into(self, new: _M) -> _M:
        new.headers = self.headers.copy()
        new.body = self.body
        attached = self.__dict__  # attributes others attached
        if attached:
            new.__dict__.update(attached)
        return new

    def __eq__(self, other) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return (self._start_line() == other._start_line() and self.body == other.body
                and _comparable(self.headers) == _comparable(other.headers))

    # Messages are mutable: they hash by identity (usable as keys and in sets), while ==
    # compares content (start line, headers but Content-Length, body).
    __hash__ = object.__hash__


class _TopVia(list):
    """The Via cache of a validated message: only the top Via is built (the others were
    checked); `vias` builds them all when asked."""

    __slots__ = ()


# -- validation steps ------------------------------------------------------------------------

_NOTHING: FrozenSet[str] = frozenset()


def _sort_lines(headers: Headers) -> Tuple[Dict[str, str], AbstractSet[str], List[str],
                                           List[Tuple[str, str]]]:
    """validate()'s one pass over the lines: the first value of each single header, the
    single headers that came more than once, the Via lines, the address-list lines."""
    firsts: Dict[str, str] = {}
    multiple: AbstractSet[str] = _NOTHING
    vias = []
    addresses = []
    for k, _, v in headers.entries():
        if k in _SINGLE_SET:
            if k in firsts:
                multiple = multiple | {k}
            else:
                firsts[k] = v
        elif k == "via":
            vias.append(v)
        elif k in _ADDRESS_LISTS:
            addresses.append((k, v))
    return firsts, multiple, vias, addresses


def _bounded(limit: int, name: str, value: Optional[str]) -> Optional[int]:
    """The number a Max-Forwards or Expires value holds (None when absent)."""
    if value is None:
        return None
    number = small_int(value, limit)
    if number is None:
        raise ParseError("Bad " + name)
    if number < 0:
        raise ParseError(name + " out of range")
    return number


def _check_content_length(value: str) -> None:
    if small_int(value, _MAX_CONTENT_LENGTH) is None:
        raise ParseError("Bad Content-Length")


# validate()'s checks of the optional single headers, in the order they run: (key, name for
# "Multiple ...", check of the first value)
_OPTIONAL_CHECKS: Tuple[Tuple[str, str, Callable[[str], object]], ...] = (
    ("max-forwards", "Max-Forwards", partial(_bounded, MAX_MAX_FORWARDS, "Max-Forwards")),
    ("content-length", "Content-Length", _check_content_length),
    ("expires", "Expires", partial(_bounded, MAX_EXPIRES, "Expires")),
    ("date", "Date", parse_date),
)


def _check_optional(firsts: Dict[str, str], multiple: AbstractSet[str]) -> None:
    """validate()'s optional single headers: there at most once, and well formed."""
    for key, name, check in _OPTIONAL_CHECKS:
        value = firsts.get(key)
        if value is not None:
            if key in multiple:
                raise ParseError("Multiple " + name)
            check(value)


def _check_contacts(msg: "Message") -> None:
    # "*" only alone and without parameters (§10.2.2)
    contacts = msg.contacts
    if len(contacts) > 1:
        for contact in contacts:
            if contact.star:
                raise ParseError("Bad Contact")
    elif contacts and contacts[0].star and contacts[0].params:
        raise ParseError("Bad Contact")


# validate()'s full checks of the address lists the fast patterns do not vouch for, in order
_ADDRESS_CHECKS: Tuple[Tuple[str, Callable[["Message"], object]], ...] = (
    ("contact", _check_contacts),
    ("route", lambda msg: msg.routes),
    ("record-route", lambda msg: msg.record_routes),
)
_ADDRESS_LISTS = frozenset(key for key, _ in _ADDRESS_CHECKS)


def _unsure_addresses(addresses: List[Tuple[str, str]], typed: Dict[str, Any]) -> Set[str]:
    """The keys (of Contact, Route, Record-Route) with a value the fast patterns do not
    vouch for; the full parser must look at those (and may raise)."""
    unsure: Set[str] = set()
    for key, v in addresses:
        if not v or key in unsure or key in typed:
            continue
        if "," in v:
            if '"' in v or "<" not in v:
                unsure.add(key)
                continue
            for part in split_commas(v):
                if not address_ok(part):
                    unsure.add(key)
                    break
        elif not address_ok(v):
            unsure.add(key)
    return unsure


def _comparable(headers: Headers) -> list:
    # Content-Length is derived from the body when serializing: leave it out of comparisons.
    return [(k, v) for k, _, v in headers.entries() if k != "content-length"]


def _valid_call_id(value) -> bool:
    # callid = word [ "@" word ]
    if not value:
        return False
    if WORD_CHARS.issuperset(value):
        return value[0] != "@" and value[-1] != "@" and value.count("@") <= 1
    left, at, right = value.partition("@")
    return bool(left and at and right and WORD_CHARS.issuperset(left)
                and WORD_CHARS.issuperset(right))


class Request(Message):
    """``method``, ``uri`` (a URI), ``version`` "SIP/2.0", headers and body."""

    __slots__ = ("method", "uri")

    def __init__(self, method: str, uri, headers=None, body: bytes = b""):
        Message.__init__(self, headers, body)
        self.method = method
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri

    @staticmethod
    def _make(method: str, uri: URI, headers: Headers, body: bytes) -> "Request":
        """A request from parts already checked (the parser's, a copy's), as they are."""
        new = Request.__new__(Request)
        new.method = method
        new.uri = uri
        new.headers = headers
        new.body = body
        return new

    def _start_line(self) -> str:
        return "%s %s SIP/2.0" % (self.method, self.uri)

    def _check_uri(self) -> None:
        """validate()'s check of the Request-URI: a sip/sips one has a host, no headers."""
        uri = self.uri
        if uri.scheme in ("sip", "sips") and (uri.headers is not None or not uri.host):
            raise ParseError("Bad Request-URI")

    def copy(self) -> "Request":
        """A copy sharing the (immutable) header values; the URI is copied."""
        new = Request.__new__(Request)
        new.method = self.method
        new.uri = self.uri.copy()
        return self._copy_into(new)

    def __repr__(self) -> str:
        return "<Request %s %s>" % (self.method, self.uri)


class Response(Message):
    """``status``, ``reason``, ``version`` "SIP/2.0", headers and body."""

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason=None, headers=None, body: bytes = b""):
        Message.__init__(self, headers, body)
        self.status = int(status)
        self.reason = reason_phrase(self.status) if reason is None else reason

    def _start_line(self) -> str:
        reason = self.reason
        if "\r" in reason or "\n" in reason:
            reason = reason.replace("\r", " ").replace("\n", " ")
        return "SIP/2.0 %d %s" % (self.status, reason)

    @staticmethod
    def _make(status: int, reason: str, headers: Headers, body: bytes) -> "Response":
        """A response from parts already checked (the parser's, a copy's), as they are."""
        new = Response.__new__(Response)
        new.status = status
        new.reason = reason
        new.headers = headers
        new.body = body
        return new

    def copy(self) -> "Response":
        new = Response.__new__(Response)
        new.status = self.status
        new.reason = self.reason
        return self._copy_into(new)

    def __repr__(self) -> str:
        return "<Response %d %s>" % (self.status, self.reason)


# -- parsing ---------------------------------------------------------------------------------

_BLANK_RE = re.compile(rb"\r?\n\r?\n")
_LINE_RE = re.compile(r"\r?\n")
_VERSION_RE = re.compile(r"[Ss][Ii][Pp]/[0-9]+\.[0-9]+\Z")
_MAX_CONTENT_LENGTH = 2 ** 31


def _opaque_uri(text: str) -> URI:
    return URI("", opaque=text)


def _malformed_request_line(line: str) -> Tuple[Optional[str], str]:
    """(method or None, reason) for a request line that is not three words split by SP."""
    words = line.split()
    method = words[0] if words and TOKEN_CHARS.issuperset(words[0]) else None
    parts = line.split(" ")
    if len(parts) > 3 and all(parts) and "\t" not in line and _VERSION_RE.match(parts[-1]):
        return method, "Bad Request-URI"
    return method, "Bad Request-Line"


def _request_line(line: str) -> Tuple[Optional[str], URI, Optional[str], int]:
    """(method or None, uri, error reason or None, status)."""
    parts = line.split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2] or "\t" in line:
        method, reason = _malformed_request_line(line)
        return method, _opaque_uri(line), reason, 400
    method, rtext, version = parts
    if not TOKEN_CHARS.issuperset(method):
        return None, _opaque_uri(rtext), "Bad Request-Line", 400
    try:
        uri: Optional[URI] = parse_uri(rtext)
    except ParseError:
        uri = None
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        if _VERSION_RE.match(version):
            return method, uri or _opaque_uri(rtext), "Version Not Supported", 505
        return method, uri or _opaque_uri(rtext), "Bad Request-Line", 400
    if uri is None or rtext[0] == "<":
        return method, uri or _opaque_uri(rtext), "Bad Request-URI", 400
    return method, uri, None, 400


def _status_line(line: str) -> Tuple[int, str]:
    """(status, reason) of a status line; raises ParseError."""
    parts = line.split(" ", 2)
    if len(parts) < 2:
        raise ParseError("Bad Status-Line")
    code = parts[1]
    if len(code) != 3 or not code.isdigit() or not code.isascii() or code[0] not in "123456":
        raise ParseError("Bad status code")
    version = parts[0]
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        if _VERSION_RE.match(version):
            raise ParseError("Version Not Supported", 505)
        raise ParseError("Bad Status-Line")
    return int(code), parts[2] if len(parts) == 3 else ""


def _unfold(lines: List[str]) -> List[str]:
    """Join continuation lines (starting with SP or HTAB) to their header line; the line
    break and the leading whitespace become one space. A continuation with no header line
    before it is turned into a bad (empty) line."""
    out: List[str] = []
    pieces: Optional[List[str]] = None
    bad = False
    for line in lines:
        if line[:1] == " " or line[:1] == "\t":
            if pieces is None:
                bad = True
            else:
                pieces.append(line.lstrip(WS))
        else:
            if pieces is not None:
                out.append(" ".join(pieces))
            pieces = [line]
    if pieces is not None:
        out.append(" ".join(pieces))
    if bad:
        out.append("")  # reported as a bad header line
    return out


# (start line, header lines, where the body starts, whether a line holds a bare CR)
_Head = Tuple[str, List[str], int, bool]


def _head_lines(data: bytes) -> _Head:
    """Split a message (leading CR/LF already dropped) into the lines of its head and the
    start of its body.

    The fast path takes the usual case: the head ends at the first CRLF CRLF and every line
    in it ends with CRLF. Then the general grammar (``_head_lines_general``) gives the same
    answer; for anything else (a bare LF or CR in the head, no CRLF CRLF) it is asked."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return _head_lines_general(data)
    text = data[:end].decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    joined = "".join(lines)  # a bare CR or LF is left in a line (one memchr: count() is slow)
    if "\n" in joined or "\r" in joined:
        return _head_lines_general(data)
    first = lines[0]
    del lines[0]
    if lines and ("\n " in text or "\n\t" in text):
        lines = _unfold(lines)
    return first, lines, end + 4, False


def _head_lines_general(data: bytes) -> _Head:
    """_head_lines by the grammar: the head ends at the first empty line, lines end with
    CRLF or a bare LF (a bare CR is kept and reported), folded lines are joined."""
    match = _BLANK_RE.search(data)
    if match is not None:
        head = data[:match.start()]
        bstart = match.end()
    else:
        head = data.rstrip(b"\r\n")
        bstart = len(data)
    if not head:
        raise ParseError("Empty message")
    text = head.decode("utf-8", "surrogateescape")
    lines = _LINE_RE.split(text)
    bad_line = any("\r" in line for line in lines)
    first = lines[0]
    del lines[0]
    if lines and ("\n " in text or "\n\t" in text):
        lines = _unfold(lines)
    return first, lines, bstart, bad_line


def _body(data: bytes, bstart: int, lengths: List[str],
          stream: bool) -> Tuple[bytes, Optional[str]]:
    """The body (cut to Content-Length) and what is wrong with the framing, if anything."""
    if not lengths:
        return data[bstart:], "Missing Content-Length" if stream else None
    if len(lengths) > 1:
        return data[bstart:], "Multiple Content-Length" if stream else None
    available = len(data) - bstart
    size = small_int(lengths[0], _MAX_CONTENT_LENGTH)
    if size is None:
        return b"", "Bad Content-Length"
    if size < 0 or size > available:
        return b"", "Incomplete body"
    if size != available:
        return data[bstart:bstart + size], None
    return (data[bstart:] if bstart else data), None


def parse(data: bytes, stream: bool = False) -> Union[Request, Response]:
    """Parse one SIP message (see docs/architecture.md for the contract).

    UDP (stream=False): the body is what follows the blank line, cut to Content-Length
    (extra bytes are ignored; a Content-Length larger than what is there is an error; with
    no Content-Length the body is everything; with several, the body is everything and
    validate() refuses the message). stream=True: Content-Length is required and must be
    single.

    A broken status line raises at once; any other fault is reported as ParseError with the
    request parsed as far as it goes (``partial``), the first fault in the order: request
    line, header lines, line endings, framing."""
    if not isinstance(data, bytes):
        data = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    first, lines, bstart, bad_line = _head_lines(data)
    if first[:4].upper() == "SIP/":
        code, reason = _status_line(first)
        headers, lengths, bad_header = Headers.from_lines(lines)
        body, framing = _body(data, bstart, lengths, stream)
        if bad_header or bad_line or framing is not None:
            raise ParseError(_first_fault(bad_header, bad_line, framing))
        return Response._make(code, reason, headers, body)
    method, uri, error, status = _request_line(first)
    if method is None:
        raise ParseError(error or "Bad Request-Line", status)
    headers, lengths, bad_header = Headers.from_lines(lines)
    body, framing = _body(data, bstart, lengths, stream)
    msg = Request._make(method, uri, headers, body)
    if error is None and (bad_header or bad_line or framing is not None):
        error = _first_fault(bad_header, bad_line, framing)
    if error is not None:
        raise ParseError(error, status, msg)
    return msg


def _first_fault(bad_header: bool, bad_line: bool, framing: Optional[str]) -> str:
    """parse()'s reason after the start line: the first fault, in the order of the message."""
    if bad_header:
        return "Bad header line"
    if bad_line:
        return "Bad line ending"
    assert framing is not None
    return framing


# -- responses -------------------------------------------------------------------------------

# the headers a response copies from its request after the Vias (§8.2.6), in this order
_COPIED = ("from", "to", "call-id", "cseq")
_COPIED_100 = _COPIED + ("timestamp",)


def make_response(request: Request, status: int, reason: Optional[str] = None,
                  to_tag: Optional[str] = None) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6: every Via (in order), From, To (with
    ``;tag=to_tag`` added when given and To has no tag), Call-ID and CSeq are copied; a 100
    also copies Timestamp. Works on a partial request (from ParseError.partial) too."""
    status = int(status)
    src = request.headers.entries()
    out = [entry for entry in src if entry[0] == "via"]
    for key in _COPIED_100 if status == 100 else _COPIED:
        for entry in src:
            if entry[0] == key:
                if key == "to" and to_tag and not _has_tag(request, entry[2]):
                    entry = (entry[0], entry[1], entry[2] + ";tag=" + to_tag)
                out.append(entry)
                break
    return Response._make(status, reason_phrase(status) if reason is None else reason,
                          Headers.from_entries(out), b"")


def _has_tag(request, raw: str) -> bool:
    try:
        to = request.to
    except ParseError:
        to = None
    if to is not None:
        return to.tag is not None
    try:
        return _parse_address(raw, "Bad To").tag is not None
    except ParseError:
        return ";tag=" in raw.replace(" ", "").lower()
