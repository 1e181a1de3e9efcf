"""The proxy core, driven sans-IO: bytes in through Core.message_received, messages out through a
recording transport table, time through twisted.internet.task.Clock."""
from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from reticulum.config import config_from_dict
from reticulum.service import build_core
from reticulum.location import Binding, MemoryLocation
from reticulum.sip import Request, parse
from reticulum.addresses import Flow, ListeningPoint

PROXY = ("127.0.0.1", 5060)
CALLER = Flow("udp", PROXY, ("127.0.0.1", 6000))
CALLEE = Flow("udp", PROXY, ("127.0.0.1", 7000))
CALLEE2 = Flow("udp", PROXY, ("127.0.0.1", 7001))


class RecordingTransports:
    """The flow table as the core sees it, remembering everything sent."""

    def __init__(self):
        self.listening = [ListeningPoint("udp", "127.0.0.1", 5060),
                          ListeningPoint("tcp", "127.0.0.1", 5060)]
        self.sent: list[tuple[object, Flow]] = []
        self.dead: set = set()

    def send(self, data, flow):
        if flow in self.dead:
            return False
        self.sent.append((parse(data, stream=True), flow))
        return True

    def send_to(self, data, transport, host, port):
        flow = Flow(transport, PROXY, (host, port), 0 if transport == "udp" else 99)
        self.sent.append((parse(data, stream=True), flow))
        return flow

    def alive(self, flow):
        return flow not in self.dead

    def take(self):
        sent, self.sent = self.sent, []
        return sent


class _Accounts:
    def __init__(self, names=("bob",)):
        self.names = set(names)

    def start(self):
        pass

    def stop(self):
        pass

    def exists(self, name):
        return name in self.names

    def set_password(self, name, password):
        self.names.add(name)

    def ha1(self, name, realm, algorithm):
        return None


def make_core(tmp_path, **timers):
    data = {
        "domains": ["reticulum.local"],
        "state_dir": str(tmp_path),
        "listen": {"udp": ["127.0.0.1:5060"], "tcp": ["127.0.0.1:5060"]},
        "timers": dict({"t1": 0.5, "t2": 4.0, "t4": 5.0, "invite_timeout": 30}, **timers),
    }
    config = config_from_dict(data, base_dir=str(tmp_path))
    clock = Clock()
    transports = RecordingTransports()
    core = build_core(config, clock, transports, location=MemoryLocation(), accounts=_Accounts())
    core.start()
    return core, clock, transports


def register(core, clock, user, flow, q=1.0):
    contact = "sip:%s@%s:%d" % (user, flow.remote[0], flow.remote[1])
    core.location.put(Binding(aor="sip:%s@reticulum.local" % user, contact=contact,
                              expires_at=clock.seconds() + 3600, q=q, flow=flow,
                              registered_at=clock.seconds()))


def request(method="INVITE", ruri="sip:bob@reticulum.local", branch="z9hG4bKc1", cseq=1,
            from_="<sip:carol@example.org>;tag=f1", to="<sip:bob@reticulum.local>",
            call_id="call-1", extra="", max_forwards=70, body=""):
    lines = [
        "%s %s SIP/2.0" % (method, ruri),
        "Via: SIP/2.0/UDP 127.0.0.1:6000;branch=%s;rport" % branch,
        "From: %s" % from_,
        "To: %s" % to,
        "Call-ID: %s" % call_id,
        "CSeq: %d %s" % (cseq, method),
        "Max-Forwards: %d" % max_forwards,
        "Contact: <sip:carol@127.0.0.1:6000>",
    ]
    if extra:
        lines.append(extra)
    lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def answer(forwarded, status, reason, tag="t1", extra=""):
    """A callee's response to a request the proxy forwarded to it."""
    lines = ["SIP/2.0 %d %s" % (status, reason)]
    for via in forwarded.get_all("Via"):
        lines.append("Via: %s" % via)
    for rr in forwarded.get_all("Record-Route"):
        lines.append("Record-Route: %s" % rr)
    to = forwarded.get("To")
    if status > 100 and ";tag=" not in to:
        to += ";tag=%s" % tag
    lines += ["From: %s" % forwarded.get("From"), "To: %s" % to,
              "Call-ID: %s" % forwarded.call_id, "CSeq: %s" % forwarded.get("CSeq")]
    if status < 300:
        lines.append("Contact: <sip:bob@127.0.0.1:7000>")
    if extra:
        lines.append(extra)
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def to_flow(sent, flow):
    return [m for m, f in sent if f.remote == flow.remote]


def statuses(messages):
    return [m.status for m in messages if not isinstance(m, Request)]


def test_options_to_the_server_itself(tmp_path):
    core, clock, net = make_core(tmp_path)
    core.message_received(request("OPTIONS", "sip:127.0.0.1:5060", to="<sip:127.0.0.1>"), CALLER)
    (reply, flow), = net.take()
    assert reply.status == 200 and flow == CALLER
    assert "INVITE" in reply.get("Allow")
    assert reply.via.params.get("rport") == "6000"


def test_basic_call_is_forwarded_and_answered(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    core.message_received(request(body="v=0\r\n"), CALLER)
    sent = net.take()
    assert statuses(to_flow(sent, CALLER)) == [100]
    (invite,) = to_flow(sent, CALLEE)
    assert invite.method == "INVITE"
    assert str(invite.uri) == "sip:bob@127.0.0.1:7000"
    assert invite.max_forwards == 69
    assert len(invite.vias) == 2 and invite.via.host == "127.0.0.1"
    assert invite.via.branch.startswith("z9hG4bK")
    (record_route,) = invite.get_all("Record-Route")
    # the callee's requests may go back to the caller's Contact only
    assert record_route == "<sip:127.0.0.1:5060;lr;rtok=%s>" % core.proxy.tokens.token(
        "call-1", "127.0.0.1:6000")
    assert invite.body == b"v=0\r\n"

    core.message_received(answer(invite, 180, "Ringing"), CALLEE)
    core.message_received(answer(invite, 200, "OK"), CALLEE)
    up = to_flow(net.take(), CALLER)
    assert statuses(up) == [180, 200]
    assert all(len(m.vias) == 1 for m in up)
    assert core.dialogs.active()
    # the caller's route set comes from the 200: its token leads on to the callee's Contact
    (caller_route,) = up[1].get_all("Record-Route")
    assert caller_route == "<sip:127.0.0.1:5060;lr;rtok=%s>" % core.proxy.tokens.token(
        "call-1", "127.0.0.1:7000")

    # The ACK for the 2xx is end to end: forwarded along the route set, never answered.
    ack = request("ACK", "sip:bob@127.0.0.1:7000", branch="z9hG4bKack1",
                  to="<sip:bob@reticulum.local>;tag=t1", extra="Route: " + caller_route)
    core.message_received(ack, CALLER)
    sent = net.take()
    assert [m.method for m in to_flow(sent, CALLEE)] == ["ACK"]
    assert not to_flow(sent, CALLER)

    bye = request("BYE", "sip:bob@127.0.0.1:7000", branch="z9hG4bKbye1", cseq=2,
                  to="<sip:bob@reticulum.local>;tag=t1", extra="Route: " + record_route)
    core.message_received(bye, CALLER)
    (fwd_bye,) = to_flow(net.take(), CALLEE)
    assert fwd_bye.method == "BYE" and not fwd_bye.get_all("Route")
    core.message_received(answer(fwd_bye, 200, "OK"), CALLEE)
    assert statuses(to_flow(net.take(), CALLER)) == [200]
    assert not core.dialogs.active()

    clock.advance(64)
    clock.advance(64)
    assert len(core.transactions) == 0
    assert not core.proxy.contexts


def test_busy_is_acked_hop_by_hop(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    core.message_received(request(), CALLER)
    (invite,) = to_flow(net.take(), CALLEE)
    core.message_received(answer(invite, 486, "Busy Here"), CALLEE)
    sent = net.take()
    (ack,) = to_flow(sent, CALLEE)
    assert ack.method == "ACK" and ack.via.branch == invite.via.branch
    assert statuses(to_flow(sent, CALLER)) == [486]
    # the caller's ACK is absorbed by our server transaction
    core.message_received(request("ACK", branch="z9hG4bKc1", to="<sip:bob@reticulum.local>;tag=t1"),
                       CALLER)
    assert net.take() == []


def test_cancel_during_ringing(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    core.message_received(request(), CALLER)
    (invite,) = to_flow(net.take(), CALLEE)
    core.message_received(answer(invite, 180, "Ringing"), CALLEE)
    net.take()
    core.message_received(request("CANCEL", branch="z9hG4bKc1"), CALLER)
    sent = net.take()
    assert statuses(to_flow(sent, CALLER)) == [200]
    (cancel,) = to_flow(sent, CALLEE)
    assert cancel.method == "CANCEL" and cancel.via.branch == invite.via.branch
    core.message_received(answer(cancel, 200, "OK"), CALLEE)
    core.message_received(answer(invite, 487, "Request Terminated"), CALLEE)
    assert statuses(to_flow(net.take(), CALLER)) == [487]


def test_cancel_without_transaction_gets_481(tmp_path):
    core, clock, net = make_core(tmp_path)
    core.message_received(request("CANCEL", branch="z9hG4bKnothing"), CALLER)
    assert statuses(to_flow(net.take(), CALLER)) == [481]


def test_timer_c_gives_exactly_one_408(tmp_path):
    core, clock, net = make_core(tmp_path, invite_timeout=20)
    register(core, clock, "bob", CALLEE)
    core.message_received(request(), CALLER)
    (invite,) = to_flow(net.take(), CALLEE)
    core.message_received(answer(invite, 180, "Ringing"), CALLEE)
    net.take()
    clock.advance(20)
    sent = net.take()
    assert statuses(to_flow(sent, CALLER)) == [408]
    (cancel,) = to_flow(sent, CALLEE)
    assert cancel.method == "CANCEL"
    core.message_received(answer(invite, 487, "Request Terminated"), CALLEE)
    for _ in range(10):
        clock.advance(4)
    final = [s for s in statuses(to_flow(net.take(), CALLER)) if s >= 200]
    assert all(s == 408 for s in final)  # retransmissions of the one 408 only


def test_forking_cancels_the_losing_branch(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    register(core, clock, "bob", CALLEE2)
    core.message_received(request(), CALLER)
    sent = net.take()
    (first,) = to_flow(sent, CALLEE)
    (second,) = to_flow(sent, CALLEE2)
    core.message_received(answer(second, 180, "Ringing", tag="b2"), CALLEE2)
    core.message_received(answer(first, 200, "OK"), CALLEE)
    sent = net.take()
    assert 200 in statuses(to_flow(sent, CALLER))
    assert [m.method for m in to_flow(sent, CALLEE2)] == ["CANCEL"]


def test_a_cancelled_branch_that_never_answers_outlives_the_call_quietly(tmp_path):
    """The 2xx transaction (Timer L) ends before the cancelled branch gives up (Timer B):
    the context must still take that branch's late 408, and everything is freed after."""
    core, clock, net = make_core(tmp_path, invite_timeout=180)
    register(core, clock, "bob", CALLEE)
    register(core, clock, "bob", CALLEE2)
    core.message_received(request(), CALLER)
    sent = net.take()
    (first,) = to_flow(sent, CALLEE)
    (second,) = to_flow(sent, CALLEE2)
    core.message_received(answer(second, 180, "Ringing", tag="b2"), CALLEE2)
    core.message_received(answer(first, 200, "OK"), CALLEE)
    (cancel,) = [m for m in to_flow(net.take(), CALLEE2) if isinstance(m, Request)]
    core.message_received(answer(cancel, 200, "OK"), CALLEE2)  # ... and never a 487
    for _ in range(60):
        clock.advance(1)
    final = [s for s in statuses(to_flow(net.take(), CALLER)) if s >= 200]
    assert final == [] or set(final) == {200}  # no second final answer upstream
    assert len(core.transactions) == 0 and not core.proxy.contexts


def test_sequential_q_groups(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE, q=1.0)
    register(core, clock, "bob", CALLEE2, q=0.5)
    core.message_received(request(), CALLER)
    sent = net.take()
    assert to_flow(sent, CALLEE) and not to_flow(sent, CALLEE2)
    (first,) = to_flow(sent, CALLEE)
    core.message_received(answer(first, 480, "Temporarily Unavailable"), CALLEE)
    sent = net.take()
    assert [m.method for m in to_flow(sent, CALLEE2)] == ["INVITE"]
    assert not statuses(to_flow(sent, CALLER))


@pytest.mark.parametrize("kwargs, status", [
    (dict(max_forwards=0), 483),
    (dict(ruri="mailto:bob@reticulum.local"), 416),
    (dict(extra="Proxy-Require: foo"), 420),
    (dict(ruri="sip:nobody@reticulum.local"), 404),
    (dict(ruri="sip:bob@reticulum.local"), 480),
    (dict(ruri="sip:dave@example.com"), 403),
])
def test_requests_refused(tmp_path, kwargs, status):
    core, clock, net = make_core(tmp_path)
    core.message_received(request("MESSAGE", **kwargs), CALLER)
    assert statuses(to_flow(net.take(), CALLER)) == [status]


def test_loop_is_detected(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", Flow("udp", PROXY, PROXY))  # bob's contact is the proxy itself
    core.message_received(request("MESSAGE", ruri="sip:bob@127.0.0.1:5060"), CALLER)
    (looped,) = to_flow(net.take(), Flow("udp", PROXY, PROXY))
    core.message_received(looped.to_bytes(), Flow("udp", PROXY, PROXY))
    sent = net.take()
    assert 482 in statuses([m for m, _ in sent])


def test_malformed_request_gets_400_with_reason(tmp_path):
    core, clock, net = make_core(tmp_path)
    core.message_received(request("INVITE", extra="CSeq: 2 INVITE"), CALLER)
    (reply, _), = net.take()
    assert reply.status == 400 and reply.reason


def test_unknown_method_is_proxied(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    core.message_received(request("FOOBAR"), CALLER)
    (fwd,) = to_flow(net.take(), CALLEE)
    assert fwd.method == "FOOBAR"
    core.message_received(answer(fwd, 200, "OK"), CALLEE)
    assert statuses(to_flow(net.take(), CALLER)) == [200]


def test_no_transaction_leak_after_a_burst(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    for i in range(200):
        core.message_received(request("MESSAGE", branch="z9hG4bKm%d" % i, call_id="m%d" % i),
                           CALLER)
        (fwd,) = to_flow(net.take(), CALLEE)
        core.message_received(answer(fwd, 200, "OK"), CALLEE)
        net.take()
    for _ in range(10):
        clock.advance(10)
    assert len(core.transactions) == 0
    assert not core.proxy.contexts


def test_double_record_route_when_transports_differ(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    caller = Flow("tcp", PROXY, ("127.0.0.1", 6001), 5)
    core.message_received(request().replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"), caller)
    (invite,) = to_flow(net.take(), CALLEE)
    token = core.proxy.tokens.token("call-1", "127.0.0.1:6000")
    assert invite.get_all("Record-Route") == [
        "<sip:127.0.0.1:5060;lr;rtok=%s>" % token,
        "<sip:127.0.0.1:5060;transport=tcp;lr;rtok=%s>" % token]
    assert invite.via.transport == "UDP"
    # the callee's in-dialog request with both of our routes reaches the caller's contact
    bye = ("BYE sip:carol@127.0.0.1:6000 SIP/2.0\r\n"
           "Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKb2\r\n"
           "Route: %s\r\n" % ", ".join(invite.get_all("Record-Route")) +
           "From: <sip:bob@reticulum.local>;tag=t1\r\nTo: <sip:carol@example.org>;tag=f1\r\n"
           "Call-ID: call-1\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    core.message_received(bye.encode(), CALLEE)
    sent = net.take()
    (fwd,) = [m for m, f in sent if isinstance(m, Request)]
    assert fwd.method == "BYE" and not fwd.get_all("Route")


def test_strict_router_upstream(tmp_path):
    """§16.4: a strict router put our Record-Route URI in the Request-URI."""
    core, clock, net = make_core(tmp_path)
    ours = "sip:127.0.0.1:5060;lr;rtok=%s" % core.proxy.tokens.token("call-1", "127.0.0.1:7000")
    data = request("BYE", ours, to="<sip:bob@reticulum.local>;tag=t1",
                   extra="Route: <sip:bob@127.0.0.1:7000>")
    core.message_received(data, CALLER)
    (fwd,) = to_flow(net.take(), CALLEE)
    assert fwd.method == "BYE" and str(fwd.uri) == "sip:bob@127.0.0.1:7000"
    assert not fwd.get_all("Route")


def test_challenges_of_all_branches_are_aggregated(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    register(core, clock, "bob", CALLEE2)
    core.message_received(request(), CALLER)
    sent = net.take()
    (first,), (second,) = to_flow(sent, CALLEE), to_flow(sent, CALLEE2)
    core.message_received(answer(first, 407, "Proxy Authentication Required", tag="a",
                              extra='Proxy-Authenticate: Digest realm="a", nonce="1"'), CALLEE)
    core.message_received(answer(second, 401, "Unauthorized", tag="b",
                              extra='WWW-Authenticate: Digest realm="b", nonce="2"'), CALLEE2)
    (final,) = [m for m in to_flow(net.take(), CALLER) if not isinstance(m, Request)]
    assert final.status in (401, 407)
    assert final.get_all("Proxy-Authenticate") == ['Digest realm="a", nonce="1"']
    assert final.get_all("WWW-Authenticate") == ['Digest realm="b", nonce="2"']
    assert len(final.vias) == 1


def test_6xx_ends_the_search(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    register(core, clock, "bob", CALLEE2)
    core.message_received(request(), CALLER)
    sent = net.take()
    (first,), (second,) = to_flow(sent, CALLEE), to_flow(sent, CALLEE2)
    core.message_received(answer(second, 180, "Ringing", tag="b"), CALLEE2)
    net.take()
    core.message_received(answer(first, 603, "Decline", tag="a"), CALLEE)
    sent = net.take()
    assert [m.method for m in to_flow(sent, CALLEE2)] == ["CANCEL"]
    assert not [s for s in statuses(to_flow(sent, CALLER)) if s >= 200]
    core.message_received(answer(second, 487, "Request Terminated", tag="b"), CALLEE2)
    finals = [s for s in statuses(to_flow(net.take(), CALLER)) if s >= 200]
    assert finals == [603]


def test_path_becomes_the_route_set(tmp_path):
    core, clock, net = make_core(tmp_path)
    edge = Flow("udp", PROXY, ("127.0.0.1", 8000))
    core.location.put(Binding(aor="sip:bob@reticulum.local", contact="sip:bob@10.9.9.9:5060",
                              expires_at=clock.seconds() + 3600, flow=edge,
                              path=["<sip:127.0.0.1:8000;lr>"]))
    core.message_received(request(), CALLER)
    (invite,) = to_flow(net.take(), edge)
    assert str(invite.uri) == "sip:bob@10.9.9.9:5060"
    assert invite.get_all("Route") == ["<sip:127.0.0.1:8000;lr>"]


def test_missing_max_forwards_is_added(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    data = request("MESSAGE").replace(b"Max-Forwards: 70\r\n", b"")
    core.message_received(data, CALLER)
    (fwd,) = to_flow(net.take(), CALLEE)
    assert fwd.max_forwards == 69


def test_invite_retransmission_is_absorbed(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    core.message_received(request(), CALLER)
    net.take()
    core.message_received(request(), CALLER)
    sent = net.take()
    assert statuses(to_flow(sent, CALLER)) == [100]  # the last provisional, again
    assert not to_flow(sent, CALLEE)


# -- Contacts, flows, RFC 3581, Timer C without an answer ---------------------------------------


def test_received_is_added_with_rport_even_when_it_equals_the_sent_by_host(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    core.message_received(request(), CALLER)  # Via: SIP/2.0/UDP 127.0.0.1:6000;rport
    (invite,) = to_flow(net.take(), CALLEE)
    theirs = invite.vias[1]
    assert theirs.host == "127.0.0.1"
    assert theirs.params.get("received") == "127.0.0.1"  # RFC 3581 §4: MUST, even when equal
    assert theirs.params.get("rport") == "6000"


def test_without_rport_received_only_when_the_host_differs(tmp_path):
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    core.message_received(request().replace(b";rport", b""), CALLER)
    (invite,) = to_flow(net.take(), CALLEE)
    assert "received" not in invite.vias[1].params
    other = Flow("udp", PROXY, ("127.0.0.2", 6000))
    core.message_received(request(branch="z9hG4bKc9", call_id="call-9").replace(b";rport", b""),
                       other)
    (invite,) = to_flow(net.take(), CALLEE)
    assert invite.vias[1].params.get("received") == "127.0.0.2"


def put_binding(core, clock, contact, flow, bound):
    core.location.put(Binding(aor="sip:bob@reticulum.local", contact=contact,
                              expires_at=clock.seconds() + 3600, flow=flow,
                              registered_at=clock.seconds(), flow_bound=bound))


def test_requests_go_to_the_registered_contact_not_the_register_source(tmp_path):
    """A callee registered from another port (a helper registering for a UAS) is reached at
    its Contact (RFC 3261 §16.5)."""
    core, clock, net = make_core(tmp_path)
    put_binding(core, clock, "sip:bob@127.0.0.1:7005", CALLEE, bound=False)
    core.message_received(request(), CALLER)
    sent = net.take()
    assert not to_flow(sent, CALLEE)
    (invite,) = [m for m, f in sent if f.remote == ("127.0.0.1", 7005)]
    assert invite.method == "INVITE"


def test_a_flow_bound_binding_is_reached_over_its_flow(tmp_path):
    core, clock, net = make_core(tmp_path)
    put_binding(core, clock, "sip:bob@10.0.0.8:5060", CALLEE, bound=True)
    core.message_received(request(), CALLER)
    (invite,) = to_flow(net.take(), CALLEE)
    assert str(invite.uri) == "sip:bob@10.0.0.8:5060"


def test_tcp_binding_reuses_its_connection_then_connects_to_the_contact(tmp_path):
    core, clock, net = make_core(tmp_path)
    conn = Flow("tcp", PROXY, ("127.0.0.1", 45000), 5)
    put_binding(core, clock, "sip:bob@127.0.0.1:7010;transport=tcp", conn, bound=False)
    core.message_received(request(), CALLER)
    (invite,) = to_flow(net.take(), conn)  # the live connection from the Contact's host
    assert invite.via.transport == "TCP"
    core.flow_closed(conn)
    net.dead.add(conn)
    assert core.location.lookup("sip:bob@reticulum.local", clock.seconds())  # still there
    core.message_received(request(branch="z9hG4bKc2", call_id="call-2"), CALLER)
    sent = net.take()
    (invite,) = [m for m, f in sent if f.remote == ("127.0.0.1", 7010) and f.transport == "tcp"]
    assert invite.method == "INVITE"


def test_a_flow_bound_tcp_binding_goes_with_its_connection(tmp_path):
    core, clock, net = make_core(tmp_path)
    conn = Flow("tcp", PROXY, ("127.0.0.1", 45000), 5)
    put_binding(core, clock, "sip:bob@x7.invalid;transport=tcp", conn, bound=True)
    core.flow_closed(conn)
    assert not core.location.lookup("sip:bob@reticulum.local", clock.seconds())


def test_timer_c_without_provisional_stops_the_invite_retransmissions(tmp_path):
    """§16.8: a branch that heard nothing behaves as if it got a 408: the caller has its 408
    and the callee gets no more copies of the INVITE (and no CANCEL)."""
    core, clock, net = make_core(tmp_path, invite_timeout=3)
    register(core, clock, "bob", CALLEE)
    core.message_received(request(), CALLER)
    assert [m.method for m in to_flow(net.take(), CALLEE)] == ["INVITE"]
    for _ in range(6):
        clock.advance(0.5)
    sent = net.take()
    assert statuses(to_flow(sent, CALLER)) == [408]
    assert [m.method for m in to_flow(sent, CALLEE)] == ["INVITE", "INVITE"]  # 0.5 s, 1.5 s
    for _ in range(80):
        clock.advance(0.5)
    sent = net.take()
    assert to_flow(sent, CALLEE) == []
    assert all(s == 408 for s in statuses(to_flow(sent, CALLER)))
    assert len(core.transactions) == 0 and not core.proxy.contexts
