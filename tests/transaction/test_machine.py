"""The state tables: the documented tables are the code's, and an event a state does not allow
is an error the layer logs once (and nothing else happens)."""
from __future__ import annotations

import textwrap

import pytest
from twisted.internet.task import Clock

from reticulum.transaction import (
    ClientTransaction, ServerTransaction, Timers, TransactionLayer, TransactionStateError,
)
from reticulum.transaction import client, server
from reticulum.transaction.machine import (
    TERMINATE, TERMINATED, TIMER_D, TIMER_H, TIMER_J, compile_table, describe,
)
from tests.transaction.helpers import T1, T2, T4, TCP, TU, UDP, Wire, make_layer, request, respond

TABLES = [
    (server, "INVITE_SERVER", ServerTransaction),
    (server, "NON_INVITE_SERVER", ServerTransaction),
    (client, "INVITE_CLIENT", ClientTransaction),
    (client, "NON_INVITE_CLIENT", ClientTransaction),
]


@pytest.mark.parametrize("module, name, cls", TABLES)
def test_the_docstring_shows_the_table_the_code_runs(module, name, cls):
    table = getattr(module, name)
    assert textwrap.indent(describe(table), "    ") in module.__doc__
    # what runs is that table, action for action
    compiled = getattr(module, "_" + name)
    assert compiled == compile_table(table, cls)
    for state, row in table.items():
        assert set(compiled[state]) == set(row)
        for event, (new, actions) in row.items():
            run_new, run_actions = compiled[state][event]
            assert run_new == new
            assert [f.__name__ for f in run_actions] == ["_" + a for a in actions]


@pytest.mark.parametrize("module, name, cls", TABLES)
def test_every_state_can_be_terminated_and_terminated_is_final(module, name, cls):
    table = getattr(module, name)
    for state, row in table.items():
        assert row[TERMINATE] == (TERMINATED, ())
    assert all(new == TERMINATED for new, _ in table[TERMINATED].values())


def test_a_table_naming_an_unknown_action_or_state_fails_at_once():
    with pytest.raises(AttributeError):
        compile_table({"a": {"e": ("a", ("no_such_action",))}}, ServerTransaction)
    with pytest.raises(ValueError):
        compile_table({"a": {"e": ("b", ())}}, ServerTransaction)


def test_an_event_the_state_does_not_allow_raises():
    clock, wire, layer = make_layer()
    invite = request()
    st = layer.new_server(invite, UDP, TU())
    with pytest.raises(TransactionStateError) as raised:
        st.fire(TIMER_H)  # Timer H runs only in Completed
    assert raised.value.transaction is st
    assert raised.value.state == "proceeding" and raised.value.event == TIMER_H
    assert st.state == "proceeding" and wire.sent == []
    ct = layer.new_client(request("OPTIONS", branch="z9hG4bKc"), UDP, TU())
    with pytest.raises(TransactionStateError):
        ct.fire(TIMER_D)  # an INVITE client's timer
    with pytest.raises(TransactionStateError):
        ct.fire("no such event")
    assert ct.state == "trying"


def test_a_refused_event_is_logged_once_and_changes_nothing():
    clock = Clock()
    wire = Wire(clock)
    lines = []
    layer = TransactionLayer(clock, Timers(T1, T2, T4), wire, log=lines.append)
    options = request("OPTIONS")
    tu = TU()
    st = layer.new_server(options, UDP, tu)
    st.respond(respond(options, 200))
    assert st.state == "completed" and len(wire.sent) == 1
    st.respond(respond(options, 500))  # a TU answering twice: not raised, not sent
    assert st.state == "completed" and len(wire.sent) == 1
    assert len(lines) == 1
    assert "3xx-6xx" in lines[0] and "completed" in lines[0]
    # a timer the state does not expect goes the same way (the clock never sees an error)
    assert st.step(TIMER_H) is True
    assert st.state == "completed" and len(lines) == 2
    clock.advance(64 * T1)
    assert st.state == "terminated" and tu.names() == ["server_terminated"]


def test_a_zero_timer_fires_at_once_on_reliable_transports():
    clock, wire, layer = make_layer()
    options = request("OPTIONS")
    st = layer.new_server(options, TCP, TU())
    with pytest.raises(TransactionStateError):
        st.fire(TIMER_J)  # Trying has no Timer J
    st.respond(respond(options, 200))  # Completed, and Timer J is zero: Terminated
    assert st.state == "terminated" and not clock.getDelayedCalls()
    assert len(layer) == 0
