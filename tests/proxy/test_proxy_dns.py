"""Forwarding by DNS (RFC 3263), sans-IO: the proxy with canned DNS answers and a Clock.
Failover to the next target on a transport error, a Timer B timeout or a 503; exactly one
final response for the caller; a domain that does not exist answered at once."""
from __future__ import annotations

import random

from twisted.internet.task import Clock

from reticulum.config import config_from_dict
from reticulum.service import build_core
from reticulum.dns import Answer
from reticulum.dns.rfc3263 import SRV
from reticulum.location import MemoryLocation
from reticulum.sip import Request
from reticulum.addresses import Flow
from tests.test_dns import Zone, a
from tests.proxy.test_proxy import CALLER, RecordingTransports, _Accounts, answer, request

ZONE = {
    ("b.test", "NAPTR"): Answer((), 300),
    ("_sip._udp.b.test", "SRV"): Answer((SRV(10, 0, 5060, "one.b.test"),
                                          SRV(20, 0, 5062, "two.b.test")), 300),
    ("one.b.test", "A"): a("192.0.2.1"),
    ("two.b.test", "A"): a("192.0.2.2"),
    ("_sip._tcp.c.test", "SRV"): Answer((SRV(10, 0, 5060, "one.c.test"),
                                          SRV(20, 0, 5060, "two.c.test")), 300),
    ("one.c.test", "A"): a("192.0.2.3"),
    ("two.c.test", "A"): a("192.0.2.4"),
}


def make_core(tmp_path, zone, auth=False, **config):
    data = {
        "domains": ["reticulum.local"],
        "state_dir": str(tmp_path),
        "listen": {"udp": ["127.0.0.1:5060"], "tcp": ["127.0.0.1:5060"]},
        "timers": {"t1": 0.5, "t2": 4.0, "t4": 5.0, "invite_timeout": 180},
        "auth": {"enabled": auth},
    }
    data.update(config)
    clock = Clock()
    net = RecordingTransports()
    core = build_core(config_from_dict(data, base_dir=str(tmp_path)), clock, net,
                      location=MemoryLocation(), accounts=_Accounts(), lookup=zone)
    core.resolver.rng = random.Random(1)
    core.start()
    return core, clock, net


def sent_to(sent, host):
    return [m for m, f in sent if f.remote[0] == host]


def caller_got(sent):
    return [m.status for m, f in sent if f == CALLER and not isinstance(m, Request)]


def invite(ruri="sip:bob@b.test", **kwargs):
    return request(ruri=ruri, to="<%s>" % ruri, **kwargs)


def test_call_to_a_foreign_domain_goes_to_its_srv_target(tmp_path):
    core, clock, net = make_core(tmp_path, Zone(ZONE))
    core.message_received(invite(), CALLER)
    sent = net.take()
    (out,) = sent_to(sent, "192.0.2.1")
    assert out.method == "INVITE" and str(out.uri) == "sip:bob@b.test"
    assert out.get_all("Record-Route")
    core.message_received(answer(out, 200, "OK"), Flow("udp", ("127.0.0.1", 5060), ("192.0.2.1", 5060)))
    assert caller_got(net.take()) == [200]


def test_a_503_sends_the_request_to_the_next_target_as_a_new_branch(tmp_path):
    core, clock, net = make_core(tmp_path, Zone(ZONE))
    core.message_received(invite(), CALLER)
    (first,) = sent_to(net.take(), "192.0.2.1")
    one = Flow("udp", ("127.0.0.1", 5060), ("192.0.2.1", 5060))
    core.message_received(answer(first, 503, "Service Unavailable"), one)
    sent = net.take()
    assert [m.method for m in sent_to(sent, "192.0.2.1")] == ["ACK"]
    (second,) = sent_to(sent, "192.0.2.2")
    assert second.via.branch != first.via.branch
    assert caller_got(sent) == []  # the caller hears nothing of the failed target
    two = Flow("udp", ("127.0.0.1", 5060), ("192.0.2.2", 5062))
    core.message_received(answer(second, 486, "Busy Here"), two)
    assert caller_got(net.take()) == [486]


def test_a_timer_b_timeout_fails_over(tmp_path):
    core, clock, net = make_core(tmp_path, Zone(ZONE))
    core.message_received(invite(), CALLER)
    net.take()
    for _ in range(70):  # Timer B: 64*T1 = 32 s of retransmissions to a silent target
        clock.advance(0.5)
    sent = net.take()
    (second,) = [m for m in sent_to(sent, "192.0.2.2") if m.method == "INVITE"][:1]
    assert caller_got(sent) == []
    core.message_received(answer(second, 200, "OK"),
                       Flow("udp", ("127.0.0.1", 5060), ("192.0.2.2", 5062)))
    assert caller_got(net.take()) == [200]


def test_transport_errors_on_every_target_give_exactly_one_final_response(tmp_path):
    core, clock, net = make_core(tmp_path, Zone(ZONE))
    core.message_received(invite("sip:bob@c.test;transport=tcp"), CALLER)
    (first,) = sent_to(net.take(), "192.0.2.3")
    core.flow_failed(Flow("tcp", ("127.0.0.1", 5060), ("192.0.2.3", 5060), 99))
    sent = net.take()
    (second,) = sent_to(sent, "192.0.2.4")
    assert caller_got(sent) == []
    core.flow_failed(Flow("tcp", ("127.0.0.1", 5060), ("192.0.2.4", 5060), 99))
    clock.advance(1)
    finals = [m for m, f in net.take() if f == CALLER and m.status >= 200]
    assert finals and {(m.status, m.to.tag) for m in finals} == {(500, finals[0].to.tag)}
    core.message_received(request("ACK", ruri="sip:bob@c.test;transport=tcp",
                               to=finals[0].get("To")), CALLER)
    clock.advance(60)
    assert [m for m, f in net.take() if f == CALLER] == []  # one final answer, retransmitted
    #                                                     until ACKed: nothing else


def test_a_domain_that_does_not_exist_gets_one_quick_404(tmp_path):
    core, clock, net = make_core(tmp_path, Zone(ZONE))
    core.message_received(invite("sip:bob@nowhere.test"), CALLER)
    sent = net.take()
    finals = [m for m, f in sent if f == CALLER and m.status >= 200]
    assert [m.status for m in finals] == [404]
    assert "nowhere.test" in finals[0].get("Warning")


def test_dns_that_does_not_answer_gives_504(tmp_path):
    zone = Zone({("b.test", "NAPTR"): Answer((), 0, "timeout")})
    core, clock, net = make_core(tmp_path, zone)
    core.message_received(invite(), CALLER)
    assert caller_got(net.take()) == [100, 504]


def test_forwarding_waits_for_dns_then_goes(tmp_path):
    zone = Zone(ZONE, hold=True)
    core, clock, net = make_core(tmp_path, zone)
    core.message_received(invite(call_id="c1"), CALLER)
    core.message_received(invite(call_id="c2", branch="z9hG4bKc2"), CALLER)
    assert caller_got(net.take()) == [100, 100]
    zone.hold = False
    zone.release()
    sent = net.take()
    assert sorted(m.call_id for m in sent_to(sent, "192.0.2.1")) == ["c1", "c2"]
    assert zone.asked.count(("b.test", "NAPTR")) == 1  # one query for both calls


def test_cancel_while_waiting_for_dns(tmp_path):
    zone = Zone(ZONE, hold=True)
    core, clock, net = make_core(tmp_path, zone)
    core.message_received(invite(), CALLER)
    core.message_received(request("CANCEL", ruri="sip:bob@b.test", to="<sip:bob@b.test>"), CALLER)
    assert sorted(caller_got(net.take())) == [100, 200, 487]
    zone.hold = False
    zone.release()
    assert net.take() == []


def test_nobody_triggers_dns_without_credentials(tmp_path):
    zone = Zone(ZONE)
    core, clock, net = make_core(tmp_path, zone, auth=True)
    # a stranger relaying through us, and a local From without credentials
    core.message_received(invite(), CALLER)
    core.message_received(invite(call_id="c2", branch="z9hG4bKc2",
                              from_="<sip:bob@reticulum.local>;tag=x"), CALLER)
    assert caller_got(net.take()) == [403, 407]  # answered once, statelessly: no 100 first
    assert zone.asked == []


def test_outbound_proxy_takes_every_foreign_request(tmp_path):
    zone = Zone(dict(ZONE))
    zone.records[("proxy.test", "A")] = a("192.0.2.99")
    core, clock, net = make_core(tmp_path, zone,
                                 proxy={"outbound_proxy": "sip:proxy.test:5070;transport=tcp"})
    core.message_received(invite(), CALLER)
    (out,) = sent_to(net.take(), "192.0.2.99")
    assert str(out.uri) == "sip:bob@b.test" and out.via.transport == "TCP"
    assert ("b.test", "NAPTR") not in zone.asked


def test_public_name_in_via_and_record_route(tmp_path):
    core, clock, net = make_core(tmp_path, Zone(ZONE), server={"public_name": "sip.example.org"})
    core.message_received(invite(), CALLER)
    (out,) = sent_to(net.take(), "192.0.2.1")
    assert out.via.host == "sip.example.org" and out.via.port == 5060
    assert out.record_routes[0].uri.host == "sip.example.org"
    assert core.addresses.is_local_address("sip.example.org", 5060)


def test_a_contact_named_by_an_unknown_host_is_reached_over_its_registration_flow(tmp_path):
    from reticulum.location import Binding
    from tests.proxy.test_proxy import CALLEE

    zone = Zone(ZONE, hold=True)
    core, clock, net = make_core(tmp_path, zone)
    core.location.put(Binding(aor="sip:bob@reticulum.local", contact="sip:bob@phone.test:5070",
                              expires_at=clock.seconds() + 3600, q=1.0, flow=CALLEE,
                              registered_at=clock.seconds(), flow_bound=False))
    core.message_received(request(), CALLER)
    assert caller_got(net.take()) == [100]  # waiting for DNS
    zone.hold = False
    zone.release()
    (out,) = [m for m, f in net.take() if f == CALLEE]
    assert out.method == "INVITE" and str(out.uri) == "sip:bob@phone.test:5070"
