"""Local accounts: digest HA1 hashes per user, realm and algorithm, kept in SQLite.

Only H(user:realm:password) is stored, once per served realm and per hash algorithm, never the
password. The running server answers every lookup from memory; a background thread watches
the database (`PRAGMA data_version`) and swaps in a freshly loaded table when another process
— `python -m reticulum.users` — changed it, so account changes apply without a restart.

Table (shared database file `state_dir/reticulum.sqlite3`, next to other modules' tables):

    accounts(name, realm, algorithm, ha1, PRIMARY KEY(name, realm, algorithm))
"""
from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
from typing import Any, Dict, FrozenSet, Iterable, Tuple

from twisted.logger import Logger

from reticulum.sip import digest

# Every hash this Python offers (MD5, SHA-256, SHA-512-256): the algorithms a server accepts
# are configuration, and switching them must not require new passwords.
DEFAULT_ALGORITHMS = tuple(a for a in digest.SUPPORTED_ALGORITHMS if not a.endswith("-sess"))
BUSY_TIMEOUT_MS = 5000
POLL_INTERVAL = 1.0

# Names go into SIP URIs (user part) and Digest `username="..."`: no blanks or control
# characters, nothing that ends a URI user part or needs quoting.
_NAME_FORBIDDEN = re.compile(r'[\s\x00-\x1f\x7f@:"\\<>%]')

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT NOT NULL,
    realm TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    ha1 TEXT NOT NULL,
    PRIMARY KEY (name, realm, algorithm)
)
"""

Hashes = Dict[Tuple[str, str, str], str]  # (name, realm, algorithm) -> HA1 hex


def _run(db: sqlite3.Connection, sql: str, params: tuple = ()) -> list:
    """Execute and finish one statement. (PyPy's sqlite3 keeps unread statements open, and
    an open statement makes COMMIT fail.)"""
    cursor = db.execute(sql, params)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


def _make_private(path: str) -> None:
    """Password-equivalent hashes live in the file: nobody but its owner may read it (SQLite
    gives the -wal and -shm files the database file's mode when it creates them)."""
    for name in (path, path + "-wal", path + "-shm"):
        try:
            mode = os.stat(name).st_mode
            if mode & 0o077:
                os.chmod(name, mode & 0o700)
        except OSError:
            pass  # absent, or not ours to change


def valid_name(name: str) -> bool:
    return bool(name) and len(name) <= 128 and _NAME_FORBIDDEN.search(name) is None


def base_algorithms(algorithms: Iterable[str]) -> tuple[str, ...]:
    found: list[str] = []
    for algorithm in algorithms:
        base = digest.base_algorithm(algorithm)
        if base not in found:
            found.append(base)
    return tuple(found)


class AccountLookups:
    """What the authenticator asks an account store, answered from memory: `_state` is
    (hashes by (name, realm, algorithm), names), replaced as a whole by the store."""

    _state: Tuple[Hashes, FrozenSet[str]]

    def ha1(self, name: str, realm: str, algorithm: str) -> str | None:
        try:
            algorithm = digest.base_algorithm(algorithm)
        except ValueError:
            return None
        return self._state[0].get((name, realm, algorithm))

    def exists(self, name: str) -> bool:
        return name in self._state[1]

    def names(self) -> list[str]:
        return sorted(self._state[1])

    def _install(self, hashes: Hashes) -> None:
        self._state = (hashes, frozenset(name for name, _, _ in hashes))


class AccountStore(AccountLookups):
    """HA1 hashes in memory, written through to SQLite, reloaded when the file changes."""

    def __init__(
        self,
        path: str,
        realms: list[str],
        algorithms: Iterable[str] | None = None,
        watch: bool = True,
        poll_interval: float = POLL_INTERVAL,
        log: Any = None,
    ) -> None:
        if not realms:
            raise ValueError("at least one realm is needed")
        self.path = path
        self.realms = list(realms)
        # None: every supported algorithm, so enabling one later needs no new passwords.
        self.algorithms = base_algorithms(DEFAULT_ALGORITHMS if algorithms is None else algorithms)
        self.watch = watch
        self.poll_interval = poll_interval
        self.log = log if log is not None else Logger()
        # (hashes, names): replaced as a whole, never mutated, so readers need no lock.
        self._state: Tuple[Hashes, FrozenSet[str]] = ({}, frozenset())
        self._db: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        # this process's own changes install under this lock and count in _changes, so the
        # watcher never installs a table it read before one of them (it reads again instead)
        self._install_lock = threading.Lock()
        self._changes = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if not os.path.exists(self.path):
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
        _make_private(self.path)
        db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000.0, isolation_level=None,
            check_same_thread=False,
        )
        _run(db, "PRAGMA busy_timeout=%d" % BUSY_TIMEOUT_MS)
        _run(db, "PRAGMA journal_mode=WAL")
        return db

    def start(self) -> None:
        """Create the table and load every hash (synchronously, at start-up)."""
        self._db = self._connect()
        with self._write_lock:
            _run(self._db, _SCHEMA)
        self._install(self._load(self._db))
        if self.watch and self._watcher is None:
            self._stopping.clear()
            self._watcher = threading.Thread(
                target=self._watch, name="reticulum-accounts", daemon=True
            )
            self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.join(timeout=max(5.0, 3 * self.poll_interval))
        if self._db is not None:
            with self._write_lock:
                self._db.close()
            self._db = None

    # -- changes (write through) ---------------------------------------------------------------

    def set_password(self, name: str, password: str) -> None:
        """Store HA1 for every realm and algorithm, replacing whatever the name had."""
        if not valid_name(name):
            raise ValueError("invalid user name: %r" % (name,))
        if not password:
            raise ValueError("empty password")
        rows = [
            (name, realm, algorithm, digest.ha1(name, realm, password, algorithm))
            for realm in self.realms
            for algorithm in self.algorithms
        ]
        wanted = {(n, r, a): h for n, r, a, h in rows}
        current = {k: v for k, v in self._state[0].items() if k[0] == name}
        if current == wanted:
            return  # unchanged (e.g. `[users]` seeding at every start): leave the file alone
        db = self._require_db()
        with self._write_lock:
            _run(db, "BEGIN IMMEDIATE")
            try:
                _run(db, "DELETE FROM accounts WHERE name = ?", (name,))
                for row in rows:
                    _run(db, "INSERT INTO accounts (name, realm, algorithm, ha1) "
                             "VALUES (?, ?, ?, ?)", row)
                _run(db, "COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    _run(db, "ROLLBACK")
                raise
        self._install_own(name, wanted)

    def remove(self, name: str) -> bool:
        """Forget a user; False when there was nothing to remove."""
        db = self._require_db()
        with self._write_lock:
            cursor = db.execute("DELETE FROM accounts WHERE name = ?", (name,))
            removed = cursor.rowcount
            cursor.close()
        self._install_own(name, {})
        return removed > 0

    def reload(self) -> None:
        """Load the table again now (the watcher does this by itself)."""
        while not self._install_loaded(self._require_db()):
            pass

    # -- internals -----------------------------------------------------------------------------

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("AccountStore is not started")
        return self._db

    def _install_own(self, name: str, wanted: Hashes) -> None:
        """After this process committed a change to `name`: its rows become `wanted`."""
        with self._install_lock:
            hashes = {k: v for k, v in self._state[0].items() if k[0] != name}
            hashes.update(wanted)
            self._changes += 1
            self._install(hashes)

    def _install_loaded(self, db: sqlite3.Connection) -> bool:
        """Load the table and install it, unless this process changed an account meanwhile
        (the table read may predate that change): then False, and the caller reads again."""
        mark = self._changes
        hashes = self._load(db)
        with self._install_lock:
            if self._changes != mark:
                return False
            self._install(hashes)
            return True

    def _load(self, db: sqlite3.Connection) -> Hashes:
        with self._write_lock if db is self._db else contextlib.nullcontext():
            rows = _run(db, "SELECT name, realm, algorithm, ha1 FROM accounts")
        return {(name, realm, algorithm): ha1 for name, realm, algorithm, ha1 in rows}

    def _watch(self) -> None:
        """Background thread: reload when another connection committed a change."""
        db = None
        version = None
        while not self._stopping.wait(self.poll_interval if db is not None else 0):
            try:
                if db is None:
                    db = self._connect()
                    version = _run(db, "PRAGMA data_version")[0][0]
                    # Anything committed between start() and now:
                    if not self._install_loaded(db):
                        version = None  # read again at the next poll
                    continue
                now = _run(db, "PRAGMA data_version")[0][0]
                if now != version:
                    version = now
                    if not self._install_loaded(db):
                        version = None
            except sqlite3.Error as e:
                self.log.warn("Account store: cannot read {path}: {error}",
                              path=self.path, error=e)
                if db is not None:
                    try:
                        db.close()
                    except sqlite3.Error:
                        pass
                db = None
                if self._stopping.wait(self.poll_interval):
                    break
        if db is not None:
            db.close()

