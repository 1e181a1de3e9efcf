"""The registrar: RFC 3261 §10.3 REGISTER processing, RFC 5626 outbound, RFC 3327 Path.

Sans-IO: :meth:`Registrar.handle` takes a parsed REGISTER (already authenticated and
authorised for its To address by the caller) and the flow it arrived on, updates the
location store and returns the response to send.  Time comes from the injected clock.

Every request is checked completely before anything in the store changes, so a REGISTER
that fails (400, 423, 500) leaves the bindings exactly as they were.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from reticulum.addresses import canonical_host
from reticulum.location import Binding, LocationStore, log_line
from reticulum.sip import new_tag, ParseError, Request, Response, format_date, make_response

__all__ = ["Registrar", "SUPPORTED", "NAT_MODES", "flow_bound"]

#: what the registrar advertises in every 200 to a REGISTER
SUPPORTED = "outbound, path"

_CONTACT_SCHEMES = ("sip", "sips")
_MAX_DELTA = 2**32 - 1  # RFC 3261 delta-seconds ceiling
_MAX_REG_ID = 2**31 - 1  # RFC 5626 reg-id range
_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
#: Contact parameters the registrar itself answers with; the others are echoed
_OWN_PARAMS = ("expires", "q")

#: ``[registrar] nat``: when evident NAT makes a binding flow-bound
NAT_MODES = ("auto", "always", "never")
#: private (RFC 1918) and shared carrier-grade NAT (RFC 6598) networks
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)
#: Contact transports we cannot open a connection for (the client's own WebSocket only)
_FLOW_ONLY_TRANSPORTS = ("ws", "wss")


def _ip(host: str | None):
    try:
        ip = ipaddress.ip_address((host or "").strip("[]"))
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


def _private(ip) -> bool:
    return ip.version == 4 and any(ip in net for net in _PRIVATE_NETWORKS)


@functools.lru_cache(maxsize=4096)  # asked at every REGISTER; ip_address() is slow
def nat_evident(contact_host: str | None, source_host: str | None) -> bool:
    """The Contact names a private IPv4 address (RFC 1918, RFC 6598) other than the packet's
    source, and the source is not private: a NAT rewrote the packet on its way here. The
    same address with another port is not NAT."""
    contact, source = _ip(contact_host), _ip(source_host)
    if contact is None or source is None or contact == source:
        return False
    return _private(contact) and not _private(source)


def flow_bound(uri: Any, instance: str | None, reg_id: int | None, flow: Any,
               nat: str = "auto") -> bool:
    """Must requests for this Contact go back over the REGISTER's flow instead of to the
    Contact itself (RFC 3261 §10, §16.5)? Only for RFC 5626 outbound (+sip.instance and
    reg-id), a Contact that cannot be reached as written (an ``.invalid`` host, a WebSocket
    transport), or NAT (``nat``: "auto" when evident, "always", "never")."""
    if flow is None:
        return False
    if nat == "always" or (instance is not None and reg_id is not None):
        return True
    host = (getattr(uri, "host", None) or "").lower().rstrip(".")
    if not host or host == "invalid" or host.endswith(".invalid"):
        return True
    if (uri.params.get("transport") or "").lower() in _FLOW_ONLY_TRANSPORTS:
        return True
    return nat == "auto" and nat_evident(host, flow.remote[0])


class _Reject(Exception):
    """Stops processing with a final response."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


@dataclass
class _Change:
    """One Contact of the REGISTER, checked and ready to apply."""

    contact: str
    uri: Any  # the Contact URI, parsed
    expires: int  # 0: remove
    q: float
    instance: str | None
    reg_id: int | None
    params: str


def _format_q(q: float) -> str:
    text = ("%.3f" % q).rstrip("0").rstrip(".")
    return text or "0"


def _format_param(name: str, value: str | None) -> str:
    if value is None:
        return name
    if value == "" or (not value.startswith('"') and any(c not in _TOKEN_CHARS for c in value)):
        value = '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')
    return "%s=%s" % (name, value)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def _delta_seconds(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        return None
    return min(int(text), _MAX_DELTA)


def _parse_q(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        q = float(text.strip())
    except ValueError:
        return None
    if math.isnan(q) or q < 0.0 or q > 1.0:
        return None
    return q


def _option_tags(request: Request, name: str) -> set[str]:
    tags = set()
    for value in request.get_all(name):
        for tag in value.split(","):
            tag = tag.strip().lower()
            if tag:
                tags.add(tag)
    return tags


def _outbound_ids(params: dict) -> tuple[str | None, int | None]:
    """RFC 5626 `+sip.instance` (lower case) and `reg-id` (only with an instance)."""
    instance = None
    raw_instance = params.get("+sip.instance")
    if raw_instance:
        instance = _unquote(raw_instance).lower() or None
    reg_id = None
    raw_reg_id = params.get("reg-id")
    if raw_reg_id is not None:
        text = _unquote(raw_reg_id)
        if not text.isdigit() or not text.isascii() or not 0 < int(text) <= _MAX_REG_ID:
            raise _Reject(400, "Bad reg-id")
        if instance is not None:  # RFC 5626: reg-id means nothing without an instance
            reg_id = int(text)
    return instance, reg_id


class Registrar:
    """REGISTER processing for the ``domains`` this server is responsible for."""

    def __init__(
        self,
        domains: list[str],
        location: LocationStore,
        clock: Any,
        min_expires: int = 60,
        max_expires: int = 7200,
        default_expires: int = 3600,
        log: Any = None,
        nat: str = "auto",
        max_contacts: int = 10,
        domain_of: Callable[[Any], str | None] | None = None,
        points_here: Callable[[Any], bool] | None = None,
    ) -> None:
        """``domain_of(uri)``: the served domain a To URI names, None if none (default: the
        ``domains``, case and a trailing dot ignored); the core's also maps our own
        addresses to the first domain. ``points_here(contact_uri)``: does that Contact
        reach this server itself (a spiral)? ``max_contacts``: bindings per
        address-of-record (0: no limit)."""
        self.domains = {canonical_host(d.strip()) for d in domains}
        self.location = location
        self.clock = clock
        self.min_expires = int(min_expires)
        self.max_expires = int(max_expires)
        self.default_expires = int(default_expires)
        if nat not in NAT_MODES:
            raise ValueError("nat must be one of %s" % ", ".join(NAT_MODES))
        self.nat = nat
        self.max_contacts = int(max_contacts)
        self.domain_of = domain_of if domain_of is not None else self._served_domain
        self.points_here = points_here
        self.log = log if log is not None else logging.getLogger("reticulum.registrar")

    # -- public --------------------------------------------------------------------------------

    def handle(
        self, request: Request, flow: Any, authenticated_user: str | None = None
    ) -> Response:
        """Process one REGISTER; returns the final response (never raises for bad input)."""
        now = self.clock.seconds()
        try:
            return self._handle(request, flow, authenticated_user, now)
        except _Reject as reject:
            return self._reply(request, reject.status, reject.reason, reject.headers)
        except ParseError as e:
            return self._reply(request, 400, getattr(e, "reason", None) or "Bad Request")

    def _debug(self) -> bool:
        """Is anybody listening to debug messages? (They are built only then.)"""
        log = self.log
        if isinstance(log, logging.Logger):
            return log.isEnabledFor(logging.DEBUG)
        return log is not None

    # -- processing ----------------------------------------------------------------------------

    def _handle(
        self, request: Request, flow: Any, user: str | None, now: float
    ) -> Response:
        aor = self._aor(request)
        contacts = request.contacts
        if not contacts:
            return self._ok(request, aor, now)

        call_id = request.call_id
        cseq = request.cseq.number
        header_expires = request.expires

        if any(c.star for c in contacts):
            if len(contacts) != 1 or header_expires != 0:
                raise _Reject(400, "Invalid wildcard Contact")
            return self._remove_all(request, aor, now)

        supported = _option_tags(request, "Supported")
        changes = [self._check_contact(c, header_expires) for c in contacts]

        if "outbound" in supported:
            with_reg_id = [ch for ch in changes if ch.reg_id is not None and ch.expires > 0]
            if len(with_reg_id) > 1:
                raise _Reject(400, "More than one Contact with reg-id")

        self._check_count(aor, changes, now)
        # §10.3 step 7 for every affected binding before anything changes
        for change in changes:
            self._check_change_order(aor, change, call_id, cseq, now)

        path = request.get_all("Path")
        outbound = False
        for change in changes:
            if change.expires == 0:
                self._remove(aor, change)
                continue
            if change.reg_id is not None and "outbound" in supported:
                outbound = True
            self.location.put(self._binding(aor, change, call_id, cseq, path, flow, now))
        if self._debug():
            log_line(self.log, "debug", "register %s from %s: %s" % (
                aor, getattr(flow, "remote", None),
                ", ".join("%s (%ds)" % (ch.contact, ch.expires) for ch in changes)))
        return self._ok(
            request, aor, now, outbound=outbound, path=path if "path" in supported else None
        )

    def _remove_all(self, request: Request, aor: str, now: float) -> Response:
        """§10.3 step 6, `Contact: *`: every binding goes, unless one of them is newer (same
        Call-ID, CSeq not lower) -- then nothing does."""
        call_id, cseq = request.call_id, request.cseq.number
        for binding in self.location.bindings(aor, now):
            self._check_order(binding, call_id, cseq)
        removed = self.location.remove_all(aor)
        if self._debug():
            log_line(self.log, "debug",
                     "register %s: removed all %d bindings" % (aor, len(removed)))
        return self._ok(request, aor, now)

    def _same_instance(self, aor: str, change: _Change) -> list:
        """The bindings an RFC 5626 instance and reg-id already have (none without them)."""
        if change.instance is None or change.reg_id is None:
            return []
        return list(self.location.find_instance(aor, change.instance, change.reg_id))

    def _check_change_order(self, aor: str, change: _Change, call_id: str, cseq: int,
                            now: float) -> None:
        existing = self.location.get(aor, change.contact)
        if existing is not None and existing.expires_at > now:
            self._check_order(existing, call_id, cseq)
        for existing in self._same_instance(aor, change):
            if existing.expires_at > now:
                self._check_order(existing, call_id, cseq)

    def _remove(self, aor: str, change: _Change) -> None:
        self.location.remove(aor, change.contact)
        for existing in self._same_instance(aor, change):
            self.location.remove(aor, existing.contact)

    def _binding(self, aor: str, change: _Change, call_id: str, cseq: int, path: list,
                 flow: Any, now: float) -> Binding:
        return Binding(
            aor=aor,
            contact=change.contact,
            expires_at=now + change.expires,
            q=change.q,
            call_id=call_id,
            cseq=cseq,
            instance=change.instance,
            reg_id=change.reg_id,
            path=list(path),
            flow=flow,
            params=change.params,
            registered_at=now,
            flow_bound=flow_bound(change.uri, change.instance, change.reg_id, flow, self.nat),
        )

    def _aor(self, request: Request) -> str:
        """The canonical address-of-record: `alice@RETICULUM.LOCAL.` and `alice@<our
        address>` are both `sip:alice@reticulum.local`, so that one user has one set of
        bindings whichever form the phone was given."""
        uri = request.to.uri
        if uri.scheme not in _CONTACT_SCHEMES:
            raise _Reject(400, "Unsupported To URI scheme")
        domain = self.domain_of(uri) if uri.host else None
        if domain is None:
            raise _Reject(403, "Not a domain served here")
        if not uri.user:
            raise _Reject(404, "Not Found")
        if uri.host != domain or uri.port is not None:
            uri = uri.copy(host=domain, port=None)
        return uri.aor()

    def _served_domain(self, uri: Any) -> str | None:
        host = canonical_host(uri.host)
        return host if host in self.domains else None

    def _check_count(self, aor: str, changes: list[_Change], now: float) -> None:
        """`max_contacts` bindings per address-of-record: a REGISTER that would leave more
        is refused as a whole (the existing bindings stay), as Kamailio's registrar does with
        503 "Too many registered contacts"; Retry-After says when the first binding lapses.
        Refreshing or removing bindings is always possible, even above the limit."""
        limit = self.max_contacts
        if limit <= 0 or not any(ch.expires > 0 for ch in changes):
            return
        existing = self.location.bindings(aor, now)
        after = {b.contact for b in existing}
        for change in changes:
            if change.instance is not None and change.reg_id is not None:
                # RFC 5626: this one replaces the binding of the same instance and reg-id
                for other in self.location.find_instance(aor, change.instance, change.reg_id):
                    after.discard(other.contact)
            if change.expires == 0:
                after.discard(change.contact)
            else:
                after.add(change.contact)
        if len(after) <= limit or len(after) <= len(existing):
            return
        headers = []
        if existing:
            soonest = min(b.expires_at for b in existing)
            headers.append(("Retry-After", str(max(1, int(math.ceil(soonest - now))))))
        raise _Reject(503, "Too many registered contacts", headers)

    def _check_contact(self, address: Any, header_expires: int | None) -> _Change:
        uri = address.uri
        if uri.scheme not in _CONTACT_SCHEMES:
            raise _Reject(400, "Unsupported Contact URI scheme")
        params = address.params
        expires = self._expires(params.get("expires"), header_expires)
        if expires > 0 and self.points_here is not None and self.points_here(uri):
            # requests for the user would come back here and fork again: a spiral
            raise _Reject(403, "Contact points to this server")

        q = 1.0
        if "q" in params:
            parsed = _parse_q(params.get("q"))
            if parsed is None:
                raise _Reject(400, "Bad q value")
            q = parsed

        instance, reg_id = _outbound_ids(params)
        echoed = ""
        if len(params) > ("expires" in params) + ("q" in params):
            echoed = ";".join(
                _format_param(name, value)
                for name, value in params.items()
                if name not in _OWN_PARAMS
            )
        return _Change(str(uri), uri, expires, q, instance, reg_id, echoed)

    def _expires(self, raw: str | None, header_expires: int | None) -> int:
        """§10.3 step 6: the Contact's expires, else the Expires header, else the default;
        423 below the minimum, capped at the maximum."""
        if raw is not None:
            expires = _delta_seconds(raw)
            if expires is None:
                raise _Reject(400, "Bad Contact expires")
        elif header_expires is not None:
            expires = min(int(header_expires), _MAX_DELTA)
            if expires < 0:
                raise _Reject(400, "Bad Expires")
        else:
            expires = self.default_expires
        if 0 < expires < self.min_expires:
            raise _Reject(
                423, "Interval Too Brief", [("Min-Expires", str(self.min_expires))]
            )
        return min(expires, self.max_expires)

    @staticmethod
    def _check_order(binding: Binding, call_id: str, cseq: int) -> None:
        if binding.call_id == call_id and cseq <= binding.cseq:
            raise _Reject(500, "Out of order")

    # -- responses -----------------------------------------------------------------------------

    def _contact_value(self, binding: Binding, now: float) -> str:
        value = "<%s>;expires=%d" % (binding.contact, binding.remaining(now))
        if binding.q != 1.0:
            value += ";q=" + _format_q(binding.q)
        if binding.params:
            value += ";" + binding.params
        return value

    def _ok(
        self,
        request: Request,
        aor: str,
        now: float,
        outbound: bool = False,
        path: list[str] | None = None,
    ) -> Response:
        response = make_response(request, 200, "OK", to_tag=self._tag(request))
        if path:
            for value in path:
                response.add("Path", value)
        for binding in self.location.bindings(aor, now):
            response.add("Contact", self._contact_value(binding, now))
        if outbound:
            response.add("Require", "outbound")
        response.add("Supported", SUPPORTED)
        response.add("Date", self._date(now))
        return response

    _date_second = None
    _date_text = ""

    def _date(self, now: float) -> str:
        """The Date header for ``now`` (made once a second)."""
        second = int(now)
        if second != self._date_second:
            self._date_text = format_date(second)
            self._date_second = second
        return self._date_text

    def _reply(
        self, request: Request, status: int, reason: str,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        response = make_response(request, status, reason, to_tag=self._tag(request))
        for name, value in headers:
            response.add(name, value)
        return response

    @staticmethod
    def _tag(request: Request) -> str | None:
        try:
            if request.to.tag:
                return None
        except Exception:
            pass
        return new_tag()
