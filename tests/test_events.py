"""The event seam: subscribing, a failing observer, and the facts the stores and trackers
emit (on the injected clock, no sockets)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from reticulum import events
from reticulum.dialog import DialogTracker
from reticulum.location import Binding, MemoryLocation
from reticulum.sip import parse
from reticulum.addresses import Flow
from reticulum.wordlog import WordLog


@pytest.fixture
def seen():
    got = []
    events.subscribe(got.append)
    yield got
    events.unsubscribe(got.append)
    assert not events.listening


def test_nobody_listening_costs_a_flag():
    assert not events.listening
    events.emit("message", direction="in")  # nobody: nothing happens


def test_a_failing_observer_is_logged_and_the_others_still_see_the_event(seen):
    def broken(event):
        raise RuntimeError("observer bug")

    logged = []
    globalLogPublisher.addObserver(logged.append)
    events.subscribe(broken)
    try:
        events.emit("connection", action="opened")
    finally:
        events.unsubscribe(broken)
        globalLogPublisher.removeObserver(logged.append)
    assert [e["type"] for e in seen] == ["connection"]
    assert seen[0]["action"] == "opened" and isinstance(seen[0]["time"], float)
    assert any(e.get("log_failure") is not None for e in logged)


FLOW = Flow("tcp", ("127.0.0.1", 5060), ("192.0.2.9", 40000), conn=7)


def binding(contact="sip:bob@192.0.2.9:40000;transport=tcp", expires_at=100.0, flow=FLOW):
    return Binding(aor="sip:bob@reticulum.local", contact=contact, expires_at=expires_at,
                   flow=flow, registered_at=0.0)


def test_location_tells_added_refreshed_removed_expired_and_closed(seen):
    store = MemoryLocation()
    store.put(binding())
    store.put(binding())
    store.remove("sip:bob@reticulum.local", "sip:bob@192.0.2.9:40000;transport=tcp")
    store.put(binding(contact="sip:bob@192.0.2.9:1", expires_at=10.0, flow=None))
    store.sweep(20.0)
    store.put(binding())
    store.put(binding(contact="sip:bob@192.0.2.9:2"))
    store.flow_closed(FLOW)
    got = [(e["action"], e.get("reason"), e["binding"].contact.split("@")[1]) for e in seen]
    assert got == [
        ("added", None, "192.0.2.9:40000;transport=tcp"),
        ("refreshed", None, "192.0.2.9:40000;transport=tcp"),
        ("removed", "unregistered", "192.0.2.9:40000;transport=tcp"),
        ("added", None, "192.0.2.9:1"),
        ("expired", None, "192.0.2.9:1"),
        ("added", None, "192.0.2.9:40000;transport=tcp"),
        ("added", None, "192.0.2.9:2"),
        ("removed", "connection closed", "192.0.2.9:40000;transport=tcp"),
        ("removed", "connection closed", "192.0.2.9:2"),
    ]


INVITE = (
    "INVITE sip:bob@reticulum.local SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    "From: <sip:alice@reticulum.local>;tag=a\r\n"
    "To: <sip:bob@reticulum.local>\r\n"
    "Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


def response(status, to_tag="b"):
    text = INVITE.replace("INVITE sip:bob@reticulum.local SIP/2.0",
                          "SIP/2.0 %d X" % status)
    return parse(text.replace("To: <sip:bob@reticulum.local>",
                              "To: <sip:bob@reticulum.local>;tag=%s" % to_tag).encode())


def test_dialogs_tell_created_confirmed_terminated(seen):
    tracker = DialogTracker(Clock())
    request = parse(INVITE.encode())
    tracker.response_seen(request, response(180))
    tracker.response_seen(request, response(200))
    bye = parse(INVITE.replace("INVITE sip", "BYE sip").replace("1 INVITE", "2 BYE")
                .replace("To: <sip:bob@reticulum.local>", "To: <sip:bob@reticulum.local>;tag=b")
                .encode())
    tracker.in_dialog_request(bye)
    # a 200 with no 18x before it creates and confirms at once
    tracker.response_seen(request, response(200, to_tag="c"))
    got = [(e["action"], e["dialog"].callee_tag) for e in seen]
    assert got == [("created", "b"), ("confirmed", "b"), ("terminated", "b"),
                   ("created", "c"), ("confirmed", "c")]


def test_words_for_an_expired_binding_and_a_closed_connection():
    lines = []
    log = SimpleNamespace(info=lambda fmt, **kw: lines.append(fmt.format(**kw)))
    words = WordLog(["reticulum.local"], log=log)
    events.subscribe(words)
    try:
        store = MemoryLocation()
        store.put(binding(contact="sip:bob@192.0.2.9:1", expires_at=60.0, flow=None))
        store.sweep(61.0)
        store.put(binding())
        store.put(binding(contact="sip:bob@192.0.2.9:2"))
        store.flow_closed(FLOW)
        events.emit("connection", action="closed", flow=FLOW)
    finally:
        events.unsubscribe(words)
    assert lines == [
        "bob registered sip:bob@192.0.2.9:1 for 60 s",
        "bob's binding expired (sip:bob@192.0.2.9:1)",
        "bob registered sip:bob@192.0.2.9:40000;transport=tcp (tcp 192.0.2.9:40000) for 100 s",
        "bob registered sip:bob@192.0.2.9:2 (tcp 192.0.2.9:40000) for 100 s",
        "connection from 192.0.2.9 closed: 2 bindings removed",
    ]


ANSWER_TO_GARBAGE = parse(
    b"SIP/2.0 400 Bad CSeq\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:a@example.org>;tag=1\r\nTo: <sip:b@example.org>\r\nCall-ID: x\r\n"
    b"CSeq: many INVITE\r\nContent-Length: 0\r\n\r\n")


def test_observers_take_the_answer_to_a_malformed_request_in_their_stride():
    """A 400 copies the CSeq it could not read: neither the words nor the admin view may
    trip over it (the observer's failure would be a traceback in the log)."""
    from reticulum.admin.hub import Hub

    lines = []
    words = WordLog(["reticulum.local"],
                    log=SimpleNamespace(info=lambda fmt, **kw: lines.append(fmt)))
    hub = Hub(SimpleNamespace(), clock=lambda: 0.0)
    event = {"type": "message", "direction": "out", "time": 0.0, "flow": FLOW,
             "message": ANSWER_TO_GARBAGE}
    words(event)
    hub(event)
    offered = []
    hub.clients.append(SimpleNamespace(offer=offered.append))  # watched: described at once
    hub(dict(event))
    assert lines == []
    assert [m["method"] for m in offered] == ["?"]
    assert offered[0]["cseq"] is None and offered[0]["status"] == 400
    assert [m["method"] for m in hub.recent_messages()] == ["?", "?"]
