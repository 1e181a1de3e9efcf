"""DNS queries through dnspython, off the reactor thread.

`ThreadedLookup.query(name, rdtype, callback)` runs one blocking dnspython query in a small
thread pool of its own (never the reactor's default pool, which others share) and calls
`callback(Answer)` back on the reactor thread. It never raises: every failure becomes an
`Answer` with an error. The service starts and stops the pool.
"""
from __future__ import annotations

from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from reticulum.dns.rfc3263 import FAILURE_TTL, NAPTR, NEGATIVE_TTL, NXDOMAIN, SRV, Answer

#: queries at once; more wait in the pool's queue (the resolver caps pending resolutions)
THREADS = 4

log = Logger(namespace="reticulum.dns")


def make_resolver(nameservers=(), timeout: float = 5.0):
    """A dnspython resolver: the given (host, port) name servers, else the system's
    resolv.conf. Never searches: SIP domains are absolute."""
    import dns.exception
    import dns.resolver

    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        try:
            from dns.nameserver import Do53Nameserver

            resolver.nameservers = [Do53Nameserver(host, port) for host, port in nameservers]
        except ImportError:  # dnspython < 2.4
            resolver.nameservers = [host for host, _ in nameservers]
            resolver.nameserver_ports = {host: port for host, port in nameservers}
    else:
        try:
            resolver = dns.resolver.Resolver(configure=True)
        except dns.exception.DNSException as e:
            log.warn("DNS: no usable resolv.conf ({error}); only IP addresses and [dns.static]"
                     " names can be reached", error=e)
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = []
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.search = []
    resolver.use_search_by_default = False
    return resolver


def query(resolver, name: str, rdtype: str) -> Answer:
    """One blocking query, its outcome as an Answer (this runs in a pool thread)."""
    import dns.exception
    import dns.name
    import dns.resolver

    try:
        qname = dns.name.from_text(name)  # absolute
        answer = resolver.resolve(qname, rdtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return Answer((), NEGATIVE_TTL, NXDOMAIN)
    except (dns.resolver.LifetimeTimeout, dns.exception.Timeout):
        return Answer((), FAILURE_TTL, "timeout")
    except dns.resolver.NoNameservers:
        return Answer((), FAILURE_TTL, "no name server answered")
    except dns.exception.DNSException as e:
        return Answer((), FAILURE_TTL, "%s" % (e.__class__.__name__,))
    except Exception as e:  # never let a thread's surprise lose the caller's answer
        return Answer((), FAILURE_TTL, "lookup failed: %s" % (e,))
    rrset = answer.rrset
    if rrset is None:
        return Answer((), _negative_ttl(answer), None)
    records = []
    for rdata in rrset:
        if rdtype in ("A", "AAAA"):
            records.append(rdata.address)
        elif rdtype == "SRV":
            records.append(SRV(rdata.priority, rdata.weight, rdata.port,
                               rdata.target.to_text(omit_final_dot=True)))
        elif rdtype == "NAPTR":
            records.append(NAPTR(rdata.order, rdata.preference, _text(rdata.flags),
                                 _text(rdata.service), _text(rdata.regexp),
                                 rdata.replacement.to_text(omit_final_dot=True)))
    return Answer(tuple(records), float(rrset.ttl), None)


def _text(value) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _negative_ttl(answer) -> float:
    """RFC 2308: a "no such records" answer lasts as long as its SOA's minimum says."""
    try:
        for rrset in answer.response.authority:
            for rdata in rrset:
                minimum = getattr(rdata, "minimum", None)
                if minimum is not None:
                    return float(min(rrset.ttl, minimum))
    except Exception:
        pass
    return NEGATIVE_TTL


class ThreadedLookup:
    """The resolver's `lookup`: dnspython in a bounded thread pool owned by the service."""

    def __init__(self, reactor, nameservers=(), timeout: float = 5.0, threads: int = THREADS):
        self.reactor = reactor
        self.resolver = make_resolver(nameservers, timeout)
        self.pool = ThreadPool(minthreads=0, maxthreads=threads, name="reticulum-dns")

    def start(self) -> None:
        self.pool.start()

    def stop(self) -> None:
        self.pool.stop()

    def query(self, name: str, rdtype: str, callback) -> None:
        reactor = self.reactor

        def done(ok, result):  # in the pool's thread
            if not ok:
                result = Answer((), FAILURE_TTL, "lookup failed")
            reactor.callFromThread(callback, result)

        self.pool.callInThreadWithCallback(done, query, self.resolver, name, rdtype)
