"""Dialog tracking (RFC 3261 §12): early, confirmed and terminated dialogs seen by the proxy.

The tracker only watches; it never changes a message. The proxy tells it about responses to
dialog-creating requests (INVITE, SUBSCRIBE) and about in-dialog requests. Every dialog has
one timer on the injected clock, so a dialog nobody ends cannot stay forever:

* an early dialog ends ("timeout") after ``early_lifetime`` seconds without a provisional
  response or in-dialog request (the proxy gives up on a ringing branch long before: Timer C);
* a confirmed dialog ends ("timeout") after ``session_lifetime`` seconds without an in-dialog
  request (re-INVITE, UPDATE, refreshing SUBSCRIBE, ...).

Terminated dialogs are removed at once; ``on_change(dialog)`` is called when a dialog is
created, confirmed and terminated.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from reticulum import events

__all__ = ["Dialog", "DialogTracker", "EARLY", "CONFIRMED", "TERMINATED"]

EARLY = "early"
CONFIRMED = "confirmed"
TERMINATED = "terminated"

DIALOG_METHODS = frozenset(("INVITE", "SUBSCRIBE"))
#: the event each state change is reported as (a dialog may be created confirmed)
_ACTIONS = {EARLY: "created", CONFIRMED: "confirmed", TERMINATED: "terminated"}


class Dialog:
    """One dialog, named by ``id`` = (Call-ID, caller's tag, callee's tag)."""

    __slots__ = (
        "call_id",
        "caller_tag",
        "callee_tag",
        "state",
        "caller",
        "callee",
        "route_set",
        "method",
        "created",
        "confirmed_at",
        "ended_at",
        "end_reason",
        "last_activity",
        "_timer",
    )

    def __init__(self, call_id: str, caller_tag: str, callee_tag: str, method: str,
                 caller: str, callee: str, route_set: List[str], now: float):
        self.call_id = call_id
        self.caller_tag = caller_tag
        self.callee_tag = callee_tag
        self.method = method
        self.caller = caller
        self.callee = callee
        self.route_set = route_set
        self.state = EARLY
        self.created = now
        self.confirmed_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self.end_reason: Optional[str] = None
        self.last_activity = now
        self._timer = None

    @property
    def id(self) -> Tuple[str, str, str]:
        return (self.call_id, self.caller_tag, self.callee_tag)

    @property
    def duration(self) -> Optional[float]:
        """Seconds from confirmation to the end (None unless both happened)."""
        if self.confirmed_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.confirmed_at

    def __repr__(self) -> str:
        return "<Dialog %s %s %s->%s %s>" % (self.method, self.state, self.caller, self.callee,
                                           self.call_id)


def _key(call_id: str, tag1: str, tag2: str) -> Tuple[str, str, str]:
    if tag2 < tag1:
        tag1, tag2 = tag2, tag1
    return (call_id, tag1, tag2)


def _uri_text(address) -> str:
    if address is None:
        return ""
    return str(address.uri)


class DialogTracker:
    """Dialogs by (Call-ID, tags in either order)."""

    def __init__(self, clock, session_lifetime: Optional[float] = 7200,
                 on_change: Optional[Callable[[Dialog], None]] = None,
                 early_lifetime: Optional[float] = 300):
        self.clock = clock
        self.session_lifetime = session_lifetime
        self.early_lifetime = early_lifetime
        self.on_change = on_change
        self._dialogs: Dict[Tuple[str, str, str], Dialog] = {}
        self._calls: Dict[Tuple[str, str], List[Dialog]] = {}  # (Call-ID, caller tag)
        self._early = 0
        self._confirmed = 0

    # -- queries

    def __len__(self) -> int:
        return len(self._dialogs)

    def get(self, call_id: str, tag1: Optional[str], tag2: Optional[str]) -> Optional[Dialog]:
        """The dialog with this Call-ID and these two tags, in either order."""
        return self._dialogs.get(_key(call_id, tag1 or "", tag2 or ""))

    def active(self) -> List[Dialog]:
        """Every dialog not yet terminated (early and confirmed)."""
        return list(self._dialogs.values())

    def counts(self) -> Dict[str, int]:
        return {EARLY: self._early, CONFIRMED: self._confirmed}

    @property
    def early_count(self) -> int:
        return self._early

    @property
    def confirmed_count(self) -> int:
        return self._confirmed

    # -- what the proxy tells us

    def response_seen(self, request, response) -> None:
        """A response to `request` (the request as received by the proxy).

        101-199 with a To tag to INVITE/SUBSCRIBE: early dialog. 2xx with a To tag: confirmed
        (one dialog per To tag: forked 2xx make several). 3xx-6xx to an initial request: the
        early dialog with that To tag is rejected; when the response answers the request as a
        whole (it carries exactly the request's Vias: the final answer sent upstream, not one
        branch's answer), every early dialog of the call is rejected. 481 to an in-dialog
        request ends that dialog (RFC 5057).
        """
        method = request.method
        if method not in DIALOG_METHODS:
            return
        status = response.status
        if status == 100:
            return
        to = response.to
        to_tag = to.tag if to is not None else None
        request_to = request.to
        in_dialog = request_to is not None and request_to.tag is not None
        call_id = response.call_id or request.call_id
        from_ = request.from_
        caller_tag = (from_.tag if from_ is not None else None) or ""
        if in_dialog:
            self._in_dialog_response(call_id, caller_tag, request_to.tag, to_tag, method,
                                     request, response)
        elif status < 300:
            if to_tag:
                self._initial_success(call_id, caller_tag, to_tag, method, request, response)
        else:
            self._initial_failure(call_id, caller_tag, to_tag, request, response)

    def _in_dialog_response(self, call_id, caller_tag, tag, to_tag, method, request,
                            response) -> None:
        """481 ends the dialog (RFC 5057); other answers count as activity."""
        status = response.status
        dialog = self._dialogs.get(_key(call_id, caller_tag, tag))
        if dialog is None:
            if 200 <= status < 300 and to_tag:
                # A dialog we never saw start (e.g. before a restart): track it now.
                self._create(call_id, caller_tag, to_tag, method, request, response, CONFIRMED)
            return
        if status == 481:
            self._end(dialog, "gone")
        elif status < 300:
            dialog.last_activity = self.clock.seconds()

    def _initial_success(self, call_id, caller_tag, to_tag, method, request, response) -> None:
        """1xx with a To tag: early; 2xx: confirmed (one dialog per To tag)."""
        dialog = self._dialogs.get(_key(call_id, caller_tag, to_tag))
        if response.status < 200:
            if dialog is None:
                self._create(call_id, caller_tag, to_tag, method, request, response, EARLY)
            else:
                dialog.last_activity = self.clock.seconds()
        elif dialog is None:
            self._create(call_id, caller_tag, to_tag, method, request, response, CONFIRMED)
        elif dialog.state == EARLY:
            self._confirm(dialog, response)
        else:
            dialog.last_activity = self.clock.seconds()

    def _initial_failure(self, call_id, caller_tag, to_tag, request, response) -> None:
        """3xx-6xx to an initial request: that To tag's early dialog is rejected, and every
        early dialog of the call when this is the answer to the whole request."""
        if to_tag:
            dialog = self._dialogs.get(_key(call_id, caller_tag, to_tag))
            if dialog is not None and dialog.state == EARLY:
                self._end(dialog, "rejected")
        if len(response.vias) <= len(request.vias):
            for dialog in list(self._calls.get((call_id, caller_tag), ())):
                if dialog.state == EARLY:
                    self._end(dialog, "rejected")

    def in_dialog_request(self, request) -> None:
        """A request inside a dialog (it has a To tag). BYE ends the dialog; a NOTIFY with
        ``Subscription-State: terminated`` ends a SUBSCRIBE dialog; anything else (re-INVITE,
        UPDATE, refreshing SUBSCRIBE, ...) keeps it and counts as activity."""
        to = request.to
        if to is None or to.tag is None:
            return
        from_ = request.from_
        tag = (from_.tag if from_ is not None else None) or ""
        dialog = self._dialogs.get(_key(request.call_id, tag, to.tag))
        if dialog is None:
            return
        method = request.method
        if method == "BYE":
            self._end(dialog, "bye")
            return
        if method == "NOTIFY" and dialog.method == "SUBSCRIBE":
            state = request.get("Subscription-State")
            if state is not None and state.split(";", 1)[0].strip().lower() == "terminated":
                self._end(dialog, "unsubscribed")
                return
        dialog.last_activity = self.clock.seconds()

    def end(self, dialog: Dialog, reason: str) -> None:
        """End a dialog for a reason of the caller's own."""
        if dialog.state != TERMINATED:
            self._end(dialog, reason)

    def stop(self) -> None:
        """Cancel every timer and forget every dialog (shutdown); no callbacks."""
        for dialog in self._dialogs.values():
            self._cancel_timer(dialog)
        self._dialogs.clear()
        self._calls.clear()
        self._early = self._confirmed = 0

    # -- internals

    def _create(self, call_id, caller_tag, callee_tag, method, request, response,
                state) -> Dialog:
        now = self.clock.seconds()
        dialog = Dialog(call_id, caller_tag, callee_tag, method, _uri_text(request.from_),
                        _uri_text(response.to), response.get_all("Record-Route"), now)
        self._dialogs[_key(call_id, caller_tag, callee_tag)] = dialog
        self._calls.setdefault((call_id, caller_tag), []).append(dialog)
        if state == CONFIRMED:
            dialog.state = CONFIRMED
            dialog.confirmed_at = now
            self._confirmed += 1
            self._arm(dialog, self.session_lifetime)
        else:
            self._early += 1
            self._arm(dialog, self.early_lifetime)
        if events.listening and state == CONFIRMED:  # created and confirmed by one 2xx
            events.emit("dialog", action="created", dialog=dialog)
        self._changed(dialog)
        return dialog

    def _confirm(self, dialog: Dialog, response) -> None:
        now = self.clock.seconds()
        dialog.state = CONFIRMED
        dialog.confirmed_at = now
        dialog.last_activity = now
        # §12.1.2 / §13.2.2.4: the route set is taken again from the 2xx.
        dialog.route_set = response.get_all("Record-Route")
        self._early -= 1
        self._confirmed += 1
        timer = dialog._timer
        delay = self.session_lifetime
        if timer is not None and timer.active() and delay is not None and delay > 0:
            timer.reset(delay)  # the same call, moved: nothing cancelled is left behind
        else:
            self._cancel_timer(dialog)
            self._arm(dialog, delay)
        self._changed(dialog)

    def _end(self, dialog: Dialog, reason: str) -> None:
        if dialog.state == EARLY:
            self._early -= 1
        elif dialog.state == CONFIRMED:
            self._confirmed -= 1
        dialog.state = TERMINATED
        dialog.ended_at = self.clock.seconds()
        dialog.end_reason = reason
        self._cancel_timer(dialog)
        key = _key(dialog.call_id, dialog.caller_tag, dialog.callee_tag)
        if self._dialogs.get(key) is dialog:
            del self._dialogs[key]
        call_key = (dialog.call_id, dialog.caller_tag)
        siblings = self._calls.get(call_key)
        if siblings is not None:
            try:
                siblings.remove(dialog)
            except ValueError:
                pass
            if not siblings:
                del self._calls[call_key]
        self._changed(dialog)

    def _lifetime(self, dialog: Dialog) -> Optional[float]:
        return self.session_lifetime if dialog.state == CONFIRMED else self.early_lifetime

    def _arm(self, dialog: Dialog, delay: Optional[float]) -> None:
        if delay is None or delay <= 0:
            return
        dialog._timer = self.clock.callLater(delay, self._expire, dialog)

    def _expire(self, dialog: Dialog) -> None:
        dialog._timer = None
        if dialog.state == TERMINATED:
            return
        lifetime = self._lifetime(dialog)
        if lifetime is None or lifetime <= 0:
            return
        remaining = dialog.last_activity + lifetime - self.clock.seconds()
        if remaining > 1e-6:
            dialog._timer = self.clock.callLater(remaining, self._expire, dialog)
            return
        self._end(dialog, "timeout")

    @staticmethod
    def _cancel_timer(dialog: Dialog) -> None:
        timer = dialog._timer
        if timer is not None:
            dialog._timer = None
            if timer.active():
                timer.cancel()

    def _changed(self, dialog: Dialog) -> None:
        if events.listening:
            events.emit("dialog", action=_ACTIONS.get(dialog.state), dialog=dialog)
        if self.on_change is not None:
            self.on_change(dialog)
