"""State tables, in the manner of h11's ``_state.py``: one explicit table per state machine.

A table is ``{state: {event: (new state, (action, ...))}}``. The machine that runs it looks
the event up under its current state, takes the new state and runs the actions in order;
nothing else changes a state. An event the table does not list for the current state is an
error (`StateTableError`) that the machine's entry points log once, and a test can see.
The transaction layer (`reticulum.transaction`) and the proxy (`reticulum.proxy.context`)
run their machines on this; `describe` draws a table for their docstrings.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Tuple

__all__ = ["Table", "Compiled", "StateTableError", "compile_table", "describe"]

#: the table as written: state -> event -> (new state, action names)
Table = Mapping[str, Mapping[str, Tuple[str, Tuple[str, ...]]]]
#: the table as run: the action names turned into the owner's methods
Compiled = Dict[str, Dict[str, Tuple[str, Tuple[Callable[..., Any], ...]]]]


class StateTableError(Exception):
    """An event the table does not allow in the machine's current state; nothing changed."""

    def __init__(self, text: str, state: str, event: str):
        super().__init__(text)
        self.state = state
        self.event = event


def compile_table(table: Table, owner: type, prefix: str = "") -> Compiled:
    """`table` with each action name replaced by the owner's method ``prefix + name``. An
    unknown action, or a new state without a row of its own, fails here, at import, rather
    than on the first message."""
    out: Compiled = {}
    for state, row in table.items():
        out[state] = {}
        for event, (new, actions) in row.items():
            if new not in table:
                raise ValueError("%s: %s leads to %s, which has no row" % (state, event, new))
            out[state][event] = (new, tuple(getattr(owner, prefix + name) for name in actions))
    return out


def describe(table: Table) -> str:
    """The table as text, one transition a line: ``state  event -> new state  actions``."""
    states = max(11, 1 + max(len(state) for state in table))
    events = max(16, 1 + max(len(event) for row in table.values() for event in row))
    lines = []
    for state, row in table.items():
        for event, (new, actions) in row.items():
            lines.append("%-*s %-*s -> %-*s %s" % (
                states, state, events, event, states, new,
                ", ".join(actions) if actions else "-"))
    return "\n".join(lines)
