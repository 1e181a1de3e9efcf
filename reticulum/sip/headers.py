"""Header names (canonical spellings, compact forms, list headers) and the header container."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from .grammar import TOKEN_CHARS, WS, split_commas

#: one header line: (lower-case long name, display name, raw value)
Entry = Tuple[str, str, str]

# Canonical spellings of the headers this project knows (RFC 3261 and its extensions).
_KNOWN = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Accept-Resource-Priority",
    "Alert-Info", "Allow", "Allow-Events", "Answer-Mode", "Authentication-Info",
    "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
    "Content-Encoding", "Content-ID", "Content-Language", "Content-Length", "Content-Type",
    "CSeq", "Date", "Encryption", "Error-Info", "Event", "Expires", "Feature-Caps",
    "Flow-Timer", "From", "Geolocation", "Geolocation-Error", "Geolocation-Routing",
    "Hide", "History-Info", "Identity", "Identity-Info", "Info-Package", "In-Reply-To", "Join",
    "Max-Breadth", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE", "Organization",
    "P-Access-Network-Info", "P-Asserted-Identity", "P-Associated-URI",
    "P-Called-Party-ID", "P-Charging-Function-Addresses", "P-Charging-Vector",
    "P-Preferred-Identity", "P-Visited-Network-ID", "Path", "Permission-Missing",
    "Policy-Contact", "Policy-ID", "Priority", "Priv-Answer-Mode", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Reason-Phrase", "Record-Route", "Recv-Info", "Refer-Sub", "Refer-To", "Referred-By",
    "Reject-Contact", "Replaces", "Reply-To", "Request-Disposition", "Require",
    "Resource-Priority", "Response-Key", "Retry-After", "Route", "RSeq", "Security-Client",
    "Security-Server", "Security-Verify", "Server", "Service-Route", "Session-Expires",
    "Session-ID", "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State", "Supported",
    "Suppress-If-Match", "Target-Dialog", "Timestamp", "To", "Trigger-Consent", "Unsupported",
    "User-Agent", "User-to-User", "Via", "Warning", "WWW-Authenticate",
)

# RFC 3261 §7.3.3 and later registrations.
COMPACT_FORMS = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "n": "Identity-Info", "o": "Event", "r": "Refer-To",
    "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires",
    "y": "Identity",
}

# Headers whose values are comma-separated lists (RFC 3261 §7.3.1): several lines of the same
# name may be combined into one, and one line may carry several values. Lower-case names.
LIST_HEADERS = frozenset((
    "accept", "accept-contact", "accept-encoding", "accept-language", "accept-resource-priority",
    "alert-info", "allow", "allow-events", "call-info", "contact", "content-encoding",
    "content-language", "error-info", "history-info", "in-reply-to", "p-asserted-identity",
    "p-associated-uri", "p-preferred-identity", "path", "proxy-require", "reason",
    "record-route", "reject-contact", "request-disposition", "require", "resource-priority",
    "route", "security-client", "security-server", "security-verify", "service-route",
    "supported", "unsupported", "via", "warning",
))

# exact spelling -> (key, display name); key is the lower-case long name.
_INFO: dict = {}
_LOWER: dict = {}
for _display in _KNOWN:
    _info = (_display.lower(), _display)
    _LOWER[_info[0]] = _info
    for _form in (_display, _info[0], _display.upper()):
        _INFO[_form] = _info
for _short, _long in COMPACT_FORMS.items():
    _info = _LOWER[_long.lower()]
    _LOWER[_short] = _info
    _INFO[_short] = _info
    _INFO[_short.upper()] = _info
_SEEN: dict = {}  # other spellings met on the wire (bounded)


def name_info(name: str) -> Optional[Tuple[str, str]]:
    """(key, display name) for a header name as written, or None if it is not a token.

    Known headers (and their compact forms) get their canonical display name; others keep
    the name as written. Trailing whitespace (``Via  :``) is ignored."""
    info = _INFO.get(name)
    if info is not None:
        return info
    info = _SEEN.get(name)
    if info is not None:
        return info
    info = _name_info_of(name)
    if info is not None and len(_SEEN) < 2048:
        _SEEN[name] = info
    return info


def _name_info_of(name: str) -> Optional[Tuple[str, str]]:
    """name_info by the rules, without the tables of spellings already seen (which only
    remember its answers; tests check that they agree)."""
    stripped = name.strip(WS)
    lower = stripped.lower()
    info = _LOWER.get(lower)
    if info is None:
        if not stripped or not TOKEN_CHARS.issuperset(stripped):
            return None
        info = (lower, stripped)
    return info


_CONTENT_LENGTH = _LOWER["content-length"]


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name: compact forms expanded, known headers in
    their usual case ("call-id" -> "Call-ID", "v" -> "Via", "www-authenticate" ->
    "WWW-Authenticate"); unknown names are returned as given."""
    info = name_info(name)
    return info[1] if info is not None else name.strip(WS)


def header_key(name: str) -> str:
    """The lookup key of a header name: lower-case long form."""
    info = name_info(name)
    return info[0] if info is not None else name.strip(WS).lower()


def _check_name(name: str):
    info = name_info(name)
    if info is None:
        raise ValueError("bad header name: %r" % (name,))
    return info


def _check_value(value) -> str:
    if not isinstance(value, str):
        if value is None:
            raise TypeError("a header value cannot be None")
        value = str(value)
    if "\r" in value or "\n" in value:
        raise ValueError("a header value cannot hold CR or LF: %r" % (value,))
    return value.strip(WS)


class Headers:
    """The ordered header lines of a message.

    Each line is a (key, display name, raw value) triple; the key is the lower-case long name,
    so lookups are case-insensitive and compact forms are expanded. ``get_all`` splits list
    headers (``LIST_HEADERS``) on top-level commas.

    ``typed`` keeps the typed values parsed from the lines (a Via list, an Address, a CSeq),
    by header key: whoever parses them (Message's properties) stores them there, and Headers
    drops a key's value whenever a line of that header changes, so a kept value always
    matches the lines.
    """

    __slots__ = ("_h", "typed")

    def __init__(self, items: Any = None) -> None:
        self._h: List[Entry] = []
        self.typed: Dict[str, Any] = {}
        if items is None:
            return
        if isinstance(items, Headers):
            self._h = list(items._h)
            return
        if hasattr(items, "items"):
            items = items.items()
        h = self._h
        for name, value in items:
            key, display = _check_name(name)
            if isinstance(value, (list, tuple)):
                for one in value:
                    h.append((key, display, _check_value(one)))
            else:
                h.append((key, display, _check_value(value)))

    @staticmethod
    def from_entries(entries: List[Entry]) -> "Headers":
        """Headers over (key, display name, value) triples that are already checked (built
        by the parser, or picked from ``entries()`` of other Headers). The list is taken, not
        copied: pass a new one."""
        new = Headers.__new__(Headers)
        new._h = entries
        new.typed = {}
        return new

    @staticmethod
    def from_lines(lines: List[str]) -> Tuple["Headers", List[str], bool]:
        """The Headers of a message's unfolded header lines; also the values of its
        Content-Length lines (for framing), and whether a line was not ``name: value`` with
        a token name (such a line is left out)."""
        entries: List[Entry] = []
        append = entries.append
        lengths = []
        bad = False
        get_info = _INFO.get
        for line in lines:
            name, colon, value = line.partition(":")
            info = get_info(name) if colon else None
            if info is None:
                info = name_info(name) if colon else None
                if info is None:
                    bad = True
                    continue
            value = value.strip(WS)
            if info is _CONTENT_LENGTH:
                lengths.append(value)
            append((info[0], info[1], value))
        new = Headers.__new__(Headers)
        new._h = entries
        new.typed = {}
        return new, lengths, bad

    # -- reading -------------------------------------------------------------------------------

    def entries(self) -> Sequence[Entry]:
        """(key, display name, raw value) of every line, in order; the key is the lower-case
        long name (``header_key``), for callers that look at every line once. A read-only
        view: change the lines with set/add/remove."""
        return self._h

    def first(self, key: str) -> Optional[str]:
        """The raw value of the first line whose key (``header_key``) is ``key``, or None:
        ``get`` without the name lookup, for callers that hold the key already."""
        for k, _, v in self._h:
            if k == key:
                return v
        return None

    def get(self, name: str, default=None):
        """The raw value of the first line of that name (the whole line), or default."""
        key = header_key(name)
        for k, _, v in self._h:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list:
        """Every value of that name. For a list header each line is split on top-level commas
        (outside quotes and <>) and empty elements are dropped; other headers give one value
        per line."""
        key = header_key(name)
        if key in LIST_HEADERS:
            out: List[str] = []
            for k, _, v in self._h:
                if k == key:
                    if "," in v:
                        out.extend(p for p in split_commas(v) if p)
                    elif v:
                        out.append(v)
            return out
        return [v for k, _, v in self._h if k == key]

    def lines(self, name: str) -> list:
        """The raw values of every line of that name, unsplit."""
        key = header_key(name)
        return [v for k, _, v in self._h if k == key]

    def count(self, name: str) -> int:
        """How many lines of that name there are."""
        key = header_key(name)
        return sum(1 for k, _, _ in self._h if k == key)

    def __contains__(self, name) -> bool:
        key = header_key(name)
        for k, _, _ in self._h:
            if k == key:
                return True
        return False

    def __iter__(self):
        """(display name, raw value) of every line, in order."""
        for _, d, v in self._h:
            yield d, v

    def items(self) -> list:
        return [(d, v) for _, d, v in self._h]

    def names(self) -> list:
        """Display names of the distinct headers present, in order of first appearance."""
        seen = set()
        out = []
        for k, d, _ in self._h:
            if k not in seen:
                seen.add(k)
                out.append(d)
        return out

    def __len__(self) -> int:
        return len(self._h)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._h] == [(k, v) for k, _, v in other._h]

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        return "Headers(%r)" % (self.items(),)

    def copy(self) -> "Headers":
        new = Headers.__new__(Headers)
        new._h = list(self._h)
        new.typed = {}
        return new

    # -- changing ------------------------------------------------------------------------------

    def set(self, name: str, value) -> None:
        """Replace every line of that name by one line (at the place of the first)."""
        key, display = _check_name(name)
        value = _check_value(value)
        self.typed.pop(key, None)
        h = self._h
        out = []
        placed = False
        for entry in h:
            if entry[0] == key:
                if not placed:
                    out.append((key, display, value))
                    placed = True
            else:
                out.append(entry)
        if not placed:
            out.append((key, display, value))
        self._h = out

    def add(self, name: str, value, first: bool = False) -> None:
        """Add a line. By default after the last line of that name (or at the end); with
        first=True above the first line of that name (or at the very top)."""
        key, display = _check_name(name)
        value = _check_value(value)
        self.typed.pop(key, None)
        h = self._h
        entry = (key, display, value)
        if first:
            for i, e in enumerate(h):
                if e[0] == key:
                    h.insert(i, entry)
                    return
            h.insert(0, entry)
            return
        for i in range(len(h) - 1, -1, -1):
            if h[i][0] == key:
                h.insert(i + 1, entry)
                return
        h.append(entry)

    def remove(self, name: str) -> None:
        """Remove every line of that name."""
        key = header_key(name)
        self.typed.pop(key, None)
        self._h = [e for e in self._h if e[0] != key]

    def remove_first(self, name: str) -> None:
        """Remove one value: for a list header the first element of the first line (the rest
        of that line stays), otherwise the whole first line."""
        key = header_key(name)
        h = self._h
        i = 0
        while i < len(h):
            k, d, v = h[i]
            if k != key:
                i += 1
                continue
            self.typed.pop(key, None)
            if key in LIST_HEADERS:
                parts = [p for p in split_commas(v) if p] if "," in v else [v] if v else []
                if not parts:  # an empty line holds no value: drop it and look further
                    del h[i]
                    continue
                if len(parts) > 1:
                    h[i] = (k, d, ", ".join(parts[1:]))
                    return
            del h[i]
            return
