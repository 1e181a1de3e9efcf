"""Who may be relayed where, driven sans-IO with the real account store and digest math:
route tokens, the real next hop, canonical local hosts, bounded forking and stateless
answers to strangers."""
from __future__ import annotations

from twisted.internet.task import Clock

from reticulum import events
from reticulum.accounts import AccountStore
from reticulum.config import config_from_dict
from reticulum.service import build_core
from reticulum.location import Binding, MemoryLocation
from reticulum.registrar import Registrar
from reticulum.sip import Request, parse
from reticulum.addresses import Flow
from tests.proxy.test_proxy import (CALLEE, CALLER, PROXY, RecordingTransports, answer, request,
                              statuses, to_flow)
from tests.proxy.test_proxy_auth import credentials

DOMAIN = "reticulum.local"
FOREIGN = ("192.0.2.9", 5060)
ALICE = "<sip:alice@%s>;tag=a" % DOMAIN


def make_core(tmp_path, **config):
    data = {
        "domains": [DOMAIN], "state_dir": str(tmp_path),
        "listen": {"udp": ["127.0.0.1:5060"]},
        "users": {"alice": "alice-secret", "bob": "bob-secret"},
    }
    data.update(config)
    clock = Clock()
    clock.advance(1_800_000_000)
    net = RecordingTransports()
    accounts = AccountStore(str(tmp_path / "reticulum.sqlite3"), realms=[DOMAIN], watch=False)
    core = build_core(config_from_dict(data, base_dir=str(tmp_path)), clock, net,
                      location=MemoryLocation(), accounts=accounts)
    core.start()
    return core, clock, net


def bind(core, clock, user, flow, contact=None):
    contact = contact or "sip:%s@%s:%d" % (user, flow.remote[0], flow.remote[1])
    core.location.put(Binding(aor="sip:%s@%s" % (user, DOMAIN), contact=contact,
                              expires_at=clock.seconds() + 3600, flow=flow,
                              registered_at=clock.seconds()))


def to_foreign(sent):
    return [(m, f) for m, f in sent if f.remote[0] == FOREIGN[0]]


def final(sent, flow=CALLER):
    (reply,) = [m for m in to_flow(sent, flow) if not isinstance(m, Request)
                and m.status >= 200]
    return reply


def authenticated(core, net, data_for, user="alice", password="alice-secret"):
    """Send the request data_for(extra) once, answer its 407, send it again with credentials;
    returns what was sent after the second one."""
    core.message_received(data_for("", 1), CALLER)
    challenge = final(net.take())
    assert challenge.status == 407
    sent_uri = str(parse(data_for("", 1)).uri)
    method = parse(data_for("", 1)).method
    core.message_received(data_for(credentials(challenge.get_all("Proxy-Authenticate")[0], user,
                                            password, method, sent_uri), 2), CALLER)
    return net.take()


# -- 1. route tokens ---------------------------------------------------------------------------


def _call_through(core, clock, net, caller_from="<sip:carol@example.org>;tag=f1"):
    bind(core, clock, "bob", CALLEE)
    core.message_received(request(from_=caller_from), CALLER)
    (invite,) = [m for m in to_flow(net.take(), CALLEE) if isinstance(m, Request)]
    return invite


def test_record_route_carries_a_token_over_the_call_id_and_the_next_hop(tmp_path):
    core, clock, net = make_core(tmp_path)
    invite = _call_through(core, clock, net)
    (rr,) = invite.record_routes
    token = rr.uri.params["rtok"]
    tokens = core.proxy.tokens
    # what the callee keeps leads back to the caller's Contact (sip:carol@127.0.0.1:6000)
    assert token == tokens.token("call-1", "127.0.0.1:6000")
    assert tokens.valid("call-1", token, "127.0.0.1:6000")
    assert not tokens.valid("call-2", token, "127.0.0.1:6000")
    assert not tokens.valid("call-1", token, "192.0.2.9:")


def test_forged_route_in_a_made_up_dialog_is_not_relayed(tmp_path):
    core, clock, net = make_core(tmp_path)
    for route in ("<sip:127.0.0.1:5060;lr>", "<sip:127.0.0.1:5060;lr;rtok=AAAAAAAAAAAAAAAA>",
                  "<sip:127.0.0.1:5060;lr;rtok=%C3%A9>", "<sip:127.0.0.1:5060;lr;rtok>",
                  "<sip:127.0.0.1:5060;lr;rtok=%s>" % core.proxy.tokens.token("other-call")):
        core.message_received(request("MESSAGE", "sip:victim@192.0.2.9", to="<sip:v@x.org>;tag=x",
                                   extra="Route: " + route), CALLER)
        sent = net.take()
        assert not to_foreign(sent)
        assert statuses(to_flow(sent, CALLER)) == [403]


def _answered_call(core, clock, net):
    """A foreign caller's call to bob, answered: (what the callee got, what the caller got)."""
    invite = _call_through(core, clock, net)
    core.message_received(answer(invite, 200, "OK"), CALLEE)
    (ok,) = [m for m in to_flow(net.take(), CALLER) if not isinstance(m, Request)
             and m.status == 200]
    return invite, ok


def _info_from_bob(ruri, route):
    return ("INFO %s SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKi\r\nRoute: %s\r\n"
            "From: <sip:bob@%s>;tag=t1\r\nTo: <sip:carol@example.org>;tag=f1\r\n"
            "Call-ID: call-1\r\nCSeq: 7 INFO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            % (ruri, route, DOMAIN)).encode()


def test_the_dialog_token_opens_both_directions(tmp_path):
    core, clock, net = make_core(tmp_path)
    invite, ok = _answered_call(core, clock, net)
    # the 200 carries our Record-Route rewritten for the caller: on to bob's Contact
    (rr,) = ok.record_routes
    assert rr.uri.params["rtok"] == core.proxy.tokens.token("call-1", "127.0.0.1:7000")
    # the foreign caller's BYE goes to the callee...
    bye = request("BYE", "sip:bob@127.0.0.1:7000", branch="z9hG4bKbye", cseq=2,
                  to="<sip:bob@%s>;tag=t1" % DOMAIN, extra="Route: " + ok.get("Record-Route"))
    core.message_received(bye, CALLER)
    assert [m.method for m in to_flow(net.take(), CALLEE)] == ["BYE"]
    # ... and the local callee's request reaches the caller's Contact, unchallenged
    core.message_received(_info_from_bob("sip:carol@127.0.0.1:6000",
                                      invite.get("Record-Route")), CALLEE)
    assert [m.method for m in to_flow(net.take(), CALLER)] == ["INFO"]


def test_a_dialog_token_leads_only_to_the_other_side_of_its_dialog(tmp_path):
    """A stranger who called bob holds a valid token for that Call-ID: it must not take
    an in-dialog request to anyone but bob (nor bob's side to anyone but the caller)."""
    core, clock, net = make_core(tmp_path)
    invite, ok = _answered_call(core, clock, net)
    for route in (ok.get("Record-Route"), invite.get("Record-Route")):
        message = request("MESSAGE", "sip:victim@192.0.2.9", branch="z9hG4bKm", cseq=3,
                          to="<sip:bob@%s>;tag=t1" % DOMAIN, extra="Route: " + route)
        core.message_received(message, CALLER)
        sent = net.take()
        assert not to_foreign(sent)
        assert statuses(to_flow(sent, CALLER)) == [403]
        # a Route of the stranger's own after ours is a foreign next hop too
        message = request("MESSAGE", "sip:bob@127.0.0.1:7000", branch="z9hG4bKn", cseq=4,
                          to="<sip:bob@%s>;tag=t1" % DOMAIN,
                          extra="Route: %s, <sip:192.0.2.9;lr>" % route)
        core.message_received(message, CALLER)
        sent = net.take()
        assert not to_foreign(sent)
    # bob's side, with the caller's token, cannot be pointed elsewhere either
    core.message_received(_info_from_bob("sip:carol@192.0.2.9", invite.get("Record-Route")),
                       CALLEE)
    assert not to_foreign(net.take())


def test_the_token_survives_a_restart(tmp_path):
    first, _, _ = make_core(tmp_path)
    second, _, _ = make_core(tmp_path)
    assert first.proxy.tokens.token("c") == second.proxy.tokens.token("c")
    assert first.proxy.tokens.stateless_prefix == second.proxy.tokens.stateless_prefix


def test_in_dialog_from_a_local_user_without_token_is_challenged(tmp_path):
    core, clock, net = make_core(tmp_path)
    bind(core, clock, "bob", CALLEE)
    core.message_received(request("BYE", "sip:bob@127.0.0.1:7000", from_=ALICE,
                               to="<sip:bob@%s>;tag=b" % DOMAIN,
                               extra="Route: <sip:127.0.0.1:5060;lr>"), CALLER)
    sent = net.take()
    assert not to_flow(sent, CALLEE)
    assert final(sent).status == 407


def test_in_dialog_from_a_stranger_without_token_reaches_only_local_users(tmp_path):
    core, clock, net = make_core(tmp_path)
    bind(core, clock, "bob", CALLEE)
    core.message_received(request("BYE", "sip:bob@127.0.0.1:7000", to="<sip:b@x>;tag=b"), CALLER)
    assert [m.method for m in to_flow(net.take(), CALLEE)] == ["BYE"]
    core.message_received(request("BYE", "sip:x@192.0.2.9", to="<sip:b@x>;tag=b",
                               branch="z9hG4bK2"), CALLER)
    sent = net.take()
    assert not to_foreign(sent) and statuses(to_flow(sent, CALLER)) == [403]


def test_ack_without_token_is_not_relayed_to_a_foreign_hop(tmp_path):
    core, clock, net = make_core(tmp_path)
    core.message_received(request("ACK", "sip:x@192.0.2.9", from_=ALICE, to="<sip:x@y>;tag=1",
                               extra="Route: <sip:127.0.0.1:5060;lr>"), CALLER)
    assert net.take() == []


# -- 2. the real next hop ----------------------------------------------------------------------


def test_preloaded_route_to_a_foreign_hop_is_refused(tmp_path):
    core, clock, net = make_core(tmp_path)
    bind(core, clock, "bob", CALLEE)
    for i, route in enumerate(("<sip:192.0.2.9;lr>", "<sip:192.0.2.9;transport=tcp;lr>",
                               "<sip:127.0.0.1:5060;lr>, <sip:192.0.2.9:5070;lr>")):
        core.message_received(request(branch="z9hG4bKp%d" % i, call_id="p%d" % i,
                                   extra="Route: " + route), CALLER)
        sent = net.take()
        assert not to_foreign(sent) and not to_flow(sent, CALLEE)
        assert statuses(to_flow(sent, CALLER)) == [403]


def test_preloaded_route_of_an_authenticated_local_user_is_followed(tmp_path):
    core, clock, net = make_core(tmp_path)
    bind(core, clock, "bob", CALLEE)
    sent = authenticated(core, net, lambda extra, n: request(
        "MESSAGE", from_=ALICE, branch="z9hG4bKa%d" % n, cseq=n,
        extra="Route: <sip:192.0.2.9;lr>" + ("\r\n" + extra if extra else "")))
    assert [m.method for m, _ in to_foreign(sent)] == ["MESSAGE"]


# -- 3. canonical local hosts ------------------------------------------------------------------


def test_every_spelling_of_a_local_user_is_challenged(tmp_path):
    core, clock, net = make_core(tmp_path)
    bind(core, clock, "bob", CALLEE)
    for i, host in enumerate(("reticulum.local.", "RETICULUM.LOCAL", "Reticulum.Local.",
                              "127.0.0.1", "127.0.0.1:5060", "localhost:5060")):
        core.message_received(request("MESSAGE", from_="<sip:alice@%s>;tag=a" % host,
                                   branch="z9hG4bKs%d" % i), CALLER)
        sent = net.take()
        assert not to_flow(sent, CALLEE), host
        assert final(sent).status == 407, host


def test_our_address_names_a_local_user_with_or_without_port(tmp_path):
    core, clock, net = make_core(tmp_path)
    bind(core, clock, "bob", CALLEE)
    for i, uri in enumerate(("sip:bob@127.0.0.1", "sip:bob@127.0.0.1:5060",
                             "sip:bob@RETICULUM.LOCAL.")):
        core.message_received(request("MESSAGE", uri, branch="z9hG4bKu%d" % i), CALLER)
        (fwd,) = to_flow(net.take(), CALLEE)
        assert str(fwd.uri) == "sip:bob@127.0.0.1:7000"


def test_register_to_our_address_binds_the_first_domain(tmp_path):
    core, clock, net = make_core(tmp_path)
    for n, (ruri, to) in enumerate((("sip:127.0.0.1", "sip:alice@127.0.0.1"),
                                    ("sip:127.0.0.1:5060", "sip:alice@127.0.0.1:5060"),
                                    ("sip:RETICULUM.LOCAL.", "sip:alice@Reticulum.Local."))):
        contact = "<sip:alice@127.0.0.1:%d>" % (6100 + n)

        def register(extra, cseq, ruri=ruri, to=to, contact=contact):
            lines = ["REGISTER %s SIP/2.0" % ruri,
                     "Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKr%d%d;rport" % (n, cseq),
                     "From: <%s>;tag=r" % to, "To: <%s>" % to, "Call-ID: reg-%d" % n,
                     "CSeq: %d REGISTER" % cseq, "Contact: " + contact,
                     "Max-Forwards: 70"] + ([extra.replace("Proxy-", "")] if extra else [])
            return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

        core.message_received(register("", 1), CALLER)
        challenge = final(net.take())
        assert challenge.status == 401, (ruri, challenge.reason)
        auth = credentials(challenge.get_all("WWW-Authenticate")[0], "alice", "alice-secret",
                           "REGISTER", ruri)
        core.message_received(register(auth, 2), CALLER)
        assert final(net.take()).status == 200, ruri
    contacts = {b.contact for b in core.location.lookup("sip:alice@" + DOMAIN, clock.seconds())}
    assert contacts == {"sip:alice@127.0.0.1:6100", "sip:alice@127.0.0.1:6101",
                        "sip:alice@127.0.0.1:6102"}


def test_registrar_canonical_aor_without_the_core():
    registrar = Registrar(["Example.COM"], MemoryLocation(), Clock())
    uri = parse(b"REGISTER sip:x SIP/2.0\r\nTo: <sip:a@EXAMPLE.com.>\r\n\r\n").to.uri
    assert registrar.domain_of(uri) == "example.com"


# -- 5. bounded forking ------------------------------------------------------------------------


def test_max_breadth_is_shared_among_parallel_branches(tmp_path):
    core, clock, net = make_core(tmp_path)
    flows = [Flow("udp", PROXY, ("127.0.0.1", 7100 + i)) for i in range(3)]
    for flow in flows:
        bind(core, clock, "bob", flow)
    core.message_received(request(), CALLER)
    sent = net.take()
    breadths = sorted(int(m.get("Max-Breadth")) for m, _ in sent if isinstance(m, Request))
    assert breadths == [20, 20, 20]
    core.message_received(request(branch="z9hG4bK2", call_id="c2", extra="Max-Breadth: 2"),
                       CALLER)
    sent = net.take()
    assert sorted(int(m.get("Max-Breadth")) for m, _ in sent if isinstance(m, Request)) == [1, 1]
    core.message_received(request(branch="z9hG4bK3", call_id="c3", extra="Max-Breadth: 0"),
                       CALLER)
    sent = net.take()
    assert not [m for m, _ in sent if isinstance(m, Request)]
    assert statuses(to_flow(sent, CALLER))[-1] == 440


def test_a_single_target_keeps_the_breadth_and_gets_one_when_absent(tmp_path):
    core, clock, net = make_core(tmp_path)
    bind(core, clock, "bob", CALLEE)
    core.message_received(request("MESSAGE"), CALLER)
    (fwd,) = to_flow(net.take(), CALLEE)
    assert fwd.get("Max-Breadth") == "60"
    core.message_received(request("MESSAGE", branch="z9hG4bK2", extra="Max-Breadth: 7"), CALLER)
    (fwd,) = to_flow(net.take(), CALLEE)
    assert fwd.get("Max-Breadth") == "7"


def _register_plain(core, contact, n, expires=3600):
    data = ("REGISTER sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKm%d\r\n"
            "From: <sip:alice@%s>;tag=r\r\nTo: <sip:alice@%s>\r\nCall-ID: many\r\n"
            "CSeq: %d REGISTER\r\nContact: %s\r\nExpires: %d\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n" % (DOMAIN, n, DOMAIN, DOMAIN, n, contact, expires))
    return data.encode()


def test_contact_pointing_at_this_server_is_refused(tmp_path):
    core, clock, net = make_core(tmp_path, auth={"enabled": False})
    for n, contact in enumerate(("<sip:alice@127.0.0.1:5060>", "<sip:alice@127.0.0.1>",
                                 "<sip:alice@localhost:5060;x=1>",
                                 "<sip:alice@127.0.0.1:7000>, <sip:alice@127.0.0.1:5060>")):
        core.message_received(_register_plain(core, contact, n + 1), CALLER)
        reply = final(net.take())
        assert (reply.status, reply.reason) == (403, "Contact points to this server"), contact
    assert core.location.lookup("sip:alice@" + DOMAIN, clock.seconds()) == []


def test_max_contacts_refuses_more_and_keeps_what_is_there(tmp_path):
    core, clock, net = make_core(tmp_path, auth={"enabled": False},
                                 registrar={"max_contacts": 3})
    for n in range(1, 4):
        core.message_received(_register_plain(core, "<sip:alice@127.0.0.1:%d>" % (7000 + n), n),
                           CALLER)
        assert final(net.take()).status == 200
    core.message_received(_register_plain(core, "<sip:alice@127.0.0.1:7009>", 10), CALLER)
    reply = final(net.take())
    assert (reply.status, reply.reason) == (503, "Too many registered contacts")
    assert 3590 <= int(reply.get("Retry-After")) <= 3600
    kept = core.location.lookup("sip:alice@" + DOMAIN, clock.seconds())
    assert sorted(b.contact for b in kept) == ["sip:alice@127.0.0.1:%d" % p
                                               for p in (7001, 7002, 7003)]
    # refreshing one of them, or swapping one for another, stays possible
    core.message_received(_register_plain(core, "<sip:alice@127.0.0.1:7001>", 11), CALLER)
    assert final(net.take()).status == 200
    core.message_received(_register_plain(core, "<sip:alice@127.0.0.1:7001>;expires=0, "
                                             "<sip:alice@127.0.0.1:7009>", 12), CALLER)
    assert final(net.take()).status == 200


# -- 6. stateless answers ----------------------------------------------------------------------


def test_challenge_goes_out_once_and_its_ack_is_absorbed(tmp_path):
    core, clock, net = make_core(tmp_path)
    bind(core, clock, "bob", CALLEE)
    invite = request(from_=ALICE)
    core.message_received(invite, CALLER)
    sent = net.take()
    assert statuses(to_flow(sent, CALLER)) == [407]  # no 100 Trying before it
    assert len(core.transactions) == 0
    for _ in range(40):
        clock.advance(1)
    assert net.take() == []  # never retransmitted
    core.message_received(invite, CALLER)  # the caller's retransmission: the same answer again
    again = final(net.take())
    first = final(sent)
    assert again.status == 407 and again.to.tag == first.to.tag
    ack = request("ACK", to="<sip:bob@%s>;tag=%s" % (DOMAIN, first.to.tag), from_=ALICE)
    core.message_received(ack, CALLER)
    assert net.take() == []


def test_refusals_of_strangers_are_stateless(tmp_path):
    core, clock, net = make_core(tmp_path)
    for data in (request(ruri="sip:x@192.0.2.9"),  # relaying
                 request(ruri="sip:nobody@%s" % DOMAIN),  # 404
                 request(ruri="sip:bob@%s" % DOMAIN, call_id="c2")):  # 480
        core.message_received(data, CALLER)
        sent = net.take()
        assert len(statuses(to_flow(sent, CALLER))) == 1
        assert len(core.transactions) == 0
        clock.advance(40)
        assert net.take() == []


def test_accepted_invite_is_still_stateful(tmp_path):
    core, clock, net = make_core(tmp_path)
    invite = _call_through(core, clock, net)
    assert core.transactions.server_count == 1
    core.message_received(answer(invite, 486, "Busy Here"), CALLEE)
    sent = net.take()
    assert statuses(to_flow(sent, CALLER)) == [486]
    clock.advance(0.6)
    assert statuses(to_flow(net.take(), CALLER)) == [486]  # Timer G: the caller is known


def test_a_refusal_is_an_event_with_its_rule(tmp_path):
    core, clock, net = make_core(tmp_path)
    seen = []
    events.subscribe(seen.append)
    try:
        core.message_received(request(ruri="sip:x@192.0.2.9"), CALLER)
    finally:
        events.unsubscribe(seen.append)
    (refused,) = [e for e in seen if e["type"] == "refused"]
    assert refused["status"] == 403 and "next hop foreign" in refused["rule"]
