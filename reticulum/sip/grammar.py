"""Character classes and small scanners of the RFC 3261 grammar (§25), shared by the parsers.

Everything here works on ``str`` values as they were decoded from the wire (UTF-8, with
undecodable bytes kept as surrogate escapes so that they serialize back unchanged).
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

from .errors import ParseError

ALPHANUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
HEXDIG = "0123456789abcdefABCDEF"
MARK = "-_.!~*'()"
UNRESERVED = ALPHANUM + MARK

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = frozenset(ALPHANUM + "-.!%*_+`'~")
# word (Call-ID) = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#                   "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}")
WORD_CHARS = frozenset(ALPHANUM + "-.!%*_+`'~()<>:\\\"/[]?{}")
# URI components (escapes are checked separately, so "%" is allowed in each)
USER_CHARS = frozenset(UNRESERVED + "&=+$,;?/%" + "#")  # '#' is tolerated: phones send it
PASSWORD_CHARS = frozenset(UNRESERVED + "&=+$,%")
PARAM_CHARS = frozenset(UNRESERVED + "[]/:&+$%")
URI_HEADER_CHARS = frozenset(UNRESERVED + "[]/?:+$%=&")
HOST_CHARS = frozenset(ALPHANUM + "-._")
IPV6_CHARS = frozenset(HEXDIG + ":.")
SCHEME_CHARS = frozenset(ALPHANUM + "+-.")
# Characters of an opaque (non-SIP) URI: anything visible but what would end it in a header.
OPAQUE_CHARS = frozenset(UNRESERVED + ";/?:@&=+$,%#[]")
# gen-value = token / host / quoted-string: an unquoted generic parameter value.
GEN_VALUE_CHARS = frozenset(ALPHANUM + "-.!%*_+`'~" + ":[]")
DIGITS = frozenset("0123456789")

WS = " \t"


def is_token(text: str) -> bool:
    return bool(text) and TOKEN_CHARS.issuperset(text)


def is_digits(text: str) -> bool:
    return bool(text) and DIGITS.issuperset(text)


def skip(text: str, start: int, chars) -> int:
    """The index of the first character at or after ``start`` that is not in ``chars``."""
    n = len(text)
    while start < n and text[start] in chars:
        start += 1
    return start


def small_int(text: str, limit: int):
    """The value of a run of ASCII digits if it is <= limit, -1 if larger, None if no digits.

    Never calls int() on a huge string (which raises past 4300 digits)."""
    if not text.isdigit() or not text.isascii():
        return None
    if len(text) > 18:
        text = text.lstrip("0")
        if len(text) > 18:
            return -1
        if not text:
            return 0
    value = int(text)
    return value if value <= limit else -1


def check_escapes(text: str) -> bool:
    """Every '%' starts a two-hex-digit escape."""
    i = text.find("%")
    while i >= 0:
        pair = text[i + 1:i + 3]
        if len(pair) != 2 or pair[0] not in HEXDIG or pair[1] not in HEXDIG:
            return False
        i = text.find("%", i + 3)
    return True


_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")


def unescape(text: str) -> str:
    """Decode %XX escapes (as UTF-8; invalid sequences stay as surrogate escapes)."""
    if "%" not in text:
        return text
    data = bytearray()
    pos = 0
    for match in _ESCAPE_RE.finditer(text):
        data += text[pos:match.start()].encode("utf-8", "surrogateescape")
        data.append(int(match.group(1), 16))
        pos = match.end()
    data += text[pos:].encode("utf-8", "surrogateescape")
    return data.decode("utf-8", "surrogateescape")


def canonical_escapes(text: str, plain: frozenset) -> str:
    """Unescape the %XX whose character may appear unescaped (one of ``plain``); keep the
    others escaped, with upper-case hex. "%75ser%00" -> "user%00"."""
    if "%" not in text:
        return text

    def repl(match):
        char = chr(int(match.group(1), 16))
        if char in plain and char != "%":
            return char
        return "%" + match.group(1).upper()

    return _ESCAPE_RE.sub(repl, text)


def scan_quoted(text: str, start: int):
    """Read the quoted-string that begins at text[start] == '"'.

    Returns (index just past the closing quote, content with quoted-pairs resolved)."""
    end = text.find('"', start + 1)
    if end < 0:
        raise ParseError("Unterminated quoted string")
    if "\\" not in text[start + 1:end]:
        return end + 1, text[start + 1:end]
    out = []
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 >= n:
                break
            nxt = text[i + 1]
            if nxt in "\r\n":
                raise ParseError("Bad quoted string")
            out.append(nxt)
            i += 2
        elif c == '"':
            return i + 1, "".join(out)
        else:
            out.append(c)
            i += 1
    raise ParseError("Unterminated quoted string")


def quote(text: str) -> str:
    """A quoted-string holding ``text``: '"', '\\' and control characters become quoted-pairs;
    CR and LF (which no quoted-pair can carry) become spaces."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return '"' + text + '"'
    out = ['"']
    for c in text:
        if c == '"' or c == "\\":
            out.append("\\" + c)
        elif c == "\r" or c == "\n":
            out.append(" ")
        elif (c < " " and c != "\t") or c == "\x7f":
            out.append("\\" + c)
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def unquote(text: str) -> str:
    """The content of a quoted-string (quotes removed, quoted-pairs resolved); any other
    text is returned unchanged."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            end, value = scan_quoted(text, 0)
        except ParseError:
            return text
        if end == len(text):
            return value
    return text


def split_commas(value: str) -> list:
    """Split a header value on the commas that are outside quoted strings and <...>.

    The pieces are stripped of surrounding whitespace; empty pieces are kept."""
    if "," not in value:
        return [value.strip(WS)]
    if '"' not in value and "<" not in value:
        return [part.strip(WS) for part in value.split(",")]
    out = []
    start = 0
    in_quote = in_angle = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            out.append(value[start:i].strip(WS))
            start = i + 1
        i += 1
    out.append(value[start:].strip(WS))
    return out


def split_list(value: str, reason: str) -> list:
    """The elements of a list header line, for typed parsing: an empty line has none, an
    empty element between commas is an error."""
    parts = split_commas(value)
    if len(parts) == 1:
        return parts if parts[0] else []
    for part in parts:
        if not part:
            raise ParseError(reason)
    return parts


def parse_generic_params(text: str, reason: str) -> Dict[str, Optional[str]]:
    """``*( SEMI generic-param )`` as found after a header value's main part.

    ``text`` is empty or starts (after optional whitespace) with ';'. Names are lower-cased;
    values are kept as sent (a quoted-string keeps its quotes); a flag parameter maps to None.
    The first of duplicated names wins."""
    if not text:
        return {}
    if '"' not in text:
        return _plain_generic_params(text, reason)
    return _quoted_generic_params(text, reason)


def _plain_generic_params(text: str, reason: str) -> Dict[str, Optional[str]]:
    # no quoted strings: every ';' separates two parameters
    params: Dict[str, Optional[str]] = {}
    parts = text.split(";")
    if parts[0].strip(WS):
        raise ParseError(reason)
    del parts[0]
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip(WS)
        if not name or not TOKEN_CHARS.issuperset(name):
            raise ParseError(reason)
        if eq:
            value = value.strip(WS)
            if not value or not GEN_VALUE_CHARS.issuperset(value):
                raise ParseError(reason)
        params.setdefault(name.lower(), value if eq else None)
    return params


def _quoted_generic_params(text: str, reason: str) -> Dict[str, Optional[str]]:
    # values may be quoted strings holding ';' or '='
    params: Dict[str, Optional[str]] = {}
    n = len(text)
    i = skip(text, 0, WS)
    while i < n:
        if text[i] != ";":
            raise ParseError(reason)
        j = i + 1
        while j < n and text[j] not in ";=":
            j += 1
        name = text[i + 1:j].strip(WS)
        if not name or not TOKEN_CHARS.issuperset(name):
            raise ParseError(reason)
        value = None
        i = j
        if i < n and text[i] == "=":
            i, value = _generic_value(text, i + 1, reason)
        params.setdefault(name.lower(), value)
    return params


def _generic_value(text: str, i: int, reason: str) -> Tuple[int, str]:
    """(index after the value and the whitespace after it, the value as sent) at text[i]."""
    i = skip(text, i, WS)
    if i < len(text) and text[i] == '"':
        try:
            end, _ = scan_quoted(text, i)
        except ParseError:
            raise ParseError(reason) from None
        return skip(text, end, WS), text[i:end]
    end = text.find(";", i)
    if end < 0:
        end = len(text)
    value = text[i:end].strip(WS)
    if not value or not GEN_VALUE_CHARS.issuperset(value):
        raise ParseError(reason)
    return end, value


def format_params(params: dict) -> str:
    """';name=value;flag' for a parameter dict (values written as stored)."""
    if not params:
        return ""
    return "".join(";" + k if v is None else ";" + k + "=" + v for k, v in params.items())


# -- fast paths ------------------------------------------------------------------------------
#
# The values phones actually send follow a narrow shape: a sip/sips URI with a host name or
# IPv4 address, no escapes, no password, no URI headers; parameters that are tokens or
# quoted strings without backslashes. The patterns below accept only such text, and every
# text they accept is accepted by the full parsers with the same result, so a match can be
# taken apart with str.split instead of the character-by-character checks of the full
# grammar. Anything else goes to the full parsers, which give the exact error.


def char_class(chars, without: str = "") -> str:
    """A regular-expression character class of ``chars`` minus ``without``."""
    return "[" + "".join(re.escape(c) for c in sorted(set(chars) - set(without))) + "]"


_TOKEN_RE = char_class(TOKEN_CHARS) + "+"
# 0-65535, leading zeros allowed (small_int accepts them)
_PORT_RE = "(?:[0-9]{1,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_HOST_RE = char_class(HOST_CHARS) + "+"
_URI_PARAM_RE = char_class(PARAM_CHARS, "%") + "+"
# sip/sips URI parts: (scheme)(user)(host)(port)
_URI_HEAD_RE = r"(sips?):(?:(%s+)@)?(%s)(?::(%s))?" % (
    char_class(USER_CHARS, "%"), _HOST_RE, _PORT_RE)
# the same where the URI ends at the first ';' or '?' (addr-spec form)
_URI_HEAD_SPEC_RE = r"(sips?):(?:(%s+)@)?(%s)(?::(%s))?" % (
    char_class(USER_CHARS, "%;?,"), _HOST_RE, _PORT_RE)
_URI_PARAMS_RE = r"((?:;%s(?:=%s)?)*)" % (_URI_PARAM_RE, _URI_PARAM_RE)
# generic parameters: values are tokens/hosts or quoted strings without '\' and ';'
_GEN_PARAMS_RE = r'((?:[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s+|"[^"\\;]*"))?)*)[ \t]*' % (
    _TOKEN_RE, char_class(GEN_VALUE_CHARS))

#: a sip/sips URI: scheme, user, host, port, ';params' (text after the first ';')
FAST_URI = re.compile(_URI_HEAD_RE + _URI_PARAMS_RE)
#: name-addr: quoted display, token display, scheme, user, host, port, URI ';params',
#: header ';params'
FAST_NAME_ADDR = re.compile(
    r'(?:"([^"\\]*)"[ \t]*|(%s*))<%s%s>%s' % (
        char_class(TOKEN_CHARS | frozenset(WS)), _URI_HEAD_RE, _URI_PARAMS_RE, _GEN_PARAMS_RE))
#: addr-spec: scheme, user, host, port, header ';params'
FAST_ADDR_SPEC = re.compile(_URI_HEAD_SPEC_RE + _GEN_PARAMS_RE)
#: Via: transport, host, port, ';params'
FAST_VIA = re.compile(r"SIP/2\.0/(%s) (%s)(?::(%s))?%s" % (
    _TOKEN_RE, _HOST_RE, _PORT_RE, _GEN_PARAMS_RE))


def split_uri_params(text: str) -> dict:
    """The parameters of ``;a=b;c`` text that FAST_URI accepted (names lower-cased, the first
    of a name wins, flags -> None)."""
    params: dict = {}
    for part in text[1:].split(";"):
        name, eq, value = part.partition("=")
        name = name.lower()
        if name not in params:
            params[name] = value if eq else None
    return params


def split_generic_params(text: str) -> dict:
    """parse_generic_params for text that _GEN_PARAMS_RE accepted."""
    params: dict = {}
    parts = text.split(";")
    del parts[0]
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip(WS).lower()
        if name not in params:
            params[name] = value.strip(WS) if eq else None
    return params
