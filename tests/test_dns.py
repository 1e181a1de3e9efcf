"""RFC 3263 target selection against canned DNS answers, time from twisted's Clock."""
from __future__ import annotations

import random

from twisted.internet.task import Clock

from reticulum.addresses import Target
from reticulum.dns import FAILED, INSECURE, NOT_FOUND, Answer, Resolver
from reticulum.dns.rfc3263 import FAILURE_TTL, NAPTR, NXDOMAIN, SRV, order_srv
from reticulum.sip import parse_uri


class Zone:
    """A lookup fed canned answers: answers at once, or holds them until `release()`."""

    def __init__(self, records=None, hold=False):
        self.records = dict(records or {})
        self.hold = hold
        self.asked: list = []
        self.held: list = []

    def query(self, name, rdtype, callback):
        self.asked.append((name, rdtype))
        if self.hold:
            self.held.append((name, rdtype, callback))
        else:
            callback(self.answer(name, rdtype))

    def answer(self, name, rdtype):
        if (name, rdtype) in self.records:
            return self.records[(name, rdtype)]
        if any(n == name or n.endswith("." + name) for n, _ in self.records):
            return Answer((), 60)  # the name exists, not this type
        return Answer((), 60, NXDOMAIN)

    def release(self):
        while self.held:
            name, rdtype, callback = self.held.pop(0)
            callback(self.answer(name, rdtype))


def a(*addresses, ttl=300):
    return Answer(tuple(addresses), ttl)


def srv(*records, ttl=300):
    return Answer(tuple(SRV(*r) for r in records), ttl)


def resolver(zone, clock=None, seed=1, **kwargs):
    return Resolver(zone, clock or Clock(), rng=random.Random(seed), families=("A",), **kwargs)


def targets(res, uri, secure=False):
    resolution = res.locate(parse_uri(uri), secure)
    assert resolution.done
    return [(t.transport, t.host, t.port) for t in resolution.targets]


FEDERATED = {
    ("b.test", "NAPTR"): Answer((
        NAPTR(20, 10, "s", "SIP+D2U", "", "_sip._udp.b.test"),
        NAPTR(10, 10, "S", "SIP+D2T", "", "_sip._tcp.b.test"),
        NAPTR(30, 10, "s", "SIP+D2S", "", "_sip._sctp.b.test"),  # no SCTP here: skipped
    ), 300),
    ("_sip._tcp.b.test", "SRV"): srv((10, 0, 5070, "one.b.test"), (20, 0, 5071, "two.b.test")),
    ("_sip._udp.b.test", "SRV"): srv((10, 0, 5072, "one.b.test")),
    ("one.b.test", "A"): a("192.0.2.1"),
    ("two.b.test", "A"): a("192.0.2.2"),
}


def test_naptr_then_srv_then_a_in_order():
    zone = Zone(FEDERATED)
    got = targets(resolver(zone), "sip:bob@b.test")
    assert got == [("tcp", "192.0.2.1", 5070), ("tcp", "192.0.2.2", 5071),
                   ("udp", "192.0.2.1", 5072)]
    assert ("_sip._sctp.b.test", "SRV") not in zone.asked


def test_targets_name_the_sip_domain_for_tls_checks():
    res = resolver(Zone(FEDERATED))
    resolution = res.locate(parse_uri("sip:bob@B.Test"))
    assert {t.name for t in resolution.targets} == {"b.test"}


def test_without_naptr_srv_is_tried_for_each_transport():
    zone = Zone({
        ("c.test", "A"): a("192.0.2.9"),
        ("_sip._udp.c.test", "SRV"): srv((10, 0, 5060, "udp.c.test")),
        ("_sips._tcp.c.test", "SRV"): srv((10, 0, 5061, "tls.c.test")),
        ("udp.c.test", "A"): a("192.0.2.3"),
        ("tls.c.test", "A"): a("192.0.2.4"),
    })
    got = targets(resolver(zone), "sip:bob@c.test")
    assert got == [("tls", "192.0.2.4", 5061), ("udp", "192.0.2.3", 5060)]


def test_without_srv_a_records_on_the_default_port():
    zone = Zone({("d.test", "A"): a("192.0.2.5", "192.0.2.6")})
    assert targets(resolver(zone), "sip:bob@d.test") == [("udp", "192.0.2.5", 5060),
                                                        ("udp", "192.0.2.6", 5060)]
    assert targets(resolver(zone), "sips:bob@d.test") == [("tls", "192.0.2.5", 5061),
                                                         ("tls", "192.0.2.6", 5061)]


def test_explicit_port_asks_only_for_addresses():
    zone = Zone(FEDERATED)
    assert targets(resolver(zone), "sip:bob@one.b.test:5099;transport=tcp") == [
        ("tcp", "192.0.2.1", 5099)]
    assert zone.asked == [("one.b.test", "A")]


def test_explicit_transport_asks_for_that_srv_only():
    zone = Zone(FEDERATED)
    assert targets(resolver(zone), "sip:bob@b.test;transport=udp") == [("udp", "192.0.2.1", 5072)]
    assert ("b.test", "NAPTR") not in zone.asked


def test_sips_leaves_only_over_tls():
    zone = Zone(FEDERATED)
    resolution = resolver(zone).locate(parse_uri("sips:bob@b.test"))
    # only SIP+D2T/D2U published: nothing secure, and no A record for b.test itself
    assert resolution.targets == [] and resolution.problem == NOT_FOUND
    assert resolver(zone).locate(parse_uri("sips:bob@192.0.2.1;transport=udp")).problem == INSECURE
    # a sip: hop of a request that must stay encrypted keeps only what is TLS anyway
    assert resolver(zone).locate(parse_uri("sip:bob@b.test"), True).problem == INSECURE
    assert resolver(zone).locate(parse_uri("sip:bob@192.0.2.1:5070"), True).problem == INSECURE
    assert targets(resolver(zone), "sip:bob@192.0.2.1:5070;transport=tls", secure=True) == [
        ("tls", "192.0.2.1", 5070)]


def test_transports_we_cannot_send_on_are_skipped():
    res = resolver(Zone(FEDERATED), transports=("udp",))
    assert targets(res, "sip:bob@b.test") == [("udp", "192.0.2.1", 5072)]


def test_priority_always_wins():
    records = [SRV(20, 100, 1, "low"), SRV(10, 1, 2, "high"), SRV(30, 0, 3, "last")]
    for seed in range(50):
        order = [r.target for r in order_srv(records, random.Random(seed))]
        assert order == ["high", "low", "last"]


def test_weights_share_the_first_place():
    records = [SRV(10, 10, 1, "light"), SRV(10, 30, 2, "heavy"), SRV(10, 0, 3, "zero")]
    rng = random.Random(7)
    first = {"light": 0, "heavy": 0, "zero": 0}
    runs = 8000
    for _ in range(runs):
        first[order_srv(records, rng)[0].target] += 1
    # the draw is uniform over 0..40: 0 picks the zero weight, 1-10 the light, 11-40 the heavy
    assert abs(first["heavy"] / runs - 30 / 41) < 0.03
    assert abs(first["light"] / runs - 10 / 41) < 0.03
    assert 0 < first["zero"] < runs * 0.05


def test_failover_order_is_every_target_once():
    zone = Zone({
        ("e.test", "NAPTR"): Answer((), 60),
        ("_sip._udp.e.test", "SRV"): srv((10, 5, 5060, "x.e.test"), (10, 5, 5060, "y.e.test"),
                                         (20, 0, 5060, "z.e.test")),
        ("x.e.test", "A"): a("192.0.2.10"), ("y.e.test", "A"): a("192.0.2.11"),
        ("z.e.test", "A"): a("192.0.2.12", "192.0.2.10"),
    })
    seen = set()
    for seed in range(40):
        got = [t[1] for t in targets(resolver(zone, seed=seed), "sip:e.test")]
        assert sorted(got[:2]) == ["192.0.2.10", "192.0.2.11"]
        assert got[2:] == ["192.0.2.12"]  # an address already listed is not tried twice
        seen.add(got[0])
    assert seen == {"192.0.2.10", "192.0.2.11"}


def test_nonexistent_domain_is_not_found_at_once():
    zone = Zone(FEDERATED)
    resolution = resolver(zone).locate(parse_uri("sip:bob@nowhere.test"))
    assert resolution.done and resolution.problem == NOT_FOUND and not resolution.targets
    assert zone.asked == [("nowhere.test", "NAPTR")]  # nothing lives under an NXDOMAIN


def test_pending_lookups_share_one_query_per_name():
    zone = Zone(FEDERATED, hold=True)
    res = resolver(zone)
    first = res.locate(parse_uri("sip:bob@b.test"))
    second = res.locate(parse_uri("sip:alice@b.test"))
    assert not first.done and second is first
    heard = []
    first.wait(heard.append)
    for _ in range(5):
        zone.release()
    assert heard == [first] and [t.port for t in first.targets] == [5070, 5071, 5072]
    assert len(zone.asked) == len(set(zone.asked))
    # other URIs of the same domain wait on the same queries, not new ones
    zone.hold = True
    third = res.locate(parse_uri("sip:b.test;transport=udp"))
    assert third.done  # all it needs is cached


def test_answers_expire_with_their_ttl():
    clock = Clock()
    zone = Zone({("f.test", "A"): a("192.0.2.7", ttl=60), ("f.test", "NAPTR"): Answer((), 3600)})
    res = resolver(zone, clock)
    assert targets(res, "sip:f.test:5060")
    assert zone.asked.count(("f.test", "A")) == 1
    clock.advance(59)
    assert targets(res, "sip:f.test:5060")
    assert zone.asked.count(("f.test", "A")) == 1
    clock.advance(2)
    zone.records[("f.test", "A")] = a("192.0.2.8", ttl=60)
    assert targets(res, "sip:f.test:5060") == [("udp", "192.0.2.8", 5060)]
    assert zone.asked.count(("f.test", "A")) == 2


def test_long_ttls_are_capped():
    clock = Clock()
    zone = Zone({("g.test", "A"): a("192.0.2.7", ttl=86400)})
    res = resolver(zone, clock)
    targets(res, "sip:g.test:5060")
    clock.advance(601)
    targets(res, "sip:g.test:5060")
    assert zone.asked.count(("g.test", "A")) == 2


def test_failures_are_cached_briefly():
    clock = Clock()
    zone = Zone({("h.test", "NAPTR"): Answer((), 0, "timeout")})
    res = resolver(zone, clock)
    resolution = res.locate(parse_uri("sip:h.test"))
    assert resolution.problem == FAILED and "timeout" in resolution.detail
    res.locate(parse_uri("sip:h.test"))
    assert zone.asked.count(("h.test", "NAPTR")) == 1
    clock.advance(FAILURE_TTL + 0.1)
    res.locate(parse_uri("sip:h.test"))
    assert zone.asked.count(("h.test", "NAPTR")) == 2


def test_a_lookup_that_never_answers_is_given_up():
    clock = Clock()
    zone = Zone(FEDERATED, hold=True)
    res = resolver(zone, clock, timeout=2)
    resolution = res.locate(parse_uri("sip:bob@b.test"))
    clock.advance(4 * 2 + 1)
    assert resolution.done and resolution.problem == FAILED
    zone.hold = False
    zone.release()  # late answers are cached, and harm nothing
    assert res.locate(parse_uri("sip:bob@b.test")).done


def test_pending_resolutions_are_capped():
    res = resolver(Zone(hold=True), max_pending=2)
    assert not res.locate(parse_uri("sip:one.test")).done
    assert not res.locate(parse_uri("sip:two.test")).done
    third = res.locate(parse_uri("sip:three.test"))
    assert third.done and third.problem == FAILED


def test_static_names_need_no_dns():
    zone = Zone()
    res = resolver(zone, static={"home.lan": ("192.168.1.20", 5080), "nas.lan": ("10.0.0.2", None)})
    assert targets(res, "sip:bob@home.lan") == [("udp", "192.168.1.20", 5080)]
    assert targets(res, "sip:bob@nas.lan;transport=tcp") == [("tcp", "10.0.0.2", 5060)]
    assert zone.asked == []


def test_ip_literals_and_bad_names():
    zone = Zone()
    res = resolver(zone)
    assert res.locate(parse_uri("sip:bob@192.0.2.1:5070;transport=tcp")).targets == [
        Target("tcp", "192.0.2.1", 5070)]
    assert targets(res, "sip:[2001:db8::1]") == [("udp", "2001:db8::1", 5060)]
    assert res.locate(parse_uri("sip:bob@" + "x" * 64 + ".test")).problem == NOT_FOUND
    assert zone.asked == []


def test_addresses_no_one_may_be_sent_to_are_dropped():
    zone = Zone({("i.test", "A"): a("0.0.0.0", "224.0.0.1", "255.255.255.255", "192.0.2.1")})
    assert targets(resolver(zone), "sip:i.test:5060") == [("udp", "192.0.2.1", 5060)]


def test_without_udp_a_plain_sip_uri_falls_back_to_tcp():
    zone = Zone({("d.test", "A"): a("192.0.2.5")})
    res = resolver(zone, transports=("tcp", "tls"))
    assert targets(res, "sip:bob@d.test") == [("tcp", "192.0.2.5", 5060)]


def test_a_query_that_never_returns_is_asked_afresh_later():
    clock = Clock()
    zone = Zone(FEDERATED, hold=True)
    res = resolver(zone, clock, timeout=1)
    res.locate(parse_uri("sip:bob@b.test"))
    zone.held.clear()  # that answer is lost
    clock.advance(10)
    res.locate(parse_uri("sip:bob@b.test"))
    assert zone.asked.count(("b.test", "NAPTR")) == 2
