"""Typed header values: Address (name-addr / addr-spec), Via, CSeq, parameters, digest
credentials and challenges, dates."""
from __future__ import annotations

import calendar
import re
import time
from datetime import datetime, timezone
from typing import Dict, Optional, Tuple

from .errors import ParseError
from .grammar import (
    FAST_ADDR_SPEC,
    FAST_NAME_ADDR,
    FAST_VIA,
    HOST_CHARS,
    IPV6_CHARS,
    TOKEN_CHARS,
    WS,
    format_params,
    parse_generic_params,
    quote,
    scan_quoted,
    skip,
    small_int,
    split_generic_params,
    split_uri_params,
)
from .uri import URI, is_ip_literal, parse_uri

MAX_CSEQ = 2 ** 31 - 1
MAX_EXPIRES = 2 ** 32 - 1


# -- Address ---------------------------------------------------------------------------------


class Address:
    """The value of From, To, Contact, Route, Record-Route, Path, Reply-To, ...

    ``display`` is the display name without quotes (None when absent), ``uri`` a URI,
    ``params`` the header parameters (names lower case, values as sent: a quoted value keeps
    its quotes; flags -> None). ``star`` is True for the Contact value ``*`` (then ``uri`` is
    None). str() always gives the name-addr form ``"display" <uri>;params``.
    """

    __slots__ = ("display", "uri", "params", "star")

    def __init__(self, uri=None, display=None, params=None, star: bool = False):
        if isinstance(display, URI) and not isinstance(uri, URI):
            uri, display = display, uri  # Address(display, uri) order
        if isinstance(uri, str):
            uri = parse_uri(uri)
        self.uri = uri
        self.display = display
        self.params = dict(params) if params else {}
        self.star = star

    @staticmethod
    def _make(display: Optional[str], uri: Optional[URI],
              params: Dict[str, Optional[str]], star: bool = False) -> "Address":
        """An Address from parts already checked (the parsers'), as they are."""
        addr = Address.__new__(Address)
        addr.display = display
        addr.uri = uri
        addr.params = params
        addr.star = star
        return addr

    @property
    def tag(self):
        return self.params.get("tag")

    @tag.setter
    def tag(self, value) -> None:
        if value is None:
            self.params.pop("tag", None)
        else:
            self.params["tag"] = value

    def __str__(self) -> str:
        if self.star:
            return "*"
        text = "<" + str(self.uri) + ">"
        if self.display is not None:
            text = quote(self.display) + " " + text
        if self.params:
            text += format_params(self.params)
        return text

    def __repr__(self) -> str:
        return "Address(%r)" % str(self)

    def copy(self) -> "Address":
        new = Address.__new__(Address)
        new.display = self.display
        new.uri = self.uri.copy() if self.uri is not None else None
        new.params = dict(self.params)
        new.star = self.star
        return new

    def __eq__(self, other) -> bool:
        if not isinstance(other, Address):
            return NotImplemented
        return (self.star == other.star and self.display == other.display
                and self.uri == other.uri and self.params == other.params)

    def __ne__(self, other) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash((self.star, self.display, self.uri))


_TOKEN_LWS = TOKEN_CHARS | frozenset(WS)


def _check_token_display(text: str) -> str:
    # display-name = *(token LWS): token characters and whitespace; non-ASCII is tolerated.
    if _TOKEN_LWS.issuperset(text):
        return text
    for c in text:
        if c not in TOKEN_CHARS and c not in WS and c < "\x80":
            raise ParseError("Bad display name")
    return text


def parse_address(value: str, what: str = "address") -> Address:
    """Parse a name-addr or addr-spec with its parameters (or ``*``).

    Raises ParseError("Bad display name"), ParseError("Unterminated quoted string"), or
    ParseError("Bad <what>") for anything else."""
    return _parse_address(value, "Bad " + what)


def _parse_address(value: str, reason: str) -> Address:
    match = FAST_NAME_ADDR.fullmatch(value)
    if match is not None:
        display, token_display, scheme, user, host, port, uri_params, params = match.groups()
        if display is None:
            display = token_display.strip(WS) or None
    else:
        match = FAST_ADDR_SPEC.fullmatch(value)
        if match is None:
            return _parse_address_full(value, reason)
        display = uri_params = None
        scheme, user, host, port, params = match.groups()
    uri = URI._make(scheme, user, None, host.lower(), None if port is None else int(port),
                    split_uri_params(uri_params) if uri_params else {}, None, None)
    return Address._make(display, uri, split_generic_params(params) if params else {})


def address_ok(value: str) -> bool:
    """True when the value is a plain name-addr or addr-spec that the fast path takes (and
    therefore valid); False means: ask the full parser."""
    return FAST_NAME_ADDR.fullmatch(value) is not None or \
        FAST_ADDR_SPEC.fullmatch(value) is not None


def _parse_address_full(value: str, reason: str) -> Address:
    """_parse_address by the full grammar: ``*``, name-addr or addr-spec, then parameters."""
    v = value.strip(WS)
    if not v:
        raise ParseError(reason)
    if v == "*":
        return Address._make(None, None, {}, True)
    display, lt = _display_name(v)
    if lt >= 0:
        gt = v.find(">", lt + 1)
        if gt < 0:
            raise ParseError(reason)
        utext = v[lt + 1:gt]
        rest = v[gt + 1:]
    else:
        # addr-spec: the URI ends at the first ';' and holds no ',', '?' or whitespace
        utext, semi, rest = v.partition(";")
        utext = utext.rstrip(WS)
        rest = semi + rest
        if "?" in utext or "," in utext or ">" in utext:
            raise ParseError(reason)
    try:
        uri = parse_uri(utext)
    except ParseError:
        raise ParseError(reason) from None
    return Address._make(display, uri, parse_generic_params(rest, reason) if rest else {})


def _display_name(v: str) -> Tuple[Optional[str], int]:
    """(display name or None, index of the '<' that opens the URI or -1 for addr-spec)."""
    if v[0] == '"':
        end, display = scan_quoted(v, 0)
        lt = end
        while lt < len(v) and v[lt] in WS:
            lt += 1
        if lt >= len(v) or v[lt] != "<":
            raise ParseError("Bad display name")
        return display, lt
    lt = v.find("<")
    if lt < 0:
        return None, -1
    cut = v.find(";")
    if 0 <= cut < lt:
        return None, -1  # '<' inside a parameter: addr-spec form
    quote_at = v.find('"')
    if 0 <= quote_at < lt:
        raise ParseError("Bad display name")
    return _check_token_display(v[:lt].strip(WS)) or None, lt


# -- Via -------------------------------------------------------------------------------------


class Via:
    """One Via value: ``SIP/2.0/transport host[:port];params``.

    ``transport`` is upper case, ``host`` lower case (IPv6 without brackets), ``port`` int or
    None, ``params`` as for Address. ``rport`` is None when absent, "" when sent as a flag.
    """

    __slots__ = ("transport", "host", "port", "params")

    def __init__(self, transport: str = "UDP", host: str = "", port=None, params=None):
        self.transport = transport.upper()
        host = host.lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        self.host = host
        self.port = None if port is None else int(port)
        self.params = dict(params) if params else {}

    @staticmethod
    def _make(transport: str, host: str, port: Optional[int],
              params: Dict[str, Optional[str]]) -> "Via":
        """A Via from parts already checked and normalised (the parsers'), as they are."""
        via = Via.__new__(Via)
        via.transport = transport
        via.host = host
        via.port = port
        via.params = params
        return via

    @property
    def branch(self):
        return self.params.get("branch")

    @property
    def received(self):
        return self.params.get("received")

    @property
    def rport(self):
        if "rport" not in self.params:
            return None
        value = self.params["rport"]
        return "" if value is None else value

    @property
    def maddr(self):
        return self.params.get("maddr")

    def sent_by(self) -> str:
        """'host', 'host:port' (IPv6 in brackets)."""
        host = self.host
        if ":" in host:
            host = "[" + host + "]"
        if self.port is not None:
            return "%s:%d" % (host, self.port)
        return host

    host_port = sent_by

    def __str__(self) -> str:
        text = "SIP/2.0/" + self.transport + " " + self.sent_by()
        if self.params:
            text += format_params(self.params)
        return text

    def __repr__(self) -> str:
        return "Via(%r)" % str(self)

    def copy(self) -> "Via":
        return Via(self.transport, self.host, self.port, self.params)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return (self.transport == other.transport and self.host == other.host
                and self.port == other.port and self.params == other.params)

    def __ne__(self, other) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash((self.transport, self.host, self.port))


def parse_via(value: str) -> Via:
    """Parse one Via value (not a comma-separated list). Raises ParseError("Bad Via")."""
    match = FAST_VIA.fullmatch(value)
    if match is not None:
        transport, host, port, params = match.groups()
        return Via._make(transport.upper(), host.lower(), None if port is None else int(port),
                         split_generic_params(params) if params else {})
    return _parse_via_full(value)


def via_ok(value: str) -> bool:
    """True when the value is a plain Via that the fast path takes (and therefore valid);
    False means: ask the full parser."""
    return FAST_VIA.fullmatch(value) is not None


def _parse_via_full(value: str) -> Via:
    v = value.strip(WS)
    sp = v.find(" ", 8) if v[:8] == "SIP/2.0/" else -1
    if sp > 8:
        transport = v[8:sp]
        rest = v[sp + 1:]
    else:
        # sent-protocol with LWS around the slashes: "SIP  /   2.0 /UDP host"
        p1 = v.find("/")
        p2 = v.find("/", p1 + 1) if p1 >= 0 else -1
        if p2 < 0:
            raise ParseError("Bad Via")
        if v[:p1].strip(WS).upper() != "SIP" or v[p1 + 1:p2].strip(WS) != "2.0":
            raise ParseError("Bad Via")
        rest = v[p2 + 1:].lstrip(WS)
        i = 0
        while i < len(rest) and rest[i] in TOKEN_CHARS:
            i += 1
        transport = rest[:i]
        if i >= len(rest) or rest[i] not in WS:
            raise ParseError("Bad Via")
        rest = rest[i:]
    if not transport or not TOKEN_CHARS.issuperset(transport):
        raise ParseError("Bad Via")
    semi = rest.find(";")
    if semi >= 0:
        sent_by = rest[:semi].strip(WS)
        params = parse_generic_params(rest[semi:], "Bad Via")
    else:
        sent_by = rest.strip(WS)
        params = {}
    host, port = _parse_host_port(sent_by, "Bad Via")
    return Via._make(transport.upper(), host, port, params)


def _parse_host_port(text: str, reason: str):
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ParseError(reason)
        host = text[1:close]
        if not host or not IPV6_CHARS.issuperset(host) or not is_ip_literal(host):
            raise ParseError(reason)
        after = text[close + 1:].strip(WS)
        port_text = None
        if after:
            if after[0] != ":":
                raise ParseError(reason)
            port_text = after[1:].strip(WS)
    else:
        host, colon, port_text = text.partition(":")
        host = host.rstrip(WS)
        port_text = port_text.strip(WS) if colon else None
        if not host or not HOST_CHARS.issuperset(host):
            raise ParseError(reason)
    port = None
    if port_text is not None:
        port = small_int(port_text, 65535)
        if port is None or port < 0:
            raise ParseError(reason)
    return host.lower(), port


# -- CSeq ------------------------------------------------------------------------------------


class CSeq:
    """``number method``; the number is below 2**31."""

    __slots__ = ("number", "method")

    def __init__(self, number: int, method: str):
        self.number = int(number)
        self.method = method

    @staticmethod
    def _make(number: int, method: str) -> "CSeq":
        """A CSeq from parts already checked (the parser's), as they are."""
        cseq = CSeq.__new__(CSeq)
        cseq.number = number
        cseq.method = method
        return cseq

    def __str__(self) -> str:
        return "%d %s" % (self.number, self.method)

    def __repr__(self) -> str:
        return "CSeq(%d, %r)" % (self.number, self.method)

    def __eq__(self, other) -> bool:
        if not isinstance(other, CSeq):
            return NotImplemented
        return self.number == other.number and self.method == other.method

    def __ne__(self, other) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash((self.number, self.method))


def parse_cseq(value: str) -> CSeq:
    """Raises ParseError("Bad CSeq") or ParseError("CSeq out of range")."""
    parts = value.replace("\t", " ").split(" ")
    if len(parts) != 2:
        parts = [p for p in parts if p]
        if len(parts) != 2:
            raise ParseError("Bad CSeq")
    number_text, method = parts
    number = small_int(number_text, MAX_CSEQ)
    if number is None or not method or not TOKEN_CHARS.issuperset(method):
        raise ParseError("Bad CSeq")
    if number < 0:
        raise ParseError("CSeq out of range")
    return CSeq._make(number, method)


# -- generic parameters ----------------------------------------------------------------------


def parse_params(text: str) -> dict:
    """Parse ``;name=value;flag...`` (the leading ';' is optional).

    Names are lower-cased, values kept as sent (quoted strings keep their quotes), flags map
    to None. Raises ParseError("Bad parameter")."""
    t = text.strip(WS)
    if not t:
        return {}
    if t[0] != ";":
        t = ";" + t
    return parse_generic_params(t, "Bad parameter")


# -- digest (and other) credentials and challenges -------------------------------------------


_AUTH_TOKEN = "[A-Za-z0-9\\-.!%*_+`'~]+"
_AUTH_PARAM = '(%s)[ \t]*=[ \t]*(?:"([^"\\\\]*)"|([^ \t,"]+))' % _AUTH_TOKEN
# the usual shape: no quoted-pairs in quoted values
_FAST_AUTH = re.compile("(%s)(?:[ \t]+(%s(?:[ \t]*,[ \t,]*%s)*[ \t]*(?:,[ \t,]*)?))?" % (
    _AUTH_TOKEN, _AUTH_PARAM, _AUTH_PARAM))
_AUTH_PARAMS = re.compile(_AUTH_PARAM)


def parse_auth(value: str):
    """Parse a WWW-Authenticate / Proxy-Authenticate challenge or an Authorization /
    Proxy-Authorization credential: ``scheme name=value, name="quoted", ...``.

    Returns (scheme, params): the scheme as sent ("digest" in any case is given as "Digest"),
    parameter names lower-cased, values with quotes removed and quoted-pairs resolved.
    Raises ParseError("Bad auth header") (also for a repeated parameter)."""
    v = value.strip(WS)
    match = _FAST_AUTH.fullmatch(v)
    if match is not None:
        scheme, text = match.group(1), match.group(2)
        if scheme.lower() == "digest":
            scheme = "Digest"
        params: dict = {}
        if text:
            for name, quoted, plain in _AUTH_PARAMS.findall(text):
                name = name.lower()
                if name in params:
                    break  # repeated: the full parser says so
                params[name] = plain or quoted
            else:
                return scheme, params
    return _parse_auth_full(v)


def _parse_auth_full(v: str) -> Tuple[str, Dict[str, str]]:
    """parse_auth by the full grammar (quoted-pairs, odd spacing, empty list elements)."""
    n = len(v)
    i = skip(v, 0, TOKEN_CHARS)
    scheme = v[:i]
    if not scheme or (i < n and v[i] not in WS):
        raise ParseError("Bad auth header")
    if scheme.lower() == "digest":
        scheme = "Digest"
    params: Dict[str, str] = {}
    i = skip(v, i, WS)
    while i < n:
        name, value, i = _auth_param(v, i)
        if name in params:
            raise ParseError("Bad auth header")
        params[name] = value
        i = skip(v, i, WS)
        if i < n:
            if v[i] != ",":
                raise ParseError("Bad auth header")
            i = skip(v, i + 1, _WS_COMMA)
    return scheme, params


_WS_COMMA = WS + ","


def _auth_param(v: str, i: int) -> Tuple[str, str, int]:
    """(name lower case, value unquoted, index after the value) of ``name = value`` at i."""
    n = len(v)
    j = skip(v, i, TOKEN_CHARS)
    name = v[i:j].lower()
    k = skip(v, j, WS)
    if not name or k >= n or v[k] != "=":
        raise ParseError("Bad auth header")
    k = skip(v, k + 1, WS)
    if k < n and v[k] == '"':
        try:
            k, value = scan_quoted(v, k)
        except ParseError:
            raise ParseError("Bad auth header") from None
        return name, value, k
    start = k
    while k < n and v[k] not in WS and v[k] != ",":
        k += 1
    value = v[start:k]
    if not value or '"' in value:
        raise ParseError("Bad auth header")
    return name, value, k


# Directives written as quoted strings when format_auth is given no ``quoted`` set.
DIGEST_QUOTED = frozenset((
    "username", "realm", "nonce", "uri", "response", "cnonce", "opaque", "domain",
    "nextnonce", "rspauth",
))


def format_auth(scheme: str, params: dict, quoted=None) -> str:
    """``scheme name=value, name="value", ...``: the names in ``quoted`` (default
    DIGEST_QUOTED) are written as quoted strings, the others as they are."""
    if quoted is None:
        quoted = DIGEST_QUOTED
    parts = []
    for name, value in params.items():
        value = "" if value is None else str(value)
        if name in quoted:
            value = quote(value)
        elif "\r" in value or "\n" in value:
            raise ValueError("auth parameter %r holds CR or LF" % name)
        parts.append(name + "=" + value)
    return scheme + " " + ", ".join(parts) if parts else scheme


# -- dates -----------------------------------------------------------------------------------

_WKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_date(value: str) -> datetime:
    """An RFC 1123 date in GMT as SIP requires (``Sat, 13 Nov 2010 23:29:00 GMT``), as an
    aware UTC datetime. Raises ParseError("Bad Date")."""
    v = value.strip(WS)
    if len(v) != 29 or v[3:5] != ", " or v[7] != " " or v[11] != " " or v[16] != " " \
            or v[19] != ":" or v[22] != ":" or v[25:].upper() != " GMT":
        raise ParseError("Bad Date")
    if v[:3].title() not in _WKDAYS:
        raise ParseError("Bad Date")
    month = v[8:11].title()
    if month not in _MONTHS:
        raise ParseError("Bad Date")
    fields = (v[12:16], v[5:7], v[17:19], v[20:22], v[23:25])
    for field in fields:
        if small_int(field, 9999) is None:
            raise ParseError("Bad Date")
    year, day, hour, minute, second = (int(f) for f in fields)
    try:
        return datetime(year, _MONTHS.index(month) + 1, day, hour, minute, second,
                        tzinfo=timezone.utc)
    except ValueError:
        raise ParseError("Bad Date") from None


def format_date(when=None) -> str:
    """A SIP Date value for a POSIX time (now when None)."""
    if when is None:
        when = time.time()
    t = time.gmtime(when)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _WKDAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year,
        t.tm_hour, t.tm_min, t.tm_sec)


def date_timestamp(value: str) -> float:
    """The POSIX time of a SIP Date value. Raises ParseError("Bad Date")."""
    return float(calendar.timegm(parse_date(value).utctimetuple()))
