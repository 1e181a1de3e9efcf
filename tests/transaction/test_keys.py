"""Matching (RFC 3261 §17.1.3, §17.2.3, RFC 2543 fallback)."""
from __future__ import annotations

import pytest

from tests.transaction.helpers import TU, UDP, ack_for, make_layer, request, respond


def test_server_matching_needs_branch_sent_by_and_method():
    clock, wire, layer = make_layer()
    invite = request()
    st = layer.new_server(invite, UDP, TU())
    st.respond(respond(invite, 180))
    wire.clear()
    assert layer.handle_request(request(branch="z9hG4bKother")) is False
    assert layer.handle_request(request(via_host="192.0.2.2")) is False
    assert layer.handle_request(request(via_port=5070)) is False
    # The same branch with another method is another transaction.
    assert layer.handle_request(request("OPTIONS", cseq=2)) is False
    # CANCEL never matches the INVITE here...
    cancel = request("CANCEL")
    assert layer.handle_request(cancel) is False
    assert wire.sent == []
    # ...but find_invite_server finds it (§9.2).
    assert layer.find_invite_server(cancel) is st
    assert layer.find_invite_server(request("CANCEL", branch="z9hG4bKnope")) is None
    assert layer.find_invite_server(request("CANCEL", via_host="192.0.2.3")) is None
    # The CANCEL gets its own transaction, and its retransmissions match that one.
    cst = layer.new_server(cancel, UDP, None)
    assert layer.server_count == 2
    ok = respond(cancel, 200)
    cst.respond(ok)
    wire.clear()
    assert layer.handle_request(request("CANCEL")) is True
    assert wire.messages() == [ok]
    assert st.state == "proceeding"
    # Host comparison in sent-by is case-insensitive.
    upper = request(via_host="HOST.Example.COM", branch="z9hG4bKcase")
    st2 = layer.new_server(upper, UDP, TU())
    assert layer.handle_request(request(via_host="host.example.com",
                                        branch="z9hG4bKcase")) is True
    assert st2.state == "proceeding"


def test_unmatched_ack_is_not_absorbed():
    clock, wire, layer = make_layer()
    assert layer.handle_request(request("ACK", to_tag="abc")) is False
    with pytest.raises(ValueError):
        layer.new_server(request("ACK", to_tag="abc"), UDP, TU())


def test_rfc2543_fallback_matching():
    clock, wire, layer = make_layer()
    invite = request(branch="oldstyle1")
    assert layer.handle_request(invite) is False
    st = layer.new_server(invite, UDP, TU())
    assert layer.handle_request(request(branch="oldstyle1")) is True
    # Any differing element makes it another request.
    assert layer.handle_request(request(branch="oldstyle1", cseq=2)) is False
    assert layer.handle_request(request(branch="oldstyle1", from_tag="zz")) is False
    assert layer.handle_request(request(branch="oldstyle1", call_id="other")) is False
    assert layer.handle_request(request(branch="oldstyle1", uri="sip:carol@example.com")) \
        is False
    assert layer.handle_request(request(branch="oldstyle1", via_host="192.0.2.7")) is False
    assert layer.handle_request(request(branch="oldstyle1", to_tag="sometag")) is False
    cancel = request("CANCEL", branch="oldstyle1")
    assert layer.handle_request(cancel) is False
    assert layer.find_invite_server(cancel) is st
    assert layer.find_invite_server(request("CANCEL", branch="oldstyle1", to_tag="q")) is None
    busy = respond(invite, 486, to_tag="resp-tag")
    st.respond(busy)
    # The ACK carries the To tag of our response.
    assert layer.handle_request(ack_for(invite, to_tag="wrong")) is False
    assert st.state == "completed"
    assert layer.handle_request(ack_for(invite, busy)) is True
    assert st.state == "confirmed"


def test_rfc2543_without_any_branch():
    clock, wire, layer = make_layer()
    invite = request(branch=None)
    st = layer.new_server(invite, UDP, TU())
    ok = respond(invite, 200, to_tag="t9")
    st.respond(ok)
    assert layer.handle_request(request(branch=None)) is True
    # The ACK for the 2xx goes to the proxy.
    assert layer.handle_request(ack_for(invite, ok)) is False
    assert st.state == "accepted"


def test_rfc2543_non_invite_and_to_tag():
    clock, wire, layer = make_layer()
    bye = request("BYE", branch="nocookie", to_tag="tt", cseq=5)
    st = layer.new_server(bye, UDP, TU())
    assert layer.handle_request(request("BYE", branch="nocookie", to_tag="tt", cseq=5)) is True
    assert layer.handle_request(request("BYE", branch="nocookie", to_tag="tx", cseq=5)) \
        is False
    assert st.state == "trying"


# -- client matching -------------------------------------------------------------------------


def test_response_matching_by_branch_and_cseq_method():
    clock, wire, layer = make_layer()
    invite = request()
    itu, ctu = TU(), TU()
    ict = layer.new_client(invite, UDP, itu)
    cancel = request("CANCEL")  # same branch as the INVITE (§9.1)
    cct = layer.new_client(cancel, UDP, ctu)
    assert layer.client_count == 2 and len(layer) == 2
    assert ict.key == cct.key == "z9hG4bKbranch1"
    assert layer.handle_response(respond(cancel, 200)) is True
    assert ctu.statuses() == [200] and itu.statuses() == []
    assert layer.handle_response(respond(invite, 487)) is True
    assert itu.statuses() == [487]
    # Unknown branch, or known branch with another method: stray.
    stray = respond(request(branch="z9hG4bKunknown"), 200)
    assert layer.handle_response(stray) is False
    assert layer.handle_response(respond(request("OPTIONS"), 200)) is False
    assert layer.handle_response(respond(request(branch=None), 200)) is False


def test_response_to_request_with_our_via_on_top_of_others():
    clock, wire, layer = make_layer()
    forwarded = request(branch="z9hG4bKours", via_host="203.0.113.1",
                        extra_vias=["SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKtheirs"])
    tu = TU()
    layer.new_client(forwarded, UDP, tu)
    assert layer.handle_response(respond(forwarded, 180)) is True
    assert tu.statuses() == [180]
