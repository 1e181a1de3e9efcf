"""RFC 3263 §4 target selection, decided without any I/O.

`Resolver.locate(uri)` returns a `Resolution`: the targets to try in order (the first, then
the next on failure: RFC 3263 §4.3), or why there are none. When every DNS answer it needs is
cached it is settled at once; otherwise it is pending and `wait(callback)` hears when it is.

The DNS itself is behind a `lookup` object with one method::

    lookup.query(name: str, rdtype: str, callback)   # later, on the reactor thread:
                                                    # callback(Answer(records, ttl, error))

Records are plain tuples: `NAPTR`, `SRV`, and address strings for A/AAAA. Each resolution
re-reads its answers from the start whenever one arrives (a few dictionary reads), so the
procedure below is written as if every answer were at hand.
"""
from __future__ import annotations

import ipaddress
import os
import random
from typing import List, NamedTuple, Optional

from twisted.logger import Logger

from reticulum.addresses import DEFAULT_PORTS, Target, is_ip

#: answers are kept at most this long, whatever TTL they came with
MAX_TTL = 600.0
#: a name or record type that does not exist (NXDOMAIN, no records), at most
NEGATIVE_TTL = 30.0
#: a lookup that failed (timeout, SERVFAIL, no name server): asked again soon
FAILURE_TTL = 5.0
#: at most this many targets per URI (a hostile zone may publish thousands)
MAX_TARGETS = 16
#: cached answers, at most
MAX_CACHE = 4096
#: resolutions waiting for DNS at once, at most; more are refused at once (FAILED)
MAX_PENDING = 256

NXDOMAIN = "nxdomain"

# why a resolution has no targets
NOT_FOUND = "not found"  # the name does not exist, or has no SIP server and no address
FAILED = "failed"  # DNS did not answer (timeout, SERVFAIL, too many lookups at once)
INSECURE = "insecure"  # a sips: hop, but no way to reach it over TLS

#: NAPTR services (RFC 3263 §4.1, RFC 7118) -> (transport, secure)
NAPTR_SERVICES = {"sip+d2u": ("udp", False), "sip+d2t": ("tcp", False),
                  "sips+d2t": ("tls", True), "sip+d2w": ("ws", False),
                  "sips+d2w": ("wss", True)}
#: SRV service names per transport (RFC 3263 §4.1, RFC 7118 §7)
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp.",
              "ws": "_sip._ws.", "wss": "_sips._ws."}
#: the order SRV records are looked for when there is no NAPTR
SRV_ORDER = ("tls", "tcp", "udp")


class NAPTR(NamedTuple):
    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


class SRV(NamedTuple):
    priority: int
    weight: int
    port: int
    target: str


class Answer(NamedTuple):
    """What one DNS query brought: records (possibly none), how long they hold, and an error:
    None for an answer, NXDOMAIN for a name that does not exist, else why it failed."""

    records: tuple = ()
    ttl: float = 0.0
    error: Optional[str] = None


class NoLookup:
    """The lookup of a server without DNS: every name fails (only IP literals and
    `[dns.static]` work)."""

    def query(self, name, rdtype, callback) -> None:
        callback(Answer((), FAILURE_TTL, "no DNS resolver"))


class Resolution:
    """The targets of one URI in the order to try them, or why there are none."""

    __slots__ = ("name", "targets", "problem", "detail", "_waiters")

    def __init__(self, name: str, targets=None, problem: Optional[str] = None,
                 detail: str = ""):
        self.name = name
        self.targets: list = targets if targets is not None else []
        self.problem = problem
        self.detail = detail
        self._waiters: Optional[list] = None if targets is not None or problem else []

    @property
    def done(self) -> bool:
        return self._waiters is None

    def wait(self, callback) -> None:
        """callback(self) once settled (at once when it already is)."""
        if self._waiters is None:
            callback(self)
        else:
            self._waiters.append(callback)

    def settle(self, targets: list, problem: Optional[str], detail: str) -> None:
        waiters, self._waiters = self._waiters, None
        if waiters is None:
            return
        self.targets, self.problem, self.detail = targets, problem, detail
        for callback in waiters:
            try:
                callback(self)
            except Exception:
                Resolver.log.failure("A DNS waiter failed for {name}", name=self.name)

    def __repr__(self) -> str:
        state = self.targets if self.done else "pending"
        return "<Resolution %s %s %s>" % (self.name, state, self.problem or "")


def order_srv(records, rng) -> list:
    """RFC 2782: by priority; within one priority a weighted random order (zero weights first
    in the running sum, so they are chosen rarely but can be)."""
    out = []
    for priority in sorted({r.priority for r in records}):
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for i, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    out.append(group.pop(i))
                    break
    return out


def _usable_address(text: str) -> bool:
    """An address a request may be sent to (no wildcard, multicast or broadcast from DNS)."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (ip.is_unspecified or ip.is_multicast or str(ip) == "255.255.255.255")


def _valid_name(name: str) -> bool:
    if not name or len(name) > 253:
        return False
    for label in name.split("."):
        if not label or len(label) > 63:
            return False
        if not all(c.isalnum() or c in "-_" for c in label):
            return False
    return True


class _Pass:
    """One run of RFC 3263 §4 over the answers known now."""

    def __init__(self, ask, rng, families, sendable, domain):
        self.ask = ask
        self.rng = rng
        self.families = families
        self.sendable = sendable
        self.domain = domain
        self.missing = False
        self.failures: list = []

    def get(self, name: str, rdtype: str) -> Optional[Answer]:
        answer = self.ask(name, rdtype)
        if answer is None:
            self.missing = True
        elif answer.error is not None and answer.error != NXDOMAIN:
            self.failures.append("%s %s: %s" % (rdtype, name, answer.error))
        return answer

    def addresses(self, name: str, port: int, transport: str) -> List[Target]:
        out: List[Target] = []
        for rdtype in self.families:
            answer = self.get(name, rdtype)
            if answer is not None and answer.error is None:
                out.extend(Target(transport, ip, port, self.domain) for ip in answer.records
                           if _usable_address(ip))
        return out

    def srv(self, name: str, transport: str) -> Optional[list]:
        """Targets of one SRV name in RFC 2782 order; None when it has no records."""
        answer = self.get(name, "SRV")
        if answer is None or answer.error is not None or not answer.records:
            return None
        out = []
        for record in order_srv(answer.records, self.rng):
            target = record.target.lower().rstrip(".")
            if not target:  # "." : the service is decidedly not available here
                continue
            out.extend(self.addresses(target, record.port, transport))
        return out


def plan(host: str, port, wanted: str, sips: bool, ask, rng, families, sendable):
    """RFC 3263 §4.1/4.2 for a host name: (targets, problem, detail), or None while an answer
    is missing (`ask(name, rdtype)` returned None for it)."""
    step = _Pass(ask, rng, families, sendable, host)
    if sips:
        sendable = tuple(t for t in sendable if t in ("tls", "wss"))
        if wanted in ("tcp", ""):
            wanted = "tls" if wanted else ""
    if wanted and wanted not in sendable:
        return [], INSECURE if sips else NOT_FOUND, "no way to send over %s" % wanted
    if not sendable:
        return [], INSECURE if sips else NOT_FOUND, "no transport to send on"
    default = "tls" if sips else next(t for t in ("udp", "tcp", "tls") if t in sendable)
    if port:  # §4.2: a port given means no NAPTR and no SRV
        targets = step.addresses(host, port, wanted or default)
    elif wanted:  # §4.2: a transport given means SRV for it, else the default port
        found = step.srv(SRV_PREFIX[wanted] + host, wanted)
        targets = found if found is not None else step.addresses(
            host, DEFAULT_PORTS.get(wanted, 5060), wanted)
    else:
        outcome = _by_naptr(step, host, sips, sendable, default)
        if not isinstance(outcome, list):
            return outcome  # still asking, or a definitive answer about the name
        targets = outcome
    if step.missing:
        return None
    return _first_targets(targets, step.failures)


def _by_naptr(step: "_Pass", host: str, sips: bool, sendable, default: str):
    """§4.1 without a transport or port: NAPTR, else SRV for each transport we send on, else
    the address records at the default port. A list of targets, or what `plan` returns."""
    naptr = step.get(host, "NAPTR")
    if naptr is None:
        return None
    if naptr.error == NXDOMAIN:  # nothing lives under a name that does not exist
        return [], NOT_FOUND, "no such domain"
    if naptr.error is not None:  # the name servers did not answer: neither will they next
        return [], FAILED, step.failures[0]
    targets: list = []
    for record in _usable_naptr(naptr.records, sips, sendable):
        transport = NAPTR_SERVICES[record.service.lower()][0]
        targets.extend(step.srv(record.replacement.lower().rstrip("."), transport) or ())
    if not targets:
        for transport in SRV_ORDER:
            if transport in sendable:
                targets.extend(step.srv(SRV_PREFIX[transport] + host, transport) or ())
    if not targets and not step.missing:
        targets = step.addresses(host, DEFAULT_PORTS[default], default)
    return targets


def _usable_naptr(records, sips: bool, sendable) -> list:
    """The NAPTR records that lead to SIP over a transport we send on (only secure ones for
    sips:), in order and preference."""
    def usable(record) -> bool:
        if record.flags.lower() != "s":
            return False
        transport, secure = NAPTR_SERVICES.get(record.service.lower(), ("", False))
        return transport in sendable and (secure or not sips)

    return sorted(filter(usable, records), key=lambda r: (r.order, r.preference))


def _first_targets(targets, failures):
    """At most MAX_TARGETS distinct targets in order, or why there are none."""
    unique: list = []
    for target in targets:
        if target not in unique:
            unique.append(target)
            if len(unique) >= MAX_TARGETS:
                break
    if unique:
        return unique, None, ""
    if failures:
        return [], FAILED, failures[0]
    return [], NOT_FOUND, "no SIP server and no address"


def _tls_only(targets, problem, detail):
    """Only the targets over TLS, for a request that must not leave in clear text."""
    kept = [t for t in targets if t.transport in ("tls", "wss")]
    if targets and not kept:
        return [], INSECURE, "no target over TLS"
    return kept, problem, detail


class Cache:
    """DNS answers by (name, type) until their TTL (capped) runs out; bounded in size."""

    def __init__(self, clock, size: int = MAX_CACHE):
        self.clock = clock
        self.size = size
        self._entries: dict = {}

    def get(self, key) -> Optional[Answer]:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, answer = entry
        if self.clock.seconds() >= expires:
            del self._entries[key]
            return None
        return answer

    def put(self, key, answer: Answer) -> None:
        if answer.error is None and answer.records:
            ttl = min(max(answer.ttl, 0.0), MAX_TTL)
        elif answer.error is None or answer.error == NXDOMAIN:
            ttl = min(max(answer.ttl, 0.0), NEGATIVE_TTL)
        else:
            ttl = FAILURE_TTL
        entries = self._entries
        now = self.clock.seconds()
        if key not in entries and len(entries) >= self.size:
            for old in [k for k, (expires, _) in entries.items() if expires <= now]:
                del entries[old]
            while len(entries) >= self.size:
                del entries[next(iter(entries))]  # the oldest
        entries.pop(key, None)
        entries[key] = (now + ttl, answer)

    def __len__(self) -> int:
        return len(self._entries)


class _Job:
    """One resolution waiting for DNS: the answers it has seen and the queries it asked."""

    __slots__ = ("key", "host", "port", "wanted", "sips", "secure", "resolution", "memo",
                 "asked", "timer")

    def __init__(self, key, host, port, wanted, sips, secure):
        self.key = key
        self.host = host
        self.port = port
        self.wanted = wanted
        self.sips = sips
        self.secure = secure
        self.resolution = Resolution(host)
        self.memo: dict = {}
        self.asked: set = set()
        self.timer = None


class Resolver:
    """RFC 3263 for the proxy: `locate(uri, secure)` -> `Resolution`."""

    log = Logger()

    def __init__(self, lookup, clock, static=None, transports=("udp", "tcp", "tls"),
                 families=("A", "AAAA"), timeout: float = 5.0, rng=None,
                 max_pending: int = MAX_PENDING, cache_size: int = MAX_CACHE):
        self.lookup = lookup
        self.clock = clock
        #: name -> (address, port or None): [dns.static]
        self.static = dict(static or {})
        #: the transports we can send on, in our order of preference
        self.sendable = tuple(t for t in ("tls", "tcp", "udp") if t in transports)
        self.families = tuple(families)
        #: a resolution still pending after this long is given up (several queries in a row)
        self.give_up_after = 4 * timeout + 1
        self.rng = rng if rng is not None else random.Random(os.urandom(16))
        self.max_pending = max_pending
        self.cache = Cache(clock, cache_size)
        self._jobs: dict = {}  # key -> _Job
        self._inflight: dict = {}  # (name, rdtype) -> (asked at, [callbacks])

    def locate(self, uri, secure: bool = False) -> Resolution:
        """The targets for a sip:/sips: URI (its maddr, host, port and transport). `secure`:
        the request must leave over TLS even though this hop's URI is sip: (its Request-URI
        is sips:), so only the TLS targets the URI leads to are kept."""
        host = (uri.params.get("maddr") or uri.host or "").lower()
        if host.endswith("."):
            host = host[:-1]
        if host == "localhost":
            host = "127.0.0.1"
        sips = uri.scheme == "sips"
        secure = secure and not sips
        wanted = (uri.params.get("transport") or "").lower()
        port = uri.port
        if is_ip(host):
            return self._literal(host, port, wanted, sips, None, secure)
        static = self.static.get(host)
        if static is not None:
            return self._literal(static[0], port or static[1], wanted, sips, host, secure)
        if not _valid_name(host):
            return Resolution(host, [], NOT_FOUND, "not a domain name")
        key = (host, port, wanted, sips, secure)
        job = self._jobs.get(key)
        if job is not None:
            return job.resolution
        outcome = plan(host, port, wanted, sips, self._cached, self.rng, self.families,
                       self.sendable)
        if outcome is not None:
            return Resolution(host, *(_tls_only(*outcome) if secure else outcome))
        if len(self._jobs) >= self.max_pending:
            self.log.warn("DNS: {count} lookups already pending; refusing {name}",
                          count=len(self._jobs), name=host)
            return Resolution(host, [], FAILED, "too many DNS lookups at once")
        job = self._jobs[key] = _Job(key, host, port, wanted, sips, secure)
        job.timer = self.clock.callLater(self.give_up_after, self._give_up, job)
        self._run(job)
        return job.resolution

    def _literal(self, address, port, wanted, sips, name, secure=False) -> Resolution:
        transport = wanted or ("tls" if sips else "udp")
        if sips and transport == "tcp":
            transport = "tls"
        if (sips or secure) and transport not in ("tls", "wss"):
            return Resolution(name or address, [], INSECURE, "not over TLS: %s" % transport)
        port = port or DEFAULT_PORTS.get(transport, 5060)
        return Resolution(name or address, [Target(transport, address, port, name)])

    # -- the work of one pending resolution

    def _cached(self, name: str, rdtype: str) -> Optional[Answer]:
        return self.cache.get((name, rdtype))

    def _run(self, job: _Job) -> None:
        if job.resolution.done:
            return
        missing: list = []

        def ask(name, rdtype):
            key = (name, rdtype)
            answer = job.memo.get(key)
            if answer is None:
                answer = self.cache.get(key)
            if answer is None:
                missing.append(key)
            return answer

        outcome = plan(job.host, job.port, job.wanted, job.sips, ask, self.rng, self.families,
                       self.sendable)
        if outcome is not None:
            self._finish(job, *(_tls_only(*outcome) if job.secure else outcome))
            return
        for key in missing:
            if key in job.asked:
                continue
            job.asked.add(key)
            self._query(key, lambda answer, key=key: self._answered(job, key, answer))
            if job.resolution.done:
                return

    def _answered(self, job: _Job, key, answer: Answer) -> None:
        job.memo[key] = answer
        self._run(job)

    def _finish(self, job: _Job, targets, problem, detail) -> None:
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]
        if job.timer is not None and job.timer.active():
            job.timer.cancel()
        job.timer = None
        job.memo = {}
        job.resolution.settle(targets, problem, detail)

    def _give_up(self, job: _Job) -> None:
        job.timer = None
        self.log.warn("DNS: no answer for {name} in {seconds:.0f} s", name=job.host,
                      seconds=self.give_up_after)
        self._finish(job, [], FAILED, "DNS did not answer in time")

    # -- queries, one per (name, type) however many resolutions wait for it

    def _query(self, key, callback) -> None:
        now = self.clock.seconds()
        entry = self._inflight.get(key)
        if entry is not None and now - entry[0] < self.give_up_after:
            entry[1].append(callback)
            return
        waiting = [callback]  # a query unanswered for that long is asked afresh
        self._inflight[key] = (now, waiting)
        try:
            self.lookup.query(key[0], key[1],
                              lambda answer: self._delivered(key, answer, waiting))
        except Exception as e:  # a lookup that cannot even start is a failed one
            self._delivered(key, Answer((), FAILURE_TTL, "lookup failed: %s" % e), waiting)

    def _delivered(self, key, answer: Answer, waiting: list) -> None:
        self.cache.put(key, answer)
        entry = self._inflight.get(key)
        if entry is not None and entry[1] is waiting:
            del self._inflight[key]
        for callback in waiting:
            try:
                callback(answer)
            except Exception:
                self.log.failure("DNS answer for {name} {rdtype} not handled", name=key[0],
                                 rdtype=key[1])
