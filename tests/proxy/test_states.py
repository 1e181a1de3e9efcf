"""The state tables of a proxied request and of its branches: what they allow, what they
refuse, and that a refused event is reported once instead of half-changing a call."""
from __future__ import annotations

import pytest
from twisted.logger import globalLogPublisher

from reticulum.proxy import context as states
from reticulum.proxy import BRANCH_TABLE, CONTEXT_TABLE, Branch, ProxyContext, \
    UnexpectedEvent, describe
from reticulum.sip import parse
from tests.proxy.test_proxy import CALLEE, CALLER, answer, make_core, register, request, \
    statuses, to_flow


@pytest.fixture
def warnings():
    seen = []

    def observe(event):
        if event.get("log_namespace") == "reticulum.proxy" and \
                "unexpected" in event.get("log_format", ""):
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def test_the_docstring_shows_both_tables_as_they_are():
    for table in (CONTEXT_TABLE, BRANCH_TABLE):
        for line in describe(table).splitlines():
            assert "    " + line in states.__doc__


def test_every_state_a_table_leads_to_is_one_it_knows():
    for table in (CONTEXT_TABLE, BRANCH_TABLE):
        known = {state for state, _ in table}
        assert {new for new, _ in table.values()} <= known


def test_a_finished_branch_hears_everything_and_does_nothing_but_forward_a_late_2xx():
    done = {event: result for (state, event), result in BRANCH_TABLE.items()
            if state == states.DONE}
    assert all(new == states.DONE for new, _ in done.values())
    assert {event for event, (_, actions) in done.items() if actions} == {states.SUCCESS}


def pending_call(tmp_path):
    """An INVITE forwarded to bob: its context and its one branch, nothing heard yet."""
    core, clock, net = make_core(tmp_path)
    register(core, clock, "bob", CALLEE)
    core.message_received(request(), CALLER)
    (ctx,) = core.proxy.contexts.values()
    (branch,) = ctx.branches
    (invite,) = to_flow(net.take(), CALLEE)
    return core, clock, net, ctx, branch, invite


def test_a_call_walks_both_tables(tmp_path):
    core, clock, net, ctx, branch, invite = pending_call(tmp_path)
    assert (ctx.state, branch.state) == (states.FORWARDING, states.TRYING)
    core.message_received(answer(invite, 180, "Ringing"), CALLEE)
    assert (ctx.state, branch.state) == (states.FORWARDING, states.PROCEEDING)
    core.message_received(answer(invite, 200, "OK"), CALLEE)
    assert (ctx.state, branch.state) == (states.ANSWERED, states.DONE)
    assert statuses(to_flow(net.take(), CALLER)) == [180, 200]


def test_a_cancel_before_any_provisional_waits_for_one(tmp_path):
    core, clock, net, ctx, branch, invite = pending_call(tmp_path)
    core.message_received(request("CANCEL"), CALLER)
    assert (ctx.state, branch.state) == (states.CANCELLED, states.CANCEL_WANTED)
    assert not [m for m in to_flow(net.take(), CALLEE) if m.method == "CANCEL"]
    core.message_received(answer(invite, 180, "Ringing"), CALLEE)
    assert branch.state == states.CANCELLING
    assert [m.method for m in to_flow(net.take(), CALLEE)] == ["CANCEL"]


def test_an_event_the_table_does_not_allow_raises_and_changes_nothing(tmp_path):
    core, clock, net = make_core(tmp_path)
    ctx = ProxyContext(core.proxy, parse(request()), CALLER, CALLER)
    branch = Branch(ctx, ctx.request)
    with pytest.raises(UnexpectedEvent) as raised:
        branch.handle(states.TIMER_C)  # no client transaction, so no Timer C either
    assert (raised.value.state, raised.value.event) == (states.WAITING, states.TIMER_C)
    assert branch.state == states.WAITING
    with pytest.raises(UnexpectedEvent):
        ctx.cancel()  # nothing to cancel before the request is accepted
    assert ctx.state == states.STATELESS and not net.take()


def test_an_unexpected_event_from_the_clock_is_logged_once_and_goes_no_further(tmp_path,
                                                                               warnings):
    core, clock, net = make_core(tmp_path)
    ctx = ProxyContext(core.proxy, parse(request()), CALLER, CALLER)
    branch = Branch(ctx, ctx.request)
    branch._timer_c_fired()
    assert len(warnings) == 1
    assert "WAITING" in warnings[0]["error"] and "timer C" in warnings[0]["error"]
    assert branch.state == states.WAITING and not net.take()
