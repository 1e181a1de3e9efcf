"""Digest authentication for requests: challenges, verification, replay and lockout rules.

Sans-IO: everything comes in through `authenticate(request, source_ip, proxy)` and leaves as an
`AuthResult`; time comes from the injected clock.

Nonces carry no server state: a nonce is base64url(issue time in ms | 8 random bytes |
HMAC-SHA256(secret, issue time | random | realm) cut to 16 bytes), so any nonce this server
issued for a realm can be checked, and its age read, after a restart too (the secret lives in
`state_dir/nonce.secret`). The only per-nonce memory is the highest nonce-count seen, kept
until the nonce expires, to refuse replays.

Failures (wrong password, unknown user) are counted per source address and per user name;
`max_failures` of them within `lockout_seconds` shut that address or name out (403) for
`lockout_seconds`. Unknown users look exactly like wrong passwords from outside.
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
from collections import OrderedDict, deque
from dataclasses import dataclass
from urllib.parse import unquote

from reticulum.sip import Response, format_auth, make_response, parse_auth, parse_uri
from reticulum.sip import digest

SECRET_FILE = "nonce.secret"
SECRET_BYTES = 32

#: at most this many nonces have their nonce-count remembered at once
MAX_TRACKED_NONCES = 100_000
#: at most this many source addresses / user names have failures counted at once
MAX_TRACKED_FAILURES = 100_000
#: a nonce may claim to be this much younger than the clock (a clock stepped back a little)
CLOCK_SLACK = 30.0

_NC = re.compile(r"[0-9a-fA-F]{8}\Z")
_NONCE_BODY = 16  # 8 bytes of time, 8 random bytes
_NONCE_MAC = 16
_NONCE_CHARS = len(base64.urlsafe_b64encode(b"\0" * (_NONCE_BODY + _NONCE_MAC)).rstrip(b"="))

# verification outcomes
_OK, _STALE, _BAD, _WRONG = "ok", "stale", "bad", "wrong"


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


def _canonical_host(host: str) -> str:
    """Hosts compare without case and without a trailing dot (`RETICULUM.LOCAL.`)."""
    host = host.lower()
    return host[:-1] if host.endswith(".") else host


class _Failures:
    """Recent failure times per key, with a lockout deadline once there are too many."""

    __slots__ = ("times", "locked_until")

    def __init__(self):
        self.times: deque = deque()
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
        self._hosts = frozenset(_canonical_host(r) for r in self.realms)
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
        self._failures: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._opaques: dict[str, str] = {}  # realm -> opaque (it depends on nothing else)

    # -- the decision --------------------------------------------------------------------------

    def authenticate(self, request, source_ip: str, proxy: bool) -> AuthResult:
        now = self.clock.seconds()
        realm = self.challenge_realm(request)
        if self._locked(("address", source_ip), now):
            return self._forbidden(request, "address", source_ip)
        credentials = self._credentials(request, proxy, realm)
        if credentials is None:
            return AuthResult(response=self.challenge(request, proxy, realm))
        username = credentials.get("username")
        if username and self._locked(("user", username), now):
            return self._forbidden(request, "user", username)
        outcome = self._verify(request, credentials, now)
        if outcome == _OK:
            return AuthResult(user=username, realm=credentials["realm"])
        if outcome == _WRONG:
            self._fail(("address", source_ip), now)
            self._fail(("user", username), now)
            self.log.info(
                "Digest authentication failed for {user!r} from {address}",
                user=username, address=source_ip,
            )
        return AuthResult(response=self.challenge(request, proxy, realm, stale=outcome == _STALE))

    def challenge(self, request, proxy: bool, realm: str | None = None,
                  stale: bool = False) -> Response:
        """A 401 (or 407 when `proxy`) with one challenge per algorithm, in our order."""
        realm = realm or self.challenge_realm(request)
        if proxy:
            response = make_response(request, 407)
            header = "Proxy-Authenticate"
        else:
            response = make_response(request, 401)
            header = "WWW-Authenticate"
        nonce = self._new_nonce(realm)
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
            host = _canonical_host(host)
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
        return unquote(uri_user) == user and _canonical_host(host) in self._hosts

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

    def _verify(self, request, params: dict, now: float) -> str:
        username = params.get("username")
        realm = params["realm"]
        nonce = params.get("nonce")
        uri = params.get("uri")
        given = params.get("response")
        nc = params.get("nc")
        cnonce = params.get("cnonce")
        qop = params.get("qop")
        if not (username and nonce and uri and given and nc and cnonce):
            return _BAD
        if qop is None or qop.lower() != "auth" or not _NC.match(nc):
            return _BAD
        try:
            algorithm = digest.normalize_algorithm(params.get("algorithm"))
        except ValueError:
            return _BAD
        if algorithm not in self.algorithms:
            return _BAD
        issued = self._nonce_issued(nonce, realm)
        if issued is None or issued > now + CLOCK_SLACK:
            return _BAD
        if self.check_uri and not self._uri_matches(uri, request):
            return _BAD
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
        return hmac.new(self.secret, b"nonce:" + body + realm.encode("utf-8"),
                        hashlib.sha256).digest()[:_NONCE_MAC]

    def _new_nonce(self, realm: str) -> str:
        millis = int(round(self.clock.seconds() * 1000))
        body = struct.pack(">q", millis) + os.urandom(_NONCE_BODY - 8)
        raw = body + self._nonce_mac(body, realm)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def _nonce_issued(self, nonce: str, realm: str) -> float | None:
        """The issue time (seconds) of a nonce we made for `realm`, else None."""
        if len(nonce) != _NONCE_CHARS:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii") + b"=" * (-len(nonce) % 4))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return None
        if len(raw) != _NONCE_BODY + _NONCE_MAC:
            return None
        body, mac = raw[:_NONCE_BODY], raw[_NONCE_BODY:]
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

    def _locked(self, key: tuple[str, str], now: float) -> bool:
        entry = self._failures.get(key)
        if entry is None or not entry.locked_until:
            return False
        if entry.locked_until > now:
            return True
        del self._failures[key]  # the lockout is over: start counting afresh
        return False

    def _fail(self, key: tuple[str, str], now: float) -> None:
        if not self._lockout_enabled:
            return
        failures = self._failures
        self._prune_failures(now)
        entry = failures.get(key)
        if entry is None:
            while len(failures) >= MAX_TRACKED_FAILURES:
                self._evict_failure(now)
            entry = failures[key] = _Failures()
        else:
            failures.move_to_end(key)
        times = entry.times
        window_start = now - self.lockout_seconds
        while times and times[0] <= window_start:
            times.popleft()
        times.append(now)
        if len(times) >= self.max_failures:
            times.clear()
            entry.locked_until = now + self.lockout_seconds
            self.log.warn(
                "Locking out {kind} {who!r} for {seconds:g}s after {count} failed "
                "authentication attempts",
                kind=key[0], who=key[1], seconds=self.lockout_seconds, count=self.max_failures,
            )

    def _evict_failure(self, now: float) -> None:
        """Make room: drop the key whose last failure is the oldest."""
        self._failures.popitem(last=False)

    def _prune_failures(self, now: float) -> None:
        """Forget keys whose failures have all left the window (the front is the stalest)."""
        failures = self._failures
        window_start = now - self.lockout_seconds
        while failures:
            key, entry = next(iter(failures.items()))
            if entry.locked_until > now or (entry.times and entry.times[-1] > window_start):
                break
            del failures[key]

    def _forbidden(self, request, kind: str, who: str) -> AuthResult:
        # The lockout itself was logged as a warning; each refusal only at debug level.
        self.log.debug("Refusing a request from locked-out {kind} {who!r}", kind=kind, who=who)
        return AuthResult(response=make_response(request, 403, "Forbidden"))
