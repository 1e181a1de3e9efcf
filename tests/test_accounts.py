"""The account store: HA1 only, memory lookups, write-through, reload on outside changes."""
from __future__ import annotations

import os
import sqlite3
import stat
import time

import pytest

from reticulum.accounts import AccountStore
from reticulum.sip import digest

REALMS = ["example.com", "example.org"]


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "state" / "reticulum.sqlite3")


@pytest.fixture
def store(path):
    s = AccountStore(path, REALMS, watch=False)
    s.start()
    yield s
    s.stop()


def wait_for(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_stores_ha1_for_every_realm_and_algorithm(store, path):
    store.set_password("alice", "s3cret-Pässword")
    for realm in REALMS:
        for algorithm in ("MD5", "SHA-256"):
            assert store.ha1("alice", realm, algorithm) == \
                digest.ha1("alice", realm, "s3cret-Pässword", algorithm)
        # the -sess variants use the same stored hash
        assert store.ha1("alice", realm, "MD5-sess") == store.ha1("alice", realm, "MD5")
    assert store.ha1("alice", "elsewhere.net", "MD5") is None
    assert store.ha1("bob", "example.com", "MD5") is None
    assert store.ha1("alice", "example.com", "SHA-1") is None
    db = sqlite3.connect(path)
    rows = db.execute("SELECT name, realm, algorithm FROM accounts ORDER BY 2, 3").fetchall()
    db.close()
    assert rows == [("alice", r, a) for r in REALMS for a in sorted(store.algorithms)]
    assert {"MD5", "SHA-256"} <= set(store.algorithms)


def test_algorithms_can_be_limited(path):
    store = AccountStore(path, REALMS, algorithms=["SHA-256-sess"], watch=False)
    store.start()
    try:
        store.set_password("alice", "pw")
        assert store.ha1("alice", "example.com", "SHA-256") is not None
        assert store.ha1("alice", "example.com", "MD5") is None
    finally:
        store.stop()


def test_plaintext_never_reaches_the_disk(store, path):
    password = "PlainTextNeedle-42"
    store.set_password("alice", password)
    store.set_password("bob", password + "x")
    data = b""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            with open(path + suffix, "rb") as f:
                data += f.read()
    store.stop()
    with open(path, "rb") as f:
        data += f.read()
    assert digest.ha1("alice", "example.com", password).encode() in data
    for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
        assert password.encode(encoding) not in data


def test_database_file_is_private(store, path):
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_database_made_by_someone_else_becomes_private(path):
    os.makedirs(os.path.dirname(path))
    other = sqlite3.connect(path)
    other.execute("PRAGMA journal_mode=WAL").fetchall()
    other.execute("CREATE TABLE bindings (aor TEXT)")
    other.commit()
    os.chmod(path, 0o644)
    store = AccountStore(path, REALMS, watch=False)
    store.start()
    try:
        store.set_password("alice", "pw")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                assert stat.S_IMODE(os.stat(path + suffix).st_mode) & 0o077 == 0, suffix
    finally:
        store.stop()
        other.close()


def test_exists_names_remove(store):
    assert store.names() == []
    store.set_password("bob", "pw1")
    store.set_password("alice", "pw2")
    assert store.exists("alice") and store.exists("bob") and not store.exists("carol")
    assert store.names() == ["alice", "bob"]
    assert store.remove("alice") is True
    assert store.remove("alice") is False
    assert store.names() == ["bob"]
    assert store.ha1("alice", "example.com", "MD5") is None


def test_passwd_replaces_the_hashes(store):
    store.set_password("alice", "old")
    store.set_password("alice", "new")
    assert store.ha1("alice", "example.com", "MD5") == digest.ha1("alice", "example.com", "new")


def test_rejects_bad_names_and_empty_passwords(store):
    for name in ("", "a b", 'qu"ote', "x@y", "back\\slash", "colon:", "tab\t", "<a>", "a%41"):
        with pytest.raises(ValueError):
            store.set_password(name, "pw")
    with pytest.raises(ValueError):
        store.set_password("alice", "")
    assert store.names() == []
    for name in ("alice.smith", "+4930123", "bob_1-x", "jürgen"):
        store.set_password(name, "pw")
        assert store.exists(name)


def test_lookups_are_memory_only(store):
    store.set_password("alice", "pw")

    class Exploding:
        def __getattr__(self, name):
            raise AssertionError("the database was touched")

    db, store._db = store._db, Exploding()
    try:
        assert store.ha1("alice", "example.com", "SHA-256") is not None
        assert store.exists("alice")
        assert store.names() == ["alice"]
    finally:
        store._db = db


def test_data_survives_a_restart(path):
    first = AccountStore(path, REALMS, watch=False)
    first.start()
    first.set_password("alice", "pw")
    first.stop()
    second = AccountStore(path, REALMS, watch=False)
    second.start()
    try:
        assert second.ha1("alice", "example.org", "MD5") == digest.ha1("alice", "example.org", "pw")
    finally:
        second.stop()


def test_unchanged_password_does_not_rewrite(store, path):
    store.set_password("alice", "pw")
    watcher = sqlite3.connect(path)
    before = watcher.execute("PRAGMA data_version").fetchone()[0]
    store.set_password("alice", "pw")
    assert watcher.execute("PRAGMA data_version").fetchone()[0] == before
    store.set_password("alice", "other")
    assert watcher.execute("PRAGMA data_version").fetchone()[0] != before
    watcher.close()


def test_shares_the_file_with_other_tables(path):
    os.makedirs(os.path.dirname(path))
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE bindings (aor TEXT, contact TEXT)")
    other.execute("INSERT INTO bindings VALUES ('sip:a@example.com', 'sip:a@192.0.2.1')")
    other.commit()
    store = AccountStore(path, REALMS, watch=False)
    store.start()
    try:
        store.set_password("alice", "pw")
        assert other.execute("SELECT count(*) FROM bindings").fetchone()[0] == 1
    finally:
        store.stop()
        other.close()


def test_running_store_sees_outside_changes(path):
    running = AccountStore(path, REALMS, poll_interval=0.05)
    running.start()
    cli = AccountStore(path, REALMS, watch=False)
    cli.start()
    try:
        assert not running.exists("alice")
        cli.set_password("alice", "pw")
        assert wait_for(lambda: running.exists("alice"))
        assert running.ha1("alice", "example.com", "MD5") == digest.ha1("alice", "example.com", "pw")
        cli.set_password("alice", "pw2")
        assert wait_for(lambda: running.ha1("alice", "example.com", "MD5")
                        == digest.ha1("alice", "example.com", "pw2"))
        cli.remove("alice")
        assert wait_for(lambda: not running.exists("alice"))
    finally:
        cli.stop()
        running.stop()
    assert running._watcher is None


def test_stop_is_prompt(path):
    running = AccountStore(path, REALMS)  # default one-second poll
    running.start()
    started = time.monotonic()
    running.stop()
    assert time.monotonic() - started < 1.0


def test_a_table_read_before_our_own_change_is_never_installed(store):
    """The watcher's read can predate a change this process commits right after (the
    `[users]` seeding at start, as the server begins to listen): installing that read would
    forget the change, and a phone registering then would be refused as a wrong password."""
    store.set_password("alice", "a")
    watcher_db = store._connect()
    real_load = store._load

    def read_then_change(db):
        hashes = real_load(db)  # alice only
        store.set_password("bob", "b")  # committed and installed meanwhile
        return hashes

    store._load = read_then_change
    try:
        assert not store._install_loaded(watcher_db)  # stale: read again later
    finally:
        store._load = real_load
    assert store.exists("alice") and store.exists("bob")
    assert store._install_loaded(watcher_db) and store.names() == ["alice", "bob"]
    watcher_db.close()
