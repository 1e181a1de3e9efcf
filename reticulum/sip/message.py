"""SIP requests and responses: parsing, validation, serialization (RFC 3261 §7, §20, §25)."""
from __future__ import annotations

import re

from .errors import ParseError
from .grammar import FAST_VIA, TOKEN_CHARS, WS, WORD_CHARS, small_int, split_commas, split_list
from .headers import Headers, _INFO, _LOWER, name_info
from .uri import URI, parse_uri
from .values import (
    MAX_EXPIRES,
    _parse_address,
    address_ok,
    parse_cseq,
    parse_date,
    parse_via,
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
_OPTIONAL = (("max-forwards", "Max-Forwards"), ("content-length", "Content-Length"),
             ("expires", "Expires"), ("date", "Date"))
_CL_INFO = _LOWER["content-length"]


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
        self.headers._cache.clear()

    def _first(self, key: str):
        for k, _, v in self.headers._h:
            if k == key:
                return v
        return None

    # -- typed values --------------------------------------------------------------------------

    def _address_list(self, key: str, reason: str) -> list:
        cache = self.headers._cache
        found = cache.get(key)
        if found is None:
            found = []
            for k, _, v in self.headers._h:
                if k == key:
                    for part in split_list(v, reason):
                        found.append(_parse_address(part, reason))
            cache[key] = found
        return list(found)

    def _address(self, key: str, reason: str):
        cache = self.headers._cache
        found = cache.get(key)
        if found is None:
            value = self._first(key)
            if value is None:
                return None
            found = cache[key] = _parse_address(value, reason)
        return found

    @property
    def vias(self) -> list:
        cache = self.headers._cache
        found = cache.get("via")
        if found is None or type(found) is _TopVia:
            top = found[0] if found else None
            found = []
            for k, _, v in self.headers._h:
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
            cache["via"] = found
        return list(found)

    @property
    def via(self):
        """The top Via, or None."""
        cache = self.headers._cache
        found = cache.get("via")
        if found is None:
            self.vias
            found = cache["via"]
        return found[0] if found else None

    @property
    def call_id(self):
        return self._first("call-id")

    @property
    def cseq(self):
        cache = self.headers._cache
        found = cache.get("cseq")
        if found is None:
            value = self._first("cseq")
            if value is None:
                return None
            found = cache["cseq"] = parse_cseq(value)
        return found

    @property
    def from_(self):
        return self._address("from", "Bad From")

    @property
    def to(self):
        return self._address("to", "Bad To")

    @property
    def contacts(self) -> list:
        """Every Contact value; ``Contact: *`` gives [Address with star=True]."""
        return self._address_list("contact", "Bad Contact")

    @property
    def routes(self) -> list:
        return self._address_list("route", "Bad Route")

    @property
    def record_routes(self) -> list:
        return self._address_list("record-route", "Bad Record-Route")

    @property
    def max_forwards(self):
        value = self._first("max-forwards")
        if value is None:
            return None
        number = small_int(value, MAX_MAX_FORWARDS)
        if number is None:
            raise ParseError("Bad Max-Forwards")
        if number < 0:
            raise ParseError("Max-Forwards out of range")
        return number

    @property
    def expires(self):
        value = self._first("expires")
        if value is None:
            return None
        number = small_int(value, MAX_EXPIRES)
        if number is None:
            raise ParseError("Bad Expires")
        if number < 0:
            raise ParseError("Expires out of range")
        return number

    # -- validation ----------------------------------------------------------------------------

    def validate(self) -> None:
        """Check the headers the core relies on; raise ParseError on a missing, broken or
        duplicated one (see docs/architecture.md).

        From, To, CSeq and the top Via are parsed (and cached: every message needs them).
        The other Vias, Contact, Route and Record-Route are only checked, with the fast
        patterns where they fit; their typed values are parsed when first asked for."""
        firsts = {}
        multiple = None
        vias = []
        addresses = None
        for k, _, v in self.headers._h:
            if k in _SINGLE_SET:
                if k in firsts:
                    if multiple is None:
                        multiple = set()
                    multiple.add(k)
                else:
                    firsts[k] = v
            elif k == "via":
                vias.append(v)
            elif k in _ADDRESS_LISTS:
                if addresses is None:
                    addresses = []
                addresses.append((k, v))
        is_request = isinstance(self, Request)
        if is_request:
            uri = self.uri
            if uri.scheme in ("sip", "sips") and (uri.headers is not None or not uri.host):
                raise ParseError("Bad Request-URI")
        for key, name in _REQUIRED:
            if key not in firsts:
                raise ParseError("Missing " + name)
            if multiple is not None and key in multiple:
                raise ParseError("Multiple " + name)
        cache = self.headers._cache
        if "via" not in cache:
            self._check_vias(vias)
        elif not cache["via"]:
            raise ParseError("Missing Via")
        if "to" not in cache:
            cache["to"] = _parse_address(firsts["to"], "Bad To")
        if "from" not in cache:
            cache["from"] = _parse_address(firsts["from"], "Bad From")
        if not _valid_call_id(firsts["call-id"]):
            raise ParseError("Bad Call-ID")
        cseq = cache.get("cseq")
        if cseq is None:
            cseq = cache["cseq"] = parse_cseq(firsts["cseq"])
        if is_request and cseq.method != self.method:
            raise ParseError("CSeq method mismatch")
        if len(firsts) > 4:
            for key, name in _OPTIONAL:
                value = firsts.get(key)
                if value is None:
                    continue
                if multiple is not None and key in multiple:
                    raise ParseError("Multiple " + name)
                if key == "max-forwards":
                    self.max_forwards
                elif key == "content-length":
                    if small_int(value, _MAX_CONTENT_LENGTH) is None:
                        raise ParseError("Bad Content-Length")
                elif key == "expires":
                    self.expires
                else:
                    parse_date(value)
        if addresses is not None:
            unsure = _unsure_addresses(addresses, cache)
            if unsure:
                if "contact" in unsure:
                    contacts = self.contacts
                    if len(contacts) > 1:
                        for contact in contacts:
                            if contact.star:
                                raise ParseError("Bad Contact")
                    elif contacts and contacts[0].star and contacts[0].params:
                        raise ParseError("Bad Contact")
                if "route" in unsure:
                    self.routes
                if "record-route" in unsure:
                    self.record_routes

    def _check_vias(self, lines: list) -> None:
        """validate()'s Via part: the top one parsed and cached, the others checked (as
        `vias` would, in order: the first broken one raises)."""
        top = None
        for v in lines:
            if "," in v:
                parts = split_list(v, "Bad Via")
            elif not v:
                raise ParseError("Bad Via")
            else:
                parts = (v,)
            for part in parts:
                if top is None:
                    top = parse_via(part)
                elif FAST_VIA.fullmatch(part) is None:
                    parse_via(part)
        if top is None:
            raise ParseError("Missing Via")
        self.headers._cache["via"] = _TopVia((top,))

    # -- serialization -------------------------------------------------------------------------

    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The message on the wire; Content-Length is always written as len(body)."""
        body = self.body
        lines = [self._start_line()]
        append = lines.append
        have_length = False
        for k, d, v in self.headers._h:
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

    def _copy_into(self, new):
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


_ADDRESS_LISTS = frozenset(("contact", "route", "record-route"))


def _unsure_addresses(addresses: list, cache: dict) -> set:
    """The keys (of Contact, Route, Record-Route) with a value the fast patterns do not
    vouch for; the full parser must look at those (and may raise)."""
    unsure = set()
    for key, v in addresses:
        if not v or key in unsure or key in cache:
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
    return [(k, v) for k, _, v in headers._h if k != "content-length"]


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

    def _start_line(self) -> str:
        return "%s %s SIP/2.0" % (self.method, self.uri)

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
    uri = URI.__new__(URI)
    uri.scheme = ""
    uri.user = uri.password = uri.host = uri.port = uri.headers = None
    uri.params = {}
    uri.opaque = text
    return uri


def _request_line(line: str):
    """(method or None, uri, error reason or None, status)."""
    parts = line.split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2] or "\t" in line:
        words = line.split()
        method = words[0] if words and TOKEN_CHARS.issuperset(words[0]) else None
        if len(parts) > 3 and all(parts) and "\t" not in line and \
                _VERSION_RE.match(parts[-1]):
            reason = "Bad Request-URI"
        else:
            reason = "Bad Request-Line"
        return method, _opaque_uri(line), reason, 400
    method, rtext, version = parts
    if not TOKEN_CHARS.issuperset(method):
        return None, _opaque_uri(rtext), "Bad Request-Line", 400
    try:
        uri = parse_uri(rtext)
    except ParseError:
        uri = None
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        if _VERSION_RE.match(version):
            return method, uri or _opaque_uri(rtext), "Version Not Supported", 505
        return method, uri or _opaque_uri(rtext), "Bad Request-Line", 400
    if uri is None or rtext[0] == "<":
        return method, uri or _opaque_uri(rtext), "Bad Request-URI", 400
    return method, uri, None, 400


def _unfold(lines: list) -> list:
    """Join continuation lines (starting with SP or HTAB) to their header line; the line
    break and the leading whitespace become one space. A continuation with no header line
    before it is turned into a bad (empty) line."""
    out: list = []
    pieces = None
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


def parse(data: bytes, stream: bool = False):
    """Parse one SIP message (see docs/architecture.md for the contract).

    UDP (stream=False): the body is what follows the blank line, cut to Content-Length
    (extra bytes are ignored; a Content-Length larger than what is there is an error; with
    no Content-Length the body is everything; with several, the body is everything and
    validate() refuses the message). stream=True: Content-Length is required and must be
    single."""
    if not isinstance(data, bytes):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        else:
            data = bytes(data)
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head = data[:end]
        bstart = end + 4
    else:
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
    lines = text.split("\r\n")
    count = len(lines) - 1
    bad_line = False
    if text.count("\n") != count or text.count("\r") != count:
        lines = _LINE_RE.split(text)
        for line in lines:
            if "\r" in line:
                bad_line = True
    first = lines[0]
    del lines[0]
    if lines and ("\n " in text or "\n\t" in text):
        lines = _unfold(lines)

    # start line
    error = None
    status = 400
    if first[:4].upper() == "SIP/":
        is_request = False
        parts = first.split(" ", 2)
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
        msg = Response.__new__(Response)
        msg.status = int(code)
        msg.reason = parts[2] if len(parts) == 3 else ""
    else:
        is_request = True
        method, uri, error, status = _request_line(first)
        if method is None:
            raise ParseError(error or "Bad Request-Line", status)
        msg = Request.__new__(Request)
        msg.method = method
        msg.uri = uri

    # header lines
    entries = []
    append = entries.append
    lengths = []
    get_info = _INFO.get
    for line in lines:
        name, colon, value = line.partition(":")
        info = get_info(name) if colon else None
        if info is None:
            info = name_info(name) if colon else None
            if info is None:
                if error is None:
                    error = "Bad header line"
                    status = 400
                continue
        if info is _CL_INFO:
            lengths.append(value.strip(WS))
        append((info[0], info[1], value.strip(WS)))
    if bad_line and error is None:
        error = "Bad line ending"
    headers = Headers.__new__(Headers)
    headers._h = entries
    headers._cache = {}
    msg.headers = headers

    # body
    available = len(data) - bstart
    if not lengths:
        if stream and error is None:
            error = "Missing Content-Length"
        msg.body = data[bstart:]
    elif len(lengths) == 1:
        size = small_int(lengths[0], _MAX_CONTENT_LENGTH)
        if size is None:
            if error is None:
                error = "Bad Content-Length"
            msg.body = b""
        elif size < 0 or size > available:
            if error is None:
                error = "Incomplete body"
            msg.body = b""
        else:
            msg.body = data[bstart:bstart + size] if size != available else \
                (data[bstart:] if bstart else data)
    else:
        if stream and error is None:
            error = "Multiple Content-Length"
        msg.body = data[bstart:]

    if error is not None:
        raise ParseError(error, status, msg if is_request else None)
    return msg


# -- responses -------------------------------------------------------------------------------

def make_response(request, status: int, reason=None, to_tag=None) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6: every Via (in order), From, To (with
    ``;tag=to_tag`` added when given and To has no tag), Call-ID and CSeq are copied; a 100
    also copies Timestamp. Works on a partial request (from ParseError.partial) too."""
    response = Response.__new__(Response)
    response.status = status = int(status)
    response.reason = reason_phrase(status) if reason is None else reason
    response.body = b""
    src = request.headers._h
    out = [e for e in src if e[0] == "via"]
    for key in ("from", "to", "call-id", "cseq"):
        for entry in src:
            if entry[0] == key:
                if key == "to" and to_tag and not _has_tag(request, entry[2]):
                    entry = (entry[0], entry[1], entry[2] + ";tag=" + to_tag)
                out.append(entry)
                break
    if status == 100:
        for entry in src:
            if entry[0] == "timestamp":
                out.append(entry)
                break
    headers = Headers.__new__(Headers)
    headers._h = out
    headers._cache = {}
    response.headers = headers
    return response


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
