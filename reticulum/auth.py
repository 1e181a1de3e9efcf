"""Digest authentication for requests: challenges, verification, replay and lockout rules.

Sans-IO: everything comes in through `authenticate(request, source_ip, proxy)` and leaves as an
`AuthResult`; time comes from the injected clock.

Nonces carry no server state: a nonce is base64url(issue time in ms | 8 random bytes |
HMAC-SHA256(secret, issue time | random | realm) cut to 16 bytes | HMAC-SHA256(secret, issue
time | random | source) cut to 8 bytes), so any nonce this server issued for a realm can be
checked, and its age read, after a restart too (the secret lives in `state_dir/nonce.secret`).
The last part binds the nonce to the source it was sent to: presented from another source it is
stale (a fresh challenge, no password check, nothing counted), so a nonce seen once cannot serve
guesses from spoofed UDP addresses. The only per-nonce memory is the highest nonce-count seen,
kept until the nonce expires, to refuse replays.

Failures (wrong password, unknown user; always with a nonce issued to that source) are counted
per source, where a source is an IPv4 address or an IPv6 /64 (one host may own all of a /64):

* per (source, user): `max_failures` within `lockout_seconds` refuse (403) that source for that
  user for `lockout_seconds`;
* per source: `SOURCE_FACTOR` x `max_failures` (any users) refuse that source for everything;
* per user, from every source together: once they reach `SOURCE_FACTOR` x `max_failures`, a
  single failure refuses a (source, user) pair, which slows a guesser with many addresses.

A source that has not failed is never refused: nobody can lock another client out. Unknown
users look exactly like wrong passwords from outside. The counters are bounded
(`MAX_TRACKED_FAILURES`, the stalest dropped first).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote

from reticulum import events
from reticulum.addresses import canonical_host, source_key
from reticulum.sip import Response, format_auth, make_response, parse_auth, parse_uri
from reticulum.sip import digest

SECRET_FILE = "nonce.secret"
SECRET_BYTES = 32

#: at most this many nonces have their nonce-count remembered at once
MAX_TRACKED_NONCES = 100_000
#: at most this many source addresses / user names have failures counted at once
MAX_TRACKED_FAILURES = 100_000
#: a source may fail this many times `max_failures` (all user names together) before it is refused
SOURCE_FACTOR = 3
#: user names longer than this are counted under a digest of the name (names come from the wire)
_NAME_KEY_MAX = 64
#: a nonce may claim to be this much younger than the clock (a clock stepped back a little)
CLOCK_SLACK = 30.0

_NC = re.compile(r"[0-9a-fA-F]{8}\Z")
_NONCE_BODY = 16  # 8 bytes of time, 8 random bytes
_NONCE_MAC = 16
_NONCE_BIND = 8  # the MAC binding the nonce to its source
_NONCE_BYTES = _NONCE_BODY + _NONCE_MAC + _NONCE_BIND
_NONCE_CHARS = len(base64.urlsafe_b64encode(b"\0" * _NONCE_BYTES).rstrip(b"="))

# verification outcomes
_OK, _STALE, _BAD, _WRONG = "ok", "stale", "bad", "wrong"
#: refusals that are re-challenged: a stale nonce, a nonce issued to another source, a digest
#: uri that is not the request's (``check_uri``); the words are what the log says
_ELSEWHERE, _URI = "elsewhere", "uri"
_WHY = {_STALE: "stale nonce", _BAD: "unusable credentials", _ELSEWHERE:
        "nonce issued to another source", _URI: "digest uri mismatch"}


@dataclass
class AuthResult:
    """`user` when the request is authenticated; otherwise `response` to send (401/407/403)."""

    user: str | None = None
    response: Response | None = None
    realm: str | None = None  # the realm the user authenticated in


def load_or_create_secret(state_dir: str) -> bytes:
    """The server's nonce key from `state_dir/nonce.secret` (hex), created (mode 0600) if new."""
    path = os.path.join(state_dir, SECRET_FILE)
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    os.makedirs(state_dir, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".nonce.", dir=state_dir)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(SECRET_BYTES).hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)  # never replaces one written meanwhile by someone else
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)
    return _read_secret(path)


def _read_secret(path: str) -> bytes:
    with open(path) as f:
        text = f.read().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ValueError("%s is not a hex string; delete it to get a new one" % path) from None
    if len(secret) < 16:
        raise ValueError("%s holds fewer than 16 bytes; delete it to get a new one" % path)
    return secret


def _name_key(name: str) -> str:
    """A user name as a counter key, of bounded size."""
    if len(name) <= _NAME_KEY_MAX:
        return name
    return name[:32] + "#" + hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:16]


class _Failures:
    """Failures of one key in the current window, and its lockout deadline."""

    __slots__ = ("count", "since", "last", "locked_until")

    def __init__(self, now: float):
        self.count = 0
        self.since = now  # the window started with the first failure
        self.last = now
        self.locked_until = 0.0


class Authenticator:
    def __init__(
        self,
        accounts,
        realms: list[str],
        clock,
        secret: bytes,
        algorithms=("MD5",),
        nonce_lifetime: float = 300,
        max_failures: int = 10,
        lockout_seconds: float = 300,
        log=None,
        check_uri: bool = False,
    ):
        if not realms:
            raise ValueError("at least one realm is needed")
        if not secret:
            raise ValueError("an empty secret")
        self.accounts = accounts
        self.realms = list(realms)
        self._realm_set = frozenset(self.realms)
        self._hosts = frozenset(canonical_host(r) for r in self.realms)
        self.clock = clock
        self.secret = bytes(secret)
        self.algorithms: tuple[str, ...] = tuple(digest.normalize_algorithm(a) for a in algorithms)
        if not self.algorithms:
            raise ValueError("no digest algorithm")
        #: the challenges sent, in order: one per algorithm. Clients that know only MD5 read
        #: a single challenge: SIPp the first, JsSIP the last. So MD5, when offered but not
        #: last, closes the list too; clients that weigh every challenge (RFC 8760) still take
        #: the first they know, so nothing changes for them.
        offered = self.algorithms
        if "MD5" in offered and offered[-1] != "MD5":
            offered = offered + ("MD5",)
        self.offered: tuple[str, ...] = offered
        #: True: the digest `uri` must name the Request-URI. False (as Kamailio, OpenSIPS and
        #: Asterisk): any `uri` will do, since the response is computed over it and nonce,
        #: realm and nonce-count are checked all the same (SIPp names the server's address).
        self.check_uri = bool(check_uri)
        self.nonce_lifetime = float(nonce_lifetime)
        self.max_failures = int(max_failures)
        self.lockout_seconds = float(lockout_seconds)
        if log is None:
            from twisted.logger import Logger

            log = Logger(namespace="reticulum.auth")
        self.log = log
        # nonce -> [highest nc, issue time (s)]
        self._counts: OrderedDict[str, list] = OrderedDict()
        # nonces issued at or before this time and not in _counts had to be forgotten early
        self._forgotten_before = float("-inf")
        # ("source", source) | ("pair", source, user) | ("user", user) -> failures; the front
        # holds the stalest (least recent failure)
        self._failures: OrderedDict[tuple, _Failures] = OrderedDict()
        self._opaques: dict[str, str] = {}  # realm -> opaque (it depends on nothing else)

    # -- the decision --------------------------------------------------------------------------

    def authenticate(self, request, source_ip: str, proxy: bool, context: str = "") -> AuthResult:
        """Who sent `request`, or the answer (challenge, 403) when that is not proven; every
        answer other than a success is logged once, with why (`context` is appended)."""
        now = self.clock.seconds()
        realm = self.challenge_realm(request)
        source = source_key(source_ip)
        if self._failures and self._locked(("source", source), now):
            return self._forbidden(request, "source", source)
        credentials = self._credentials(request, proxy, realm)
        if credentials is None:
            self._log_challenge(request, source_ip, "no credentials", None, context)
            return AuthResult(response=self.challenge(request, proxy, realm, source_ip=source_ip))
        username: str = credentials.get("username") or ""
        if username and self._failures and self._locked(("pair", source, _name_key(username)), now):
            return self._forbidden(request, "source", "%s for %s" % (source, _name_key(username)))
        outcome = self._verify(request, credentials, source, now)
        if outcome == _OK:
            return AuthResult(user=username, realm=credentials["realm"])
        if outcome == _WRONG:
            self._failed(source, username, now)
            self.log.info(
                "Wrong password for {user!r} from {address} ({method} {call_id})",
                user=username, address=source_ip, method=request.method, call_id=request.call_id,
            )
            if events.listening:
                events.emit("auth", action="failure", user=username, address=source_ip)
        elif outcome == _URI:
            self._log_challenge(request, source_ip, "digest uri %s is not the Request-URI %s"
                                % (credentials.get("uri"), request.uri), username, context)
        else:
            self._log_challenge(request, source_ip, _WHY[outcome], username, context)
        stale = outcome in (_STALE, _ELSEWHERE)
        return AuthResult(response=self.challenge(request, proxy, realm, stale=stale,
                                                  source_ip=source_ip))

    def _log_challenge(self, request, source_ip: str, why: str, user, context: str) -> None:
        self.log.info("Challenging {method} {call_id} from {address}{user}: {why}{context}",
                      method=request.method, call_id=request.call_id, address=source_ip,
                      user=" for %r" % (user,) if user else "", why=why,
                      context=" (%s)" % context if context else "")

    def challenge(self, request, proxy: bool, realm: str | None = None,
                  stale: bool = False, *, source_ip: str) -> Response:
        """A 401 (or 407 when `proxy`) with one challenge per algorithm, in our order; its
        nonce serves only from `source_ip`."""
        realm = realm or self.challenge_realm(request)
        if proxy:
            response = make_response(request, 407)
            header = "Proxy-Authenticate"
        else:
            response = make_response(request, 401)
            header = "WWW-Authenticate"
        nonce = self._new_nonce(realm, source_key(source_ip))
        opaque = self._opaque(realm)
        quoted = {"realm", "nonce", "opaque", "qop"}
        for algorithm in self.offered:
            params = {"realm": realm, "nonce": nonce, "opaque": opaque,
                      "algorithm": algorithm, "qop": "auth"}
            if stale:
                params["stale"] = "true"
            response.add(header, format_auth("Digest", params, quoted))
        return response

    def challenge_realm(self, request) -> str:
        """The request's domain (To host for REGISTER, From host otherwise) if served here."""
        try:
            address = request.to if request.method == "REGISTER" else request.from_
            host = address.uri.host
        except Exception:
            host = None
        if host:
            host = canonical_host(host)
            for realm in self.realms:
                if realm.lower() == host:
                    return realm
        return self.realms[0]

    def strip_credentials(self, request, proxy: bool) -> None:
        """Remove the credentials meant for our realms; keep those for anyone else."""
        header = "Proxy-Authorization" if proxy else "Authorization"
        values = request.get_all(header)
        keep = [v for v in values if self._ours(v) is None]
        if len(keep) != len(values):
            request.remove(header)
            for value in keep:
                request.add(header, value)

    def owns(self, user: str | None, uri) -> bool:
        """Is `uri` (a sip/sips URI) `user`'s own address in a domain served here?"""
        if not user or uri is None:
            return False
        if getattr(uri, "scheme", None) not in ("sip", "sips"):
            return False
        uri_user = getattr(uri, "user", None)
        host = getattr(uri, "host", None)
        if not uri_user or not host:
            return False
        return unquote(uri_user) == user and canonical_host(host) in self._hosts

    # -- credentials ---------------------------------------------------------------------------

    def _ours(self, value: str) -> dict | None:
        """The parameters of a Digest credentials value for one of our realms, else None."""
        try:
            scheme, params = parse_auth(value)
        except Exception:
            return None
        if not scheme or scheme.lower() != "digest":
            return None
        params = {k.lower(): v for k, v in params.items()}
        if params.get("realm") not in self._realm_set:
            return None
        return params

    def _credentials(self, request, proxy: bool, realm: str) -> dict | None:
        header = "Proxy-Authorization" if proxy else "Authorization"
        best = None
        for value in request.get_all(header):
            params = self._ours(value)
            if params is None:
                continue
            if params["realm"] == realm:
                return params
            if best is None:
                best = params
        return best

    def _verify(self, request, params: dict, source: str, now: float) -> str:
        algorithm = self._well_formed(params)
        if algorithm is None:
            return _BAD
        username, realm, nonce = params["username"], params["realm"], params["nonce"]
        uri, given, nc, cnonce = params["uri"], params["response"], params["nc"], params["cnonce"]
        raw = self._nonce_raw(nonce)
        if raw is None:
            return _BAD
        issued = self._nonce_issued(raw, realm)
        if issued is None or issued > now + CLOCK_SLACK:
            return _BAD
        if self.check_uri and not self._uri_matches(uri, request):
            return _URI
        if not self._nonce_bound(raw, source):
            return _ELSEWHERE  # issued to another source: no password check, nothing counted
        ha1 = self.accounts.ha1(username, realm, digest.base_algorithm(algorithm))
        known = ha1 is not None
        if not known:
            ha1 = self._decoy_ha1(username, realm, algorithm)
        expected = digest.response(ha1, request.method, uri, nonce, nc, cnonce, "auth", algorithm)
        if not digest.equal(expected, given) or not known:
            return _WRONG
        if now - issued > self.nonce_lifetime:
            return _STALE
        if not self._count(nonce, int(nc, 16), issued, now):
            return _STALE  # replayed (or reordered) nonce-count: the client starts afresh
        return _OK

    def _well_formed(self, params: dict) -> str | None:
        """The credentials' algorithm when they have every field RFC 8760 asks of a client
        (qop=auth, a hex nonce-count) and name an algorithm we offer; else None."""
        for name in ("username", "nonce", "uri", "response", "nc", "cnonce"):
            if not params.get(name):
                return None
        qop = params.get("qop")
        if qop is None or qop.lower() != "auth" or not _NC.match(params["nc"]):
            return None
        try:
            algorithm = digest.normalize_algorithm(params.get("algorithm"))
        except ValueError:
            return None
        return algorithm if algorithm in self.algorithms else None

    def _uri_matches(self, text: str, request) -> bool:
        target = request.uri
        if text == str(target):
            return True
        try:
            given = parse_uri(text)
        except Exception:
            return False
        if given.scheme != target.scheme:
            return False
        if given.scheme not in ("sip", "sips"):
            return str(given) == str(target)
        return (
            given.host == target.host
            and given.port == target.port
            and unquote(given.user or "") == unquote(target.user or "")
        )

    def _decoy_ha1(self, username: str, realm: str, algorithm: str) -> str:
        """A stable stand-in HA1 for unknown users, so they cost the same work."""
        key = hmac.new(self.secret, b"decoy:" + username.encode("utf-8", "replace"),
                       hashlib.sha256).hexdigest()
        return digest.ha1(username, realm, key, algorithm)

    # -- nonces --------------------------------------------------------------------------------

    def _nonce_mac(self, body: bytes, realm: str) -> bytes:
        return hmac.digest(self.secret, b"nonce:" + body + realm.encode("utf-8"),
                           "sha256")[:_NONCE_MAC]

    def _nonce_bind(self, body: bytes, source: str) -> bytes:
        return hmac.digest(self.secret, b"bind:" + body + source.encode("utf-8", "replace"),
                           "sha256")[:_NONCE_BIND]

    def _new_nonce(self, realm: str, source: str) -> str:
        millis = int(round(self.clock.seconds() * 1000))
        body = struct.pack(">q", millis) + os.urandom(_NONCE_BODY - 8)
        raw = body + self._nonce_mac(body, realm) + self._nonce_bind(body, source)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @staticmethod
    def _nonce_raw(nonce: str) -> bytes | None:
        if len(nonce) != _NONCE_CHARS:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii") + b"=" * (-len(nonce) % 4))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return None
        return raw if len(raw) == _NONCE_BYTES else None

    def _nonce_bound(self, raw: bytes, source: str) -> bool:
        """Was this nonce (decoded, `_nonce_raw`) issued to `source`?"""
        return hmac.compare_digest(raw[_NONCE_BODY + _NONCE_MAC:],
                                   self._nonce_bind(raw[:_NONCE_BODY], source))

    def _nonce_issued(self, raw: bytes, realm: str) -> float | None:
        """The issue time (seconds) of a nonce (decoded) we made for `realm`, else None."""
        body, mac = raw[:_NONCE_BODY], raw[_NONCE_BODY:_NONCE_BODY + _NONCE_MAC]
        if not hmac.compare_digest(mac, self._nonce_mac(body, realm)):
            return None
        return struct.unpack(">q", body[:8])[0] / 1000.0

    def _opaque(self, realm: str) -> str:
        opaque = self._opaques.get(realm)
        if opaque is None:
            opaque = self._opaques[realm] = hmac.new(
                self.secret, b"opaque:" + realm.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
        return opaque

    def _count(self, nonce: str, nc: int, issued: float, now: float) -> bool:
        """Record a verified nonce-count; False when it is not above the highest seen."""
        counts = self._counts
        entry = counts.get(nonce)
        if entry is None:
            if issued <= self._forgotten_before:
                return False  # its history was dropped: it cannot be trusted any more
            self._prune(now)
            counts[nonce] = [nc, issued]
            return True
        if nc <= entry[0]:
            return False
        entry[0] = nc
        return True

    def _prune(self, now: float) -> None:
        counts = self._counts
        oldest = now - self.nonce_lifetime
        # Entries go in at first use, which is soon after issue: the front is (nearly) oldest.
        while counts:
            nonce, (_, issued) = next(iter(counts.items()))
            if issued >= oldest:
                break
            del counts[nonce]
        if len(counts) >= MAX_TRACKED_NONCES:
            for nonce in [n for n, (_, issued) in counts.items() if issued < oldest]:
                del counts[nonce]
            while len(counts) >= MAX_TRACKED_NONCES:
                _, (_, issued) = counts.popitem(last=False)
                self._forgotten_before = max(self._forgotten_before, issued)

    # -- failures and lockout ------------------------------------------------------------------

    @property
    def _lockout_enabled(self) -> bool:
        return self.max_failures > 0 and self.lockout_seconds > 0

    def _locked(self, key: tuple, now: float) -> bool:
        entry = self._failures.get(key)
        if entry is None or not entry.locked_until:
            return False
        if entry.locked_until > now:
            return True
        del self._failures[key]  # the lockout is over: start counting afresh
        return False

    def _failed(self, source: str, username: str, now: float) -> None:
        """Count one failure of `source` for `username`; lock out what has failed too often."""
        if not self._lockout_enabled:
            return
        self._prune_failures(now)
        name = _name_key(username)
        many = self.max_failures * SOURCE_FACTOR
        user = self._add_failure(("user", name), now)
        if user.count == many:
            self.log.warn(
                "{count} failed authentications for {user!r} within {seconds:g}s from "
                "several sources; one more failure now refuses a source for this user",
                count=many, user=name, seconds=self.lockout_seconds,
            )
        pair_limit = 1 if user.count > many else self.max_failures
        self._lock_if(("pair", source, name), pair_limit, now,
                      "source {source} for {user!r}", source=source, user=name)
        self._lock_if(("source", source), many, now, "source {source}", source=source)

    def _lock_if(self, key: tuple, limit: int, now: float, what: str, **fields) -> None:
        entry = self._add_failure(key, now)
        if entry.count < limit:
            return
        entry.count = 0
        entry.locked_until = now + self.lockout_seconds
        if events.listening:
            events.emit("auth", action="lockout", kind=key[0], user=fields.get("user"),
                        address=fields.get("source"), seconds=self.lockout_seconds)
        self.log.warn(
            "Refusing " + what + " for {seconds:g}s after {count} failed authentications",
            seconds=self.lockout_seconds, count=limit, **fields,
        )

    def _add_failure(self, key: tuple, now: float) -> _Failures:
        failures = self._failures
        entry = failures.get(key)
        if entry is None:
            while len(failures) >= MAX_TRACKED_FAILURES:
                failures.popitem(last=False)  # the stalest goes
            entry = failures[key] = _Failures(now)
        else:
            failures.move_to_end(key)
            if now - entry.since >= self.lockout_seconds:
                entry.count = 0  # a new window
                entry.since = now
        entry.count += 1
        entry.last = now
        return entry

    def _prune_failures(self, now: float) -> None:
        """Forget keys whose last failure (and so any lockout) is older than the window."""
        failures = self._failures
        oldest = now - self.lockout_seconds
        while failures:
            key, entry = next(iter(failures.items()))
            if entry.last > oldest or entry.locked_until > now:
                break
            del failures[key]

    def _forbidden(self, request, kind: str, who: str) -> AuthResult:
        # The lockout itself was logged as a warning; each refusal only at debug level.
        self.log.debug("Refusing a request from locked-out {kind} {who!r}", kind=kind, who=who)
        return AuthResult(response=make_response(request, 403, "Forbidden"))
