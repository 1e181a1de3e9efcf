"""Dialog tracking tests, driven by a Clock."""
from __future__ import annotations

from twisted.internet.task import Clock

from reticulum.dialog import Dialog, DialogTracker
from reticulum.sip import make_response, parse

PROXY_VIA = "SIP/2.0/UDP 203.0.113.1;branch=z9hG4bKproxy1"


def request(method="INVITE", call_id="c1@example.com", from_tag="alice-tag", to_tag=None,
            cseq=1, extra=(), from_uri="sip:alice@example.com", to_uri="sip:bob@example.com"):
    lines = [
        "%s %s SIP/2.0" % (method, to_uri),
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKuac%d" % cseq,
        "Max-Forwards: 70",
        "From: <%s>;tag=%s" % (from_uri, from_tag),
        "To: <%s>%s" % (to_uri, ";tag=" + to_tag if to_tag else ""),
        "Call-ID: " + call_id,
        "CSeq: %d %s" % (cseq, method),
    ]
    lines += list(extra)
    lines += ["Content-Length: 0", "", ""]
    return parse("\r\n".join(lines).encode())


def branch_response(req, status, to_tag, record_routes=()):
    """A response as the proxy receives it from a branch: our Via on top."""
    response = make_response(req, status, to_tag=to_tag)
    response.add("Via", PROXY_VIA, first=True)
    for value in record_routes:
        response.add("Record-Route", value)
    return response


def upstream_response(req, status, to_tag):
    """A response answering the request as a whole (its own Vias only)."""
    return make_response(req, status, to_tag=to_tag)


class Recorder:
    def __init__(self):
        self.changes = []

    def __call__(self, dialog):
        self.changes.append((dialog.state, dialog.id))

    def states(self):
        return [state for state, _ in self.changes]


def make(session_lifetime=7200, early_lifetime=300):
    clock = Clock()
    recorder = Recorder()
    tracker = DialogTracker(clock, session_lifetime=session_lifetime, on_change=recorder,
                            early_lifetime=early_lifetime)
    return clock, recorder, tracker


def test_provisional_with_tag_makes_an_early_dialog_and_2xx_confirms_it():
    clock, rec, tracker = make()
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 100, None))
    assert len(tracker) == 0
    clock.advance(1)
    tracker.response_seen(invite, branch_response(invite, 180, "bob-tag",
                                                  ["<sip:203.0.113.1;lr>"]))
    assert len(tracker) == 1
    dialog = tracker.get("c1@example.com", "alice-tag", "bob-tag")
    assert isinstance(dialog, Dialog)
    assert dialog is tracker.get("c1@example.com", "bob-tag", "alice-tag")
    assert dialog.state == "early" and dialog.method == "INVITE"
    assert dialog.id == ("c1@example.com", "alice-tag", "bob-tag")
    assert dialog.caller == "sip:alice@example.com" and dialog.callee == "sip:bob@example.com"
    assert dialog.route_set == ["<sip:203.0.113.1;lr>"]
    assert dialog.created == 1 and dialog.confirmed_at is None
    assert tracker.counts() == {"early": 1, "confirmed": 0}
    clock.advance(2)
    tracker.response_seen(invite, branch_response(invite, 200, "bob-tag",
                                                  ["<sip:203.0.113.1;lr>",
                                                   "<sip:198.51.100.1;lr>"]))
    assert dialog.state == "confirmed" and dialog.confirmed_at == 3
    assert dialog.route_set == ["<sip:203.0.113.1;lr>", "<sip:198.51.100.1;lr>"]
    assert tracker.counts() == {"early": 0, "confirmed": 1}
    assert tracker.active() == [dialog]
    # A retransmitted 2xx changes nothing.
    tracker.response_seen(invite, branch_response(invite, 200, "bob-tag"))
    assert len(tracker) == 1
    assert rec.states() == ["early", "confirmed"]


def test_2xx_without_provisional_creates_a_confirmed_dialog():
    clock, rec, tracker = make()
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 200, "bob-tag"))
    dialog = tracker.get("c1@example.com", "alice-tag", "bob-tag")
    assert dialog.state == "confirmed" and dialog.confirmed_at == 0
    assert rec.states() == ["confirmed"]


def test_responses_without_to_tag_or_to_other_methods_are_ignored():
    clock, rec, tracker = make()
    invite = request()
    tracker.response_seen(invite, make_response(invite, 180))
    tracker.response_seen(invite, make_response(invite, 200))
    options = request("OPTIONS")
    tracker.response_seen(options, branch_response(options, 200, "x"))
    register = request("REGISTER")
    tracker.response_seen(register, branch_response(register, 200, "y"))
    assert len(tracker) == 0 and rec.changes == []


def test_forked_2xx_make_one_dialog_per_to_tag():
    clock, rec, tracker = make()
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 180, "phone-a"))
    tracker.response_seen(invite, branch_response(invite, 180, "phone-b"))
    tracker.response_seen(invite, branch_response(invite, 200, "phone-a"))
    tracker.response_seen(invite, branch_response(invite, 200, "phone-b"))
    assert len(tracker) == 2
    assert tracker.counts() == {"early": 0, "confirmed": 2}
    a = tracker.get("c1@example.com", "alice-tag", "phone-a")
    b = tracker.get("c1@example.com", "alice-tag", "phone-b")
    assert a is not b and a.state == b.state == "confirmed"


def test_a_branch_rejection_ends_only_its_own_early_dialog():
    clock, rec, tracker = make()
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 180, "phone-a"))
    tracker.response_seen(invite, branch_response(invite, 183, "phone-b"))
    assert tracker.counts()["early"] == 2
    clock.advance(5)
    # phone-c, which never rang, is busy: the ringing phones keep their early dialogs.
    tracker.response_seen(invite, branch_response(invite, 486, "phone-c"))
    assert tracker.counts()["early"] == 2
    tracker.response_seen(invite, branch_response(invite, 487, "phone-a"))
    assert tracker.get("c1@example.com", "alice-tag", "phone-a") is None
    b = tracker.get("c1@example.com", "alice-tag", "phone-b")
    assert b.state == "early"
    ended = [d for s, d in rec.changes if s == "terminated"]
    assert ended == [("c1@example.com", "alice-tag", "phone-a")]


def test_the_final_rejection_of_the_call_ends_all_its_early_dialogs():
    clock, rec, tracker = make()
    invite = request()
    other = request(call_id="other-call")
    tracker.response_seen(invite, branch_response(invite, 180, "phone-a"))
    tracker.response_seen(invite, branch_response(invite, 180, "phone-b"))
    tracker.response_seen(other, branch_response(other, 180, "phone-z"))
    seen = []
    tracker.on_change = seen.append
    clock.advance(7)
    tracker.response_seen(invite, upstream_response(invite, 480, "proxy-tag"))
    assert len(tracker) == 1
    assert tracker.get("other-call", "alice-tag", "phone-z").state == "early"
    assert sorted(d.callee_tag for d in seen) == ["phone-a", "phone-b"]
    for dialog in seen:
        assert dialog.state == "terminated"
        assert dialog.end_reason == "rejected" and dialog.ended_at == 7


def test_rejection_leaves_confirmed_dialogs_alone():
    clock, rec, tracker = make()
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 180, "phone-a"))
    tracker.response_seen(invite, branch_response(invite, 180, "phone-b"))
    tracker.response_seen(invite, branch_response(invite, 200, "phone-a"))
    tracker.response_seen(invite, branch_response(invite, 487, "phone-b"))
    assert tracker.counts() == {"early": 0, "confirmed": 1}
    tracker.response_seen(invite, upstream_response(invite, 487, "proxy-tag"))
    assert tracker.get("c1@example.com", "alice-tag", "phone-a").state == "confirmed"


def test_bye_terminates_from_either_side():
    clock, rec, tracker = make()
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 200, "bob-tag"))
    dialog = tracker.get("c1@example.com", "alice-tag", "bob-tag")
    clock.advance(60)
    # The callee hangs up: From/To are swapped.
    bye = request("BYE", from_tag="bob-tag", to_tag="alice-tag", cseq=9,
                  from_uri="sip:bob@example.com", to_uri="sip:alice@example.com")
    tracker.in_dialog_request(bye)
    assert dialog.state == "terminated" and dialog.end_reason == "bye"
    assert dialog.ended_at == 60 and dialog.duration == 60
    assert len(tracker) == 0
    assert tracker.counts() == {"early": 0, "confirmed": 0}
    assert rec.states() == ["confirmed", "terminated"]
    # The dialog's timer is gone with it.
    assert not clock.getDelayedCalls()
    # A BYE for an unknown dialog, or without a To tag, is ignored.
    tracker.in_dialog_request(bye)
    tracker.in_dialog_request(request("BYE"))
    assert rec.states() == ["confirmed", "terminated"]


def test_reinvite_keeps_the_dialog_and_its_failure_does_not_end_it():
    clock, rec, tracker = make()
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 200, "bob-tag"))
    reinvite = request(to_tag="bob-tag", cseq=2)
    tracker.in_dialog_request(reinvite)
    tracker.response_seen(reinvite, branch_response(reinvite, 491, "bob-tag"))
    tracker.response_seen(reinvite, branch_response(reinvite, 200, "bob-tag"))
    dialog = tracker.get("c1@example.com", "alice-tag", "bob-tag")
    assert dialog.state == "confirmed" and len(tracker) == 1
    assert rec.states() == ["confirmed"]


def test_481_to_an_in_dialog_request_ends_the_dialog():
    clock, rec, tracker = make()
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 200, "bob-tag"))
    reinvite = request(to_tag="bob-tag", cseq=2)
    tracker.response_seen(reinvite, branch_response(reinvite, 481, "bob-tag"))
    assert len(tracker) == 0
    assert rec.changes[-1][0] == "terminated"


def test_2xx_to_an_in_dialog_request_for_an_unknown_dialog_tracks_it():
    clock, rec, tracker = make()
    reinvite = request(to_tag="bob-tag", cseq=5)
    tracker.response_seen(reinvite, branch_response(reinvite, 200, "bob-tag"))
    assert tracker.get("c1@example.com", "bob-tag", "alice-tag").state == "confirmed"


def test_session_lifetime_ends_a_forgotten_confirmed_dialog():
    clock, rec, tracker = make(session_lifetime=100)
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 180, "bob-tag"))
    clock.advance(10)
    tracker.response_seen(invite, branch_response(invite, 200, "bob-tag"))
    dialog = tracker.get("c1@example.com", "alice-tag", "bob-tag")
    clock.advance(99.9)
    assert dialog.state == "confirmed"
    clock.advance(0.2)
    assert dialog.state == "terminated" and dialog.end_reason == "timeout"
    assert dialog.ended_at == clock.seconds()
    assert len(tracker) == 0 and not clock.getDelayedCalls()
    assert rec.states() == ["early", "confirmed", "terminated"]


def test_in_dialog_requests_count_as_activity():
    clock, rec, tracker = make(session_lifetime=100)
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 200, "bob-tag"))
    dialog = tracker.get("c1@example.com", "alice-tag", "bob-tag")
    clock.advance(80)
    tracker.in_dialog_request(request("UPDATE", to_tag="bob-tag", cseq=2))
    clock.advance(30)
    assert dialog.state == "confirmed"
    assert len(clock.getDelayedCalls()) == 1  # still one timer per dialog
    clock.advance(69.9)
    assert dialog.state == "confirmed"
    clock.advance(0.2)
    assert dialog.state == "terminated" and dialog.end_reason == "timeout"


def test_early_lifetime_ends_a_forgotten_early_dialog():
    clock, rec, tracker = make(early_lifetime=200)
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 180, "bob-tag"))
    clock.advance(150)
    tracker.response_seen(invite, branch_response(invite, 183, "bob-tag"))  # activity
    clock.advance(199)
    assert tracker.counts()["early"] == 1
    clock.advance(2)
    assert len(tracker) == 0
    assert rec.changes[-1][0] == "terminated"


def test_confirming_replaces_the_early_timer():
    clock, rec, tracker = make(session_lifetime=1000, early_lifetime=50)
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 180, "bob-tag"))
    clock.advance(40)
    tracker.response_seen(invite, branch_response(invite, 200, "bob-tag"))
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(500)
    assert tracker.counts()["confirmed"] == 1


def test_no_lifetime_means_no_timer():
    clock, rec, tracker = make(session_lifetime=None, early_lifetime=None)
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 200, "bob-tag"))
    assert not clock.getDelayedCalls()
    assert len(tracker) == 1


def test_subscribe_dialog_ends_with_a_terminating_notify():
    clock, rec, tracker = make()
    subscribe = request("SUBSCRIBE", extra=["Event: presence", "Expires: 3600"])
    tracker.response_seen(subscribe, branch_response(subscribe, 202, "notifier"))
    dialog = tracker.get("c1@example.com", "alice-tag", "notifier")
    assert dialog.method == "SUBSCRIBE" and dialog.state == "confirmed"
    notify = request("NOTIFY", from_tag="notifier", to_tag="alice-tag", cseq=1,
                     extra=["Event: presence", "Subscription-State: active;expires=3600"])
    tracker.in_dialog_request(notify)
    assert dialog.state == "confirmed"
    notify = request("NOTIFY", from_tag="notifier", to_tag="alice-tag", cseq=2,
                     extra=["Event: presence", "Subscription-State: terminated;reason=timeout"])
    tracker.in_dialog_request(notify)
    assert dialog.state == "terminated" and dialog.end_reason == "unsubscribed"


def test_terminated_notify_inside_an_invite_dialog_keeps_it():
    clock, rec, tracker = make()
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 200, "bob-tag"))
    notify = request("NOTIFY", to_tag="bob-tag", cseq=3,
                     extra=["Event: refer", "Subscription-State: terminated"])
    tracker.in_dialog_request(notify)
    assert tracker.get("c1@example.com", "alice-tag", "bob-tag").state == "confirmed"


def test_end_and_stop():
    clock, rec, tracker = make()
    invite = request()
    tracker.response_seen(invite, branch_response(invite, 200, "a"))
    tracker.response_seen(invite, branch_response(invite, 180, "b"))
    tracker.end(tracker.get("c1@example.com", "alice-tag", "a"), "admin")
    assert rec.changes[-1][0] == "terminated" and len(tracker) == 1
    tracker.stop()
    assert len(tracker) == 0 and not clock.getDelayedCalls()
    assert tracker.counts() == {"early": 0, "confirmed": 0}


def test_many_calls_leave_nothing_behind():
    clock, rec, tracker = make(session_lifetime=600, early_lifetime=60)
    for i in range(1000):
        invite = request(call_id="call-%d" % i)
        tracker.response_seen(invite, branch_response(invite, 180, "t%d" % i))
        kind = i % 4
        if kind == 0:  # answered, hung up
            tracker.response_seen(invite, branch_response(invite, 200, "t%d" % i))
            tracker.in_dialog_request(request("BYE", call_id="call-%d" % i,
                                              to_tag="t%d" % i, cseq=2))
        elif kind == 1:  # rejected
            tracker.response_seen(invite, branch_response(invite, 486, "t%d" % i))
        elif kind == 2:  # answered, never hung up
            tracker.response_seen(invite, branch_response(invite, 200, "t%d" % i))
        # kind 3: rang, then nothing at all
        clock.advance(1)
    clock.advance(700)
    assert len(tracker) == 0
    assert tracker.counts() == {"early": 0, "confirmed": 0}
    assert not clock.getDelayedCalls()
    assert not tracker._calls
