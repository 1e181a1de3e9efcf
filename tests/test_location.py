"""The location service: MemoryLocation and SqliteLocation (write-behind)."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from reticulum.location import Binding, MemoryLocation, SqliteLocation
from reticulum.addresses import Flow

AOR = "sip:alice@example.com"
LOCAL = ("192.0.2.1", 5060)


def udp(port=5062, host="192.0.2.4"):
    return Flow("udp", LOCAL, (host, port))


def tcp(conn=1, port=40000, host="192.0.2.4", transport="tcp"):
    return Flow(transport, LOCAL, (host, port), conn)


def make(contact="sip:alice@192.0.2.4:5062", aor=AOR, expires_at=3600.0, **kw):
    kw.setdefault("registered_at", 0.0)
    return Binding(aor=aor, contact=contact, expires_at=expires_at, **kw)


def open_sqlite(where, clock, **kw):
    store = SqliteLocation(where, clock=clock, **kw)
    store.start()
    return store


@pytest.fixture
def clock():
    c = Clock()
    c.advance(1_000_000)
    return c


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path, clock):
    if request.param == "memory":
        s = MemoryLocation()
        s.start()
    else:
        s = open_sqlite(tmp_path, clock)
    yield s
    s.stop()


# -- Binding ---------------------------------------------------------------------------------


def test_remaining_rounds_up_and_stops_at_zero():
    b = make(expires_at=1000.0)
    assert b.remaining(0.0) == 1000
    assert b.remaining(999.5) == 1
    assert b.remaining(1000.0) == 0
    assert b.remaining(2000.0) == 0
    # float noise does not add a second
    now = 1_700_000_000.1
    assert make(expires_at=now + 3600).remaining(now) == 3600


def test_tied_to_connection():
    assert make(flow=tcp()).tied_to_connection
    assert make(flow=tcp(transport="wss")).tied_to_connection
    assert not make(flow=udp()).tied_to_connection
    assert not make(flow=None).tied_to_connection
    assert not make(flow=tcp(), path=["<sip:edge.example.com;lr>"]).tied_to_connection


# -- both stores -----------------------------------------------------------------------------


def test_lookup_orders_by_q_then_most_recent(store, clock):
    now = clock.seconds()
    store.put(make("sip:a@192.0.2.10", expires_at=now + 100, q=0.5, registered_at=now - 30))
    store.put(make("sip:b@192.0.2.11", expires_at=now + 100, q=1.0, registered_at=now - 20))
    store.put(make("sip:c@192.0.2.12", expires_at=now + 100, q=1.0, registered_at=now - 10))
    store.put(make("sip:d@192.0.2.13", expires_at=now + 100, q=0.0, registered_at=now))
    order = [b.contact for b in store.lookup(AOR, now)]
    assert order == ["sip:c@192.0.2.12", "sip:b@192.0.2.11", "sip:a@192.0.2.10", "sip:d@192.0.2.13"]
    assert [b.contact for b in store.bindings(AOR, now)] == order
    assert store.lookup("sip:nobody@example.com", now) == []


def test_put_same_contact_replaces(store, clock):
    now = clock.seconds()
    store.put(make(expires_at=now + 100, call_id="x", cseq=1))
    store.put(make(expires_at=now + 200, call_id="x", cseq=2))
    assert store.count() == 1
    (b,) = store.lookup(AOR, now)
    assert b.cseq == 2 and b.expires_at == now + 200


def test_put_same_instance_and_reg_id_replaces_other_contact(store, clock):
    now = clock.seconds()
    inst = "<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"
    store.put(make("sip:alice@192.0.2.4:5062", expires_at=now + 100, instance=inst, reg_id=1))
    store.put(make("sip:alice@192.0.2.4:5070", expires_at=now + 100, instance=inst, reg_id=2))
    store.put(make("sip:alice@198.51.100.9:6000", expires_at=now + 100, instance=inst, reg_id=1))
    contacts = sorted(b.contact for b in store.lookup(AOR, now))
    assert contacts == ["sip:alice@192.0.2.4:5070", "sip:alice@198.51.100.9:6000"]
    assert store.count() == 2
    assert [b.reg_id for b in store.find_instance(AOR, inst, 1)] == [1]


def test_expired_bindings_are_never_returned_even_before_a_sweep(store, clock):
    now = clock.seconds()
    store.put(make("sip:a@192.0.2.10", expires_at=now + 10))
    store.put(make("sip:b@192.0.2.11", expires_at=now + 100))
    clock.advance(10)
    assert [b.contact for b in store.lookup(AOR, clock.seconds())] == ["sip:b@192.0.2.11"]
    assert store.find_contact("sip:a@192.0.2.10", clock.seconds()) is None
    assert store.count() == 2  # still held until the sweep
    assert store.sweep(clock.seconds()) == 1
    assert store.count() == 1
    clock.advance(90)
    assert store.lookup(AOR, clock.seconds()) == []
    assert store.sweep(clock.seconds()) == 1
    assert store.count() == 0
    assert list(store.aors()) == []


def test_sweep_ignores_refreshed_bindings(store, clock):
    now = clock.seconds()
    store.put(make(expires_at=now + 10))
    store.put(make(expires_at=now + 100))  # refreshed before it lapsed
    clock.advance(50)
    assert store.sweep(clock.seconds()) == 0
    assert len(store.lookup(AOR, clock.seconds())) == 1


def test_remove_and_remove_all(store, clock):
    now = clock.seconds()
    store.put(make("sip:a@192.0.2.10", expires_at=now + 100))
    store.put(make("sip:b@192.0.2.11", expires_at=now + 100))
    store.put(make("sip:bob@192.0.2.12", aor="sip:bob@example.com", expires_at=now + 100))
    assert store.remove(AOR, "sip:a@192.0.2.10").contact == "sip:a@192.0.2.10"
    assert store.remove(AOR, "sip:a@192.0.2.10") is None
    assert [b.contact for b in store.lookup(AOR, now)] == ["sip:b@192.0.2.11"]
    assert [b.contact for b in store.remove_all(AOR)] == ["sip:b@192.0.2.11"]
    assert store.remove_all(AOR) == []
    assert store.lookup(AOR, now) == []
    assert store.count() == 1
    assert list(store.aors()) == ["sip:bob@example.com"]


def test_flow_closed_stops_tied_bindings_at_once(store, clock):
    now = clock.seconds()
    conn = tcp(conn=7)
    store.put(make("sip:a@10.0.0.5:5060;transport=tcp", expires_at=now + 100, flow=conn))
    store.put(make("sip:b@10.0.0.6:5060", expires_at=now + 100, flow=udp()))
    store.put(
        make("sip:c@10.0.0.7:5060;transport=tcp", expires_at=now + 100, flow=conn,
             path=["<sip:edge.example.com;lr;ob>"])
    )
    store.put(make("sip:bob@10.0.0.8;transport=tcp", aor="sip:bob@example.com",
                   expires_at=now + 100, flow=conn))
    gone = store.flow_closed(conn)
    assert sorted(b.contact for b in gone) == [
        "sip:a@10.0.0.5:5060;transport=tcp",
        "sip:bob@10.0.0.8;transport=tcp",
    ]
    assert sorted(b.contact for b in store.lookup(AOR, now)) == [
        "sip:b@10.0.0.6:5060",
        "sip:c@10.0.0.7:5060;transport=tcp",
    ]
    assert store.lookup("sip:bob@example.com", now) == []
    assert store.flow_closed(conn) == []
    assert store.flow_closed(udp()) == []


def test_flow_closed_leaves_bindings_that_moved_to_another_connection(store, clock):
    now = clock.seconds()
    store.put(make(expires_at=now + 100, flow=tcp(conn=1)))
    store.put(make(expires_at=now + 200, flow=tcp(conn=2, port=40001)))  # re-registered
    assert store.flow_closed(tcp(conn=1)) == []
    assert len(store.lookup(AOR, now)) == 1
    assert len(store.flow_closed(tcp(conn=2, port=40001))) == 1
    assert store.lookup(AOR, now) == []


def test_find_contact(store, clock):
    now = clock.seconds()
    store.put(make("sip:alice@192.0.2.4:5062", expires_at=now + 100, flow=udp()))
    found = store.find_contact("sip:alice@192.0.2.4:5062", now)
    assert found is not None and found.flow == udp()
    assert store.find_contact("sip:alice@192.0.2.4:5063", now) is None
    store.remove(AOR, "sip:alice@192.0.2.4:5062")
    assert store.find_contact("sip:alice@192.0.2.4:5062", now) is None


def test_re_registering_does_not_grow_the_store(store, clock):
    for i in range(5000):
        now = clock.seconds()
        store.put(make(expires_at=now + 3600, cseq=i, registered_at=now, flow=tcp(conn=i % 3)))
        clock.advance(1)
    assert store.count() == 1
    # internal indexes stay proportional to what is held
    assert len(store._heap) <= 2 * store.count() + 1025
    assert sum(len(v) for v in store._flows.values()) == 1
    assert len(store._contacts) == 1


# -- a model check: random operations never break the invariants -------------------------------

_contacts = st.sampled_from(["sip:a@192.0.2.1", "sip:b@192.0.2.2", "sip:c@192.0.2.3"])
_aors = st.sampled_from(["sip:x@example.com", "sip:y@example.com"])
_flows = st.sampled_from([None, udp(), tcp(conn=1), tcp(conn=2, port=40001)])
_instances = st.sampled_from([None, ("<urn:uuid:1>", 1), ("<urn:uuid:1>", 2), ("<urn:uuid:2>", 1)])
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _aors, _contacts, st.integers(1, 50), _flows, st.booleans(),
                  _instances),
        st.tuples(st.just("remove"), _aors, _contacts),
        st.tuples(st.just("remove_all"), _aors),
        st.tuples(st.just("closed"), _flows),
        st.tuples(st.just("advance"), st.integers(1, 30)),
        st.tuples(st.just("sweep")),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_random_operations_match_a_simple_model(ops):
    store = MemoryLocation()
    model: dict[tuple[str, str], Binding] = {}
    now = 0.0
    for op in ops:
        kind = op[0]
        if kind == "put":
            _, aor, contact, life, flow, with_path, outbound = op
            instance, reg_id = outbound or (None, None)
            b = make(contact, aor=aor, expires_at=now + life, flow=flow, registered_at=now,
                     path=["<sip:edge.example.com;lr>"] if with_path else [],
                     instance=instance, reg_id=reg_id)
            store.put(b)
            if instance is not None:
                for key in [k for k, o in model.items()
                            if k[0] == aor and (o.instance, o.reg_id) == (instance, reg_id)]:
                    del model[key]
            model[(aor, contact)] = b
        elif kind == "remove":
            store.remove(op[1], op[2])
            model.pop((op[1], op[2]), None)
        elif kind == "remove_all":
            store.remove_all(op[1])
            for key in [k for k in model if k[0] == op[1]]:
                del model[key]
        elif kind == "closed":
            if op[1] is not None:
                gone = store.flow_closed(op[1])
                for b in gone:
                    assert b.flow == op[1] and b.tied_to_connection
                    del model[(b.aor, b.contact)]
                assert not any(
                    b.flow == op[1] and b.tied_to_connection for b in model.values()
                )
        elif kind == "advance":
            now += op[1]
        else:
            expired = [k for k, b in model.items() if b.expires_at <= now]
            assert store.sweep(now) == len(expired)
            for key in expired:
                del model[key]
        assert store.count() == len(model)
        for aor in ("sip:x@example.com", "sip:y@example.com"):
            # order: q, then most recent; among equals (same q and time) it is unspecified
            key = lambda b: (-b.q, -b.registered_at, b.contact)  # noqa: E731
            live = sorted(
                (b for (a, _), b in model.items() if a == aor and b.expires_at > now), key=key
            )
            found = store.lookup(aor, now)
            assert [key(b)[:2] for b in found] == sorted(key(b)[:2] for b in found)
            assert [b.contact for b in sorted(found, key=key)] == [b.contact for b in live]
        assert sorted(store.aors()) == sorted({a for a, _ in model})
    assert len(store._heap) <= 2 * store.count() + 1025


# -- SqliteLocation ----------------------------------------------------------------------------


def rows(path):
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT aor, contact FROM bindings ORDER BY contact").fetchall()
    finally:
        db.close()


def test_sqlite_file_location(tmp_path, clock):
    by_dir = SqliteLocation(tmp_path / "state", clock=clock)
    assert by_dir.path == os.path.join(str(tmp_path / "state"), "reticulum.sqlite3")
    by_file = SqliteLocation(str(tmp_path / "state" / "reticulum.sqlite3"), clock=clock)
    assert by_file.path == by_dir.path
    by_file.start()  # creates the directory
    by_file.stop()
    assert os.path.isfile(by_dir.path)


def test_sqlite_persists_across_stop_and_start_with_remaining_lifetime(tmp_path, clock):
    now = clock.seconds()
    store = open_sqlite(tmp_path, clock)
    inst = "<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"
    store.put(
        make("sip:alice@192.0.2.4:5062", expires_at=now + 3600, q=0.7, call_id="c1", cseq=9,
             instance=inst, reg_id=1, path=["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"],
             flow=udp(), params='+sip.instance="%s";reg-id=1' % inst, registered_at=now)
    )
    store.stop()

    clock.advance(600)
    again = open_sqlite(tmp_path, clock)
    try:
        (b,) = again.lookup(AOR, clock.seconds())
        assert b.remaining(clock.seconds()) == 3000
        assert (b.q, b.call_id, b.cseq, b.instance, b.reg_id) == (0.7, "c1", 9, inst, 1)
        assert b.path == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        assert b.flow == udp()
        assert b.params == '+sip.instance="%s";reg-id=1' % inst
        assert b.registered_at == now
        assert b.reachable
    finally:
        again.stop()


def test_sqlite_does_not_restore_expired_rows_and_deletes_them(tmp_path, clock):
    now = clock.seconds()
    store = open_sqlite(tmp_path, clock)
    store.put(make("sip:a@192.0.2.10", expires_at=now + 10))
    store.put(make("sip:b@192.0.2.11", expires_at=now + 1000))
    store.stop()
    clock.advance(10)
    again = open_sqlite(tmp_path, clock)
    try:
        assert again.count() == 1
        assert [b.contact for b in again.lookup(AOR, clock.seconds())] == ["sip:b@192.0.2.11"]
        assert rows(again.path) == [(AOR, "sip:b@192.0.2.11")]
    finally:
        again.stop()


def test_sqlite_restores_connection_bindings_unreachable_and_udp_usable(tmp_path, clock):
    now = clock.seconds()
    store = open_sqlite(tmp_path, clock)
    store.put(make("sip:a@10.0.0.5;transport=tcp", expires_at=now + 100, flow=tcp(conn=3)))
    store.put(make("sip:b@10.0.0.6;transport=ws", expires_at=now + 100,
                   flow=tcp(conn=4, transport="wss")))
    store.put(make("sip:c@10.0.0.7", expires_at=now + 100, flow=udp()))
    store.put(make("sip:d@10.0.0.8;transport=tcp", expires_at=now + 100, flow=tcp(conn=5),
                   path=["<sip:edge.example.com;lr;ob>"]))
    store.stop()

    again = open_sqlite(tmp_path, clock)
    try:
        now = clock.seconds()
        assert sorted(b.contact for b in again.lookup(AOR, now)) == [
            "sip:c@10.0.0.7",
            "sip:d@10.0.0.8;transport=tcp",
        ]
        kept = again.get(AOR, "sip:a@10.0.0.5;transport=tcp")
        assert kept is not None and not kept.reachable and kept.flow == tcp(conn=3)
        assert again.find_contact("sip:a@10.0.0.5;transport=tcp", now) is None
        assert again.count() == 4
        # a connection of this run that happens to get the same id does not touch it
        assert again.flow_closed(tcp(conn=3)) == []
        # the client registers again on a new connection: usable again
        again.put(make("sip:a@10.0.0.5;transport=tcp", expires_at=now + 100, flow=tcp(conn=9)))
        assert "sip:a@10.0.0.5;transport=tcp" in [b.contact for b in again.lookup(AOR, now)]
        # unreachable ones still lapse
        clock.advance(100)
        assert again.sweep(clock.seconds()) == 4
    finally:
        again.stop()


def test_sqlite_batches_many_changes_into_one_commit(tmp_path, clock):
    now = clock.seconds()
    store = open_sqlite(tmp_path, clock, batch_interval=3600, batch_size=100_000)
    try:
        for i in range(2000):
            store.put(make("sip:a@192.0.2.%d:%d" % (i % 250, 5000 + i), expires_at=now + 100))
        assert store.flush(timeout=30)
        assert store.commits == 1
        assert store.written == 2000
        assert len(rows(store.path)) == 2000
    finally:
        store.stop()


def test_sqlite_commits_when_a_batch_is_full(tmp_path, clock):
    now = clock.seconds()
    store = open_sqlite(tmp_path, clock, batch_interval=3600, batch_size=100)
    try:
        for i in range(1000):
            store.put(make("sip:a@192.0.2.1:%d" % (5000 + i), expires_at=now + 100))
        assert store.flush(timeout=30)
        assert store.commits == 10
    finally:
        store.stop()


def test_sqlite_commits_on_its_own_after_the_batch_interval(tmp_path, clock):
    store = open_sqlite(tmp_path, clock, batch_interval=0.01)
    try:
        store.put(make(expires_at=clock.seconds() + 100))
        db = sqlite3.connect(store.path, timeout=30)
        try:
            for _ in range(3000):  # no flush(): the writer commits by itself
                if db.execute("SELECT count(*) FROM bindings").fetchone()[0] == 1:
                    break
                time.sleep(0.01)
            assert db.execute("SELECT count(*) FROM bindings").fetchone()[0] == 1
        finally:
            db.close()
    finally:
        store.stop()


def test_sqlite_stop_flushes_what_is_queued(tmp_path, clock):
    store = open_sqlite(tmp_path, clock, batch_interval=3600, batch_size=100_000)
    store.put(make(expires_at=clock.seconds() + 100))
    store.stop()
    assert rows(store.path) == [(AOR, "sip:alice@192.0.2.4:5062")]


def test_sqlite_persists_removals(tmp_path, clock):
    now = clock.seconds()
    store = open_sqlite(tmp_path, clock)
    store.put(make("sip:a@192.0.2.10", expires_at=now + 100))
    store.put(make("sip:b@192.0.2.11", expires_at=now + 100))
    store.put(make("sip:c@192.0.2.12", expires_at=now + 5))
    store.put(make("sip:d@192.0.2.13;transport=tcp", expires_at=now + 100, flow=tcp(conn=2)))
    store.put(make("sip:bob@192.0.2.20", aor="sip:bob@example.com", expires_at=now + 100))
    store.put(make("sip:bob@192.0.2.21", aor="sip:bob@example.com", expires_at=now + 100))
    store.remove(AOR, "sip:a@192.0.2.10")
    store.remove_all("sip:bob@example.com")
    store.flow_closed(tcp(conn=2))
    clock.advance(5)
    assert store.sweep(clock.seconds()) == 1
    store.stop()
    assert rows(store.path) == [(AOR, "sip:b@192.0.2.11")]
    again = open_sqlite(tmp_path, clock)
    try:
        assert [b.contact for b in again.lookup(AOR, clock.seconds())] == ["sip:b@192.0.2.11"]
    finally:
        again.stop()


def test_sqlite_lookups_do_not_touch_the_disk(tmp_path, clock):
    store = open_sqlite(tmp_path, clock)
    store.put(make(expires_at=clock.seconds() + 100))
    store.flush()
    os.remove(store.path)  # memory is the working copy
    assert len(store.lookup(AOR, clock.seconds())) == 1
    store.stop()


def test_sqlite_other_tables_in_the_same_file_are_left_alone(tmp_path, clock):
    path = tmp_path / "reticulum.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE accounts (name TEXT PRIMARY KEY)")
    db.execute("INSERT INTO accounts VALUES ('alice')")
    db.commit()
    db.close()
    store = open_sqlite(str(path), clock)
    store.put(make(expires_at=clock.seconds() + 100))
    store.stop()
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT name FROM accounts").fetchall() == [("alice",)]
    finally:
        db.close()


@settings(max_examples=40, deadline=None)
@given(_ops, st.sampled_from([1, 3, 100_000]))
def test_sqlite_writes_back_whatever_the_batching(tmp_path_factory, ops, batch_size):
    """Puts and removals of one batch are written as a few statements; whatever the batch
    boundaries, the file ends up holding what memory holds."""
    path = tmp_path_factory.mktemp("batching")
    clock = Clock()
    store = open_sqlite(path, clock, batch_interval=3600, batch_size=batch_size)
    now = 0.0
    try:
        for op in ops:
            kind = op[0]
            if kind == "put":
                _, aor, contact, life, flow, with_path, outbound = op
                instance, reg_id = outbound or (None, None)
                store.put(make(contact, aor=aor, expires_at=now + life, flow=flow,
                               registered_at=now, instance=instance, reg_id=reg_id,
                               path=["<sip:edge.example.com;lr>"] if with_path else []))
            elif kind == "remove":
                store.remove(op[1], op[2])
            elif kind == "remove_all":
                store.remove_all(op[1])
            elif kind == "closed":
                if op[1] is not None:
                    store.flow_closed(op[1])
            elif kind == "advance":
                now += op[1]
            else:
                store.sweep(now)
    finally:
        store.stop()
    db = sqlite3.connect(store.path)
    try:
        stored = sorted(db.execute("SELECT aor, contact, expires_at, path FROM bindings"))
    finally:
        db.close()
    expected = sorted((b.aor, b.contact, b.expires_at, "[]" if not b.path else
                       '["<sip:edge.example.com;lr>"]')
                      for aor in store.aors() for b in store._aors[aor].values())
    assert stored == expected
