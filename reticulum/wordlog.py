"""The log in words: registrations, calls and connections told as a person would tell them.

An observer of :mod:`reticulum.events` that writes lines such as::

    alice registered sip:alice@192.0.2.7:5060 (udp 192.0.2.7:5060) for 3600 s
    call alice -> bob (Call-ID 1-2@192.0.2.7): 180 after 0.2 s, 200 after 3.1 s
    call ended by bob after 62 s (Call-ID 1-2@192.0.2.7)
    bob's binding expired (sip:bob@192.0.2.8:5060)
    connection from 192.0.2.9 closed: 2 bindings removed

on Twisted's logger, next to the per-message lines of ``[log] messages``. What it remembers
between events (calls waiting for their answer, the last BYE of a call, bindings a closing
connection took along) is bounded.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Iterable, Optional

from reticulum.addresses import hostport

from twisted.logger import Logger

from reticulum.sip import ParseError, Request

__all__ = ["WordLog", "user_of", "aor_user"]

#: calls (INVITEs waiting for their final answer) and BYEs remembered at most
MAX_TRACKED = 4096


def _seconds(value: float) -> str:
    return "%.1f" % value if value < 10 else "%d" % round(value)


def aor_user(aor: str) -> str:
    """``sip:alice@domain`` -> ``alice``."""
    rest = aor.split(":", 1)[-1]
    return rest.split("@", 1)[0] if "@" in rest else rest


def user_of(address, domains: Iterable[str] = ()) -> str:
    """A From/To address as a name: the user of a local domain, else user@host."""
    if address is None:
        return "?"
    uri = address.uri
    if not uri.user:
        return uri.host or "?"
    if uri.host in domains:
        return uri.user
    return "%s@%s" % (uri.user, uri.host)


class _Call:
    __slots__ = ("started", "caller", "callee", "answers")

    def __init__(self, started: float, caller: str, callee: str):
        self.started = started
        self.caller = caller
        self.callee = callee
        self.answers: Dict[int, float] = {}  # provisional status -> seconds after the INVITE


class WordLog:
    """Call with each event (``events.subscribe(WordLog(domains))``)."""

    def __init__(self, domains: Iterable[str] = (), log: Optional[Logger] = None):
        self.domains = frozenset(domains)
        self.log = log if log is not None else Logger(namespace="reticulum")
        self._calls: "OrderedDict[tuple, _Call]" = OrderedDict()
        self._byes: "OrderedDict[str, str]" = OrderedDict()  # Call-ID -> who sent the BYE
        self._gone: Dict[Any, int] = {}  # flow -> bindings removed with its connection
        self._handlers = {
            "message": self._message,
            "registration": self._registration,
            "dialog": self._dialog,
            "connection": self._connection,
        }

    def __call__(self, event: Dict[str, Any]) -> None:
        handler = self._handlers.get(event["type"])
        if handler is not None:
            handler(event)

    # -- registrations

    def _registration(self, event) -> None:
        binding = event["binding"]
        user = aor_user(binding.aor)
        action = event["action"]
        if action in ("added", "refreshed"):
            flow = binding.flow
            via = " (%s %s)" % (flow.transport, hostport(*flow.remote)) if flow else ""
            seconds = max(0, round(binding.expires_at - binding.registered_at))
            self.log.info("{user} {verb} {contact}{via} for {seconds} s", user=user,
                          verb="registered" if action == "added" else "refreshed",
                          contact=binding.contact, via=via, seconds=seconds)
        elif action == "expired":
            self.log.info("{user}'s binding expired ({contact})", user=user,
                          contact=binding.contact)
        elif event.get("reason") == "connection closed":
            if binding.flow is not None and (binding.flow in self._gone
                                             or len(self._gone) < MAX_TRACKED):
                self._gone[binding.flow] = self._gone.get(binding.flow, 0) + 1
        elif event.get("reason") == "replaced":
            self.log.info("{user}'s binding {contact} replaced by a newer one", user=user,
                          contact=binding.contact)
        else:
            self.log.info("{user} unregistered {contact}", user=user, contact=binding.contact)

    # -- connections

    def _connection(self, event) -> None:
        if event["action"] != "closed":
            return
        flow = event["flow"]
        removed = self._gone.pop(flow, 0)
        if removed:
            self.log.info("connection from {peer} closed: {count} binding{s} removed",
                          peer=flow.remote[0], count=removed, s="" if removed == 1 else "s")

    # -- calls

    def _message(self, event) -> None:
        message = event["message"]
        if isinstance(message, Request):
            if event["direction"] != "in":
                return
            method = message.method
            if method == "INVITE" and message.to.tag is None:
                key = (message.call_id, message.cseq.number)
                if key not in self._calls:
                    self._remember(self._calls, key, _Call(
                        event["time"], user_of(message.from_, self.domains),
                        user_of(message.to, self.domains)))
            elif method == "BYE":
                self._remember(self._byes, message.call_id,
                               user_of(message.from_, self.domains))
            return
        if event["direction"] != "out":
            return
        try:
            cseq = message.cseq
        except ParseError:
            return  # the answer to a request we could not read is no call
        if cseq is None or cseq.method != "INVITE":
            return
        key = (message.call_id, cseq.number)
        call = self._calls.get(key)
        if call is None:
            return
        status = message.status
        elapsed = event["time"] - call.started
        if status < 200:
            if status != 100 and status not in call.answers:
                call.answers[status] = elapsed
            return
        del self._calls[key]
        if status in (401, 407):
            return  # a challenge: the authenticated INVITE is the call
        steps = ["%d after %s s" % (code, _seconds(t)) for code, t in call.answers.items()]
        final = "%d" % status if status < 300 else "%d %s" % (status, message.reason)
        steps.append("%s after %s s" % (final, _seconds(elapsed)))
        self.log.info("call {caller} -> {callee} (Call-ID {call_id}): {steps}",
                      caller=call.caller, callee=call.callee, call_id=message.call_id,
                      steps=", ".join(steps))

    def _dialog(self, event) -> None:
        dialog = event["dialog"]
        if event["action"] != "terminated" or dialog.method != "INVITE":
            return
        duration = dialog.duration
        if duration is None:
            return  # never answered: the final response told it
        reason = dialog.end_reason
        if reason == "bye":
            who = self._byes.pop(dialog.call_id, None) or "?"
            self.log.info("call ended by {who} after {seconds} s (Call-ID {call_id})", who=who,
                          seconds=_seconds(duration), call_id=dialog.call_id)
        else:
            self.log.info("call ended ({reason}) after {seconds} s (Call-ID {call_id})",
                          reason="no activity" if reason == "timeout" else reason,
                          seconds=_seconds(duration), call_id=dialog.call_id)

    @staticmethod
    def _remember(table: OrderedDict, key, value) -> None:
        table[key] = value
        if len(table) > MAX_TRACKED:
            table.popitem(last=False)
