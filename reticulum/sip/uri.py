"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), and opaque URIs of any other scheme."""
from __future__ import annotations

import ipaddress
from typing import Dict, Optional, Tuple

from .errors import ParseError
from .grammar import (
    DIGITS,
    FAST_URI,
    HOST_CHARS,
    IPV6_CHARS,
    OPAQUE_CHARS,
    PARAM_CHARS,
    PASSWORD_CHARS,
    SCHEME_CHARS,
    UNRESERVED,
    URI_HEADER_CHARS,
    USER_CHARS,
    canonical_escapes,
    check_escapes,
    small_int,
    split_uri_params,
    unescape,
)

_USER_PLAIN = frozenset(UNRESERVED + "&=+$,;?/")
_PARAM_PLAIN = frozenset(UNRESERVED + "[]/:&+$")
_TEL_CHARS = frozenset(UNRESERVED + "#*+%")
_TEL_VISUAL = "-.()"
# Parameters that make two SIP URIs differ when only one of them has it (§19.1.4 and its
# examples, which count transport too).
_SIGNIFICANT = ("user", "ttl", "method", "maddr", "transport")


class URI:
    """A parsed URI.

    ``scheme`` is lower case. For sip/sips: ``user`` and ``password`` as sent (escapes kept),
    ``host`` lower case (IPv6 without brackets), ``port`` int or None, ``params`` (names lower
    case, values as sent, flags -> None, order kept), ``headers`` the raw text after '?' or
    None. For tel: ``user`` is the number and ``params`` its parameters, while ``opaque`` keeps
    the text after "tel:" so that str() gives back what was sent. Other schemes only have
    ``opaque``.
    """

    __slots__ = ("scheme", "user", "password", "host", "port", "params", "headers", "opaque")

    def __init__(self, scheme: str = "sip", user=None, password=None, host=None, port=None,
                 params=None, headers=None, opaque=None):
        self.scheme = scheme.lower()
        self.user = user
        self.password = password
        if host is not None:
            host = host.lower()
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
        self.host = host
        self.port = None if port is None else int(port)
        self.params = dict(params) if params else {}
        self.headers = headers
        self.opaque = opaque

    @staticmethod
    def _make(scheme: str, user: Optional[str], password: Optional[str],
              host: Optional[str], port: Optional[int], params: Dict[str, Optional[str]],
              headers: Optional[str], opaque: Optional[str]) -> "URI":
        """A URI from parts already checked and normalised (the parsers'), as they are."""
        uri = URI.__new__(URI)
        uri.scheme = scheme
        uri.user = user
        uri.password = password
        uri.host = host
        uri.port = port
        uri.params = params
        uri.headers = headers
        uri.opaque = opaque
        return uri

    # -- text ----------------------------------------------------------------------------------

    def __str__(self) -> str:
        if self.opaque is not None:
            return self.scheme + ":" + self.opaque
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(":")
                parts.append(self.password)
            if self.host is not None:
                parts.append("@")
        if self.host is not None:
            parts.append(self.host_port())
        for k, v in self.params.items():
            parts.append(";" + k if v is None else ";" + k + "=" + v)
        if self.headers is not None:
            parts.append("?")
            parts.append(self.headers)
        return "".join(parts)

    def __repr__(self) -> str:
        return "URI(%r)" % str(self)

    def host_port(self) -> str:
        """'host', 'host:port', '[v6]' or '[v6]:port'."""
        host = self.host or ""
        if ":" in host:
            host = "[" + host + "]"
        if self.port is not None:
            return "%s:%d" % (host, self.port)
        return host

    def is_ip(self) -> bool:
        """Is the host an IPv4 or IPv6 literal?"""
        return is_ip_literal(self.host)

    @property
    def transport(self):
        """The transport parameter, lower case, or None."""
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    # -- copies and comparison -----------------------------------------------------------------

    def copy(self, **changes) -> "URI":
        """A new URI with these attributes changed (params dict copied)."""
        new = URI.__new__(URI)
        new.scheme = self.scheme
        new.user = self.user
        new.password = self.password
        new.host = self.host
        new.port = self.port
        new.params = dict(self.params)
        new.headers = self.headers
        new.opaque = self.opaque
        if changes:
            for name, value in changes.items():
                if name not in URI.__slots__:
                    raise TypeError("URI has no attribute %r" % name)
                if name == "params":
                    value = dict(value) if value else {}
                elif name == "scheme":
                    value = value.lower()
                elif name == "host" and value is not None:
                    value = value.lower()
                    if value.startswith("[") and value.endswith("]"):
                        value = value[1:-1]
                elif name == "port" and value is not None:
                    value = int(value)
                setattr(new, name, value)
            if new.scheme == "tel" and "opaque" not in changes and (
                    "user" in changes or "params" in changes):
                new.opaque = None  # rebuilt from number and parameters
        return new

    def __eq__(self, other) -> bool:
        if not isinstance(other, URI):
            return NotImplemented
        return (self.scheme == other.scheme and self.user == other.user
                and self.password == other.password and self.host == other.host
                and self.port == other.port and self.params == other.params
                and self.headers == other.headers and self.opaque == other.opaque)

    def __ne__(self, other) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        # From fields that equal URIs share; do not change a URI used as a key.
        return hash((self.scheme, self.user, self.host, self.port, self.opaque))

    def aor(self) -> str:
        """The canonical address-of-record for location lookups: "sip:user@host".

        sips becomes sip; port, parameters, password and headers are dropped; escapes of
        characters that need none are undone (%75 -> u) and the rest are upper-cased (%00
        stays %00); the host is lower case (IPv6 in brackets). tel: the number without visual
        separators. Other schemes: the URI as is."""
        scheme = self.scheme
        if scheme == "tel":
            number = self.user if self.user is not None else (self.opaque or "").split(";")[0]
            return "tel:" + "".join(c for c in number if c not in _TEL_VISUAL)
        if scheme not in ("sip", "sips"):
            return str(self)
        out = "sip:"
        if self.user is not None:
            out += canonical_escapes(self.user, _USER_PLAIN) + "@"
        host = self.host or ""
        return out + ("[" + host + "]" if ":" in host else host)

    def equivalent(self, other: "URI") -> bool:
        """URI comparison of RFC 3261 §19.1.4 (user and password case-sensitive after
        unescaping, host case-insensitive, a port or a user/ttl/method/maddr/transport
        parameter present in only one never matches, other one-sided parameters ignored,
        headers must all match)."""
        if self.scheme != other.scheme:
            return False
        if self.scheme not in ("sip", "sips"):
            if self.scheme == "tel":
                return self.aor() == other.aor() and _norm_params(self.params) == \
                    _norm_params(other.params)
            return str(self) == str(other)
        if _unesc(self.user) != _unesc(other.user) or \
                _unesc(self.password) != _unesc(other.password):
            return False
        if self.host != other.host or self.port != other.port:
            return False
        mine = _norm_params(self.params)
        theirs = _norm_params(other.params)
        for name, value in mine.items():
            if name in theirs:
                if theirs[name] != value:
                    return False
            elif name in _SIGNIFICANT:
                return False
        for name in theirs:
            if name not in mine and name in _SIGNIFICANT:
                return False
        return _norm_headers(self.headers) == _norm_headers(other.headers)


def _unesc(text):
    return None if text is None else unescape(text)


def _norm_params(params: dict) -> dict:
    return {unescape(k).lower(): None if v is None else unescape(v).lower()
            for k, v in params.items()}


def _norm_headers(text):
    if not text:
        return {}
    out = {}
    for part in text.split("&"):
        name, _, value = part.partition("=")
        out[unescape(name).lower()] = unescape(value)
    return out


def is_ip_literal(host) -> bool:
    if not host:
        return False
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    parts = host.split(".")
    if len(parts) != 4:
        return False
    for part in parts:
        if not part or len(part) > 3 or not DIGITS.issuperset(part) or int(part) > 255:
            return False
    return True


# -- parsing -----------------------------------------------------------------------------------


def parse_uri(text: str) -> URI:
    """Parse a URI; raises ParseError("Bad URI") when it does not follow the grammar.

    sip/sips URIs are parsed into their parts; tel URIs into number and parameters (keeping
    the text); any other well-formed "scheme:rest" becomes an opaque URI.

    The usual sip/sips URI is taken apart by the FAST_URI pattern; everything it accepts,
    ``parse_uri_full`` accepts with the same result (tests/sip/test_sip_fastpath.py), and
    everything else goes there."""
    match = FAST_URI.fullmatch(text)
    if match is None:
        return parse_uri_full(text)
    scheme, user, host, port, params = match.groups()
    return URI._make(scheme, user, None, host.lower(), None if port is None else int(port),
                     split_uri_params(params) if params else {}, None, None)


def parse_uri_full(text: str) -> URI:
    """parse_uri by the full grammar, character by character."""
    colon = text.find(":")
    if colon <= 0:
        raise ParseError("Bad URI")
    scheme = text[:colon]
    if scheme == "sip" or scheme == "sips":
        return _parse_sip(scheme, text[colon + 1:])
    lower = scheme.lower()
    if not SCHEME_CHARS.issuperset(scheme) or not scheme[0].isalpha():
        raise ParseError("Bad URI")
    if lower == "sip" or lower == "sips":
        return _parse_sip(lower, text[colon + 1:])
    rest = text[colon + 1:]
    if not rest or not OPAQUE_CHARS.issuperset(rest) or not check_escapes(rest):
        raise ParseError("Bad URI")
    if lower != "tel":
        return URI._make(lower, None, None, None, None, {}, None, rest)
    number, _, ptext = rest.partition(";")
    if not number or not _TEL_CHARS.issuperset(number):
        raise ParseError("Bad URI")
    return URI._make(lower, number, None, None, None,
                     _parse_uri_params(ptext) if ptext else {}, None, rest)


def _parse_sip(scheme: str, rest: str) -> URI:
    """A sip/sips URI from the text after "scheme:"."""
    user, password, hp = _split_userinfo(rest)
    headers = None
    q = hp.find("?")
    if q >= 0:
        headers = hp[q + 1:]
        hp = hp[:q]
        if not headers or not URI_HEADER_CHARS.issuperset(headers) or \
                not check_escapes(headers):
            raise ParseError("Bad URI")
    semi = hp.find(";")
    if semi >= 0:
        params = _parse_uri_params(hp[semi + 1:])
        hp = hp[:semi]
    else:
        params = {}
    host, port = _parse_hostport(hp)
    return URI._make(scheme, user, password, host, port, params, headers, None)


def _split_userinfo(rest: str) -> Tuple[Optional[str], Optional[str], str]:
    """(user, password, the text after '@'), checked; (None, None, rest) without '@'."""
    at = rest.find("@")
    if at < 0:
        return None, None, rest
    userinfo = rest[:at]
    user, colon, pw = userinfo.partition(":")
    if not user or not USER_CHARS.issuperset(user):
        raise ParseError("Bad URI")
    password = None
    if colon:
        if not PASSWORD_CHARS.issuperset(pw):
            raise ParseError("Bad URI")
        password = pw
    if "%" in userinfo and not check_escapes(userinfo):
        raise ParseError("Bad URI")
    return user, password, rest[at + 1:]


def _parse_hostport(hp: str) -> Tuple[str, Optional[int]]:
    """(host lower case, IPv6 without brackets; port or None)."""
    if not hp.startswith("["):
        host, colon, port_text = hp.partition(":")
        if not host or not HOST_CHARS.issuperset(host):
            raise ParseError("Bad URI")
        return host.lower(), _port(port_text) if colon else None
    close = hp.find("]")
    if close < 0:
        raise ParseError("Bad URI")
    host = hp[1:close]
    if not host or not IPV6_CHARS.issuperset(host):
        raise ParseError("Bad URI")
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ParseError("Bad URI") from None
    after = hp[close + 1:]
    if not after:
        return host.lower(), None
    if after[0] != ":":
        raise ParseError("Bad URI")
    return host.lower(), _port(after[1:])


def _port(text: str) -> int:
    value = small_int(text, 65535)
    if value is None or value < 0:
        raise ParseError("Bad URI")
    return value


_PARAM_TEXT = PARAM_CHARS | frozenset(";=")


def _parse_uri_params(text: str) -> Dict[str, Optional[str]]:
    if not _PARAM_TEXT.issuperset(text) or ("%" in text and not check_escapes(text)):
        raise ParseError("Bad URI")
    params: Dict[str, Optional[str]] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if not name or (eq and (not value or "=" in value)):
            raise ParseError("Bad URI")
        params.setdefault(name.lower(), value if eq else None)
    return params
