"""The event seam: one place where the core tells observers what it decided.

Emit sites live next to the code that decides a fact (a message received or sent, a binding
added or expired, a dialog confirmed, a connection closed, ...) and are written as::

    if events.listening:
        events.emit("dialog", action="confirmed", dialog=dialog)

so that a server nobody watches pays one module attribute check per fact. Observers (the
admin service, the log in words) are plain callables taking one dict: ``type``, ``time``
(Unix seconds) and the emitter's fields, which are live objects (messages, flows, bindings,
dialogs): an observer reads what it needs at once and never keeps or changes them.

An observer that raises is logged and skipped; it never breaks SIP processing.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

from twisted.logger import Logger

__all__ = ["listening", "emit", "subscribe", "unsubscribe", "observers"]

log = Logger(namespace="reticulum.events")

Observer = Callable[[Dict[str, Any]], None]

#: True while at least one observer is subscribed (emit sites check it first)
listening = False
_observers: List[Observer] = []
#: where event times come from (tests may replace it)
clock: Callable[[], float] = time.time


def emit(type: str, **fields: Any) -> None:
    """Hand one event to every observer; an observer's exception is logged, never raised."""
    if not _observers:
        return
    fields["type"] = type
    fields["time"] = clock()
    for observer in tuple(_observers):
        try:
            observer(fields)
        except Exception:
            log.failure("Event observer {observer!r} failed on a {type} event",
                        observer=observer, type=type)


def subscribe(observer: Observer) -> None:
    global listening
    if observer not in _observers:
        _observers.append(observer)
    listening = True


def unsubscribe(observer: Observer) -> None:
    global listening
    try:
        _observers.remove(observer)
    except ValueError:
        pass
    listening = bool(_observers)


def observers() -> List[Observer]:
    return list(_observers)
