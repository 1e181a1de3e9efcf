"""The location service: where the registered contacts of each address-of-record are.

Two stores share one interface:

* :class:`MemoryLocation` keeps bindings in dictionaries and a heap of expiry times.
* :class:`SqliteLocation` is a :class:`MemoryLocation` whose changes are written behind to
  ``state_dir/reticulum.sqlite3`` by a single writer thread in batched transactions.  The
  memory copy stays the working copy, so lookups never touch the disk.

Times are wall-clock seconds as returned by the injected clock's ``seconds()``; the store
itself never reads a clock except :class:`SqliteLocation` at ``start()`` (to drop rows that
lapsed while the server was down).

A binding is *flow-bound* when the registrar found that its Contact cannot be used as
written (RFC 5626 outbound, an ``.invalid`` host, evident NAT: see
:func:`reticulum.registrar.flow_bound`): requests for it go back over the flow its REGISTER
came on.  A flow-bound binding that arrived on a connection-oriented flow (tcp, tls, ws, wss)
and has no Path is *tied to its connection*: when the connection closes
(:meth:`LocationStore.flow_closed`) it is removed at once.  Other bindings outlive the
connection (their Contact is reached anew); bindings with a Path are reached through the
Path's first hop, so a closed connection does not affect them.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from reticulum import events
from reticulum.addresses import STREAM_TRANSPORTS, Flow
from reticulum.config import DATABASE_FILE

__all__ = [
    "Binding",
    "LocationStore",
    "MemoryLocation",
    "SqliteLocation",
    "log_line",
]


_CONNECTION_TRANSPORTS = frozenset(STREAM_TRANSPORTS)


def log_line(log: Any, level: str, message: str) -> None:
    """Log through a stdlib ``logging.Logger`` or a ``twisted.logger.Logger``-like object.

    The message is already formatted; braces are escaped so that loggers which treat the
    first argument as a format string print it verbatim.
    """
    if log is None:
        return
    method = getattr(log, level, None)
    if method is None:
        return
    if not isinstance(log, logging.Logger):
        message = message.replace("{", "{{").replace("}", "}}")
    try:
        method(message)
    except Exception:  # logging must never break the store
        pass


@dataclass
class Binding:
    """One registered contact of one address-of-record."""

    aor: str  # canonical "sip:user@domain" (URI.aor())
    contact: str  # the Contact URI as registered (str(URI))
    expires_at: float  # wall-clock second at which the binding lapses
    q: float = 1.0
    call_id: str = ""
    cseq: int = 0
    instance: str | None = None  # RFC 5626 +sip.instance (without the quotes)
    reg_id: int | None = None  # RFC 5626 reg-id
    path: list[str] = field(default_factory=list)  # RFC 3327 Path values, in order
    flow: Flow | None = None  # the flow the REGISTER arrived on
    params: str = ""  # other Contact params to echo, e.g. '+sip.instance="<urn:...>";reg-id=1'
    registered_at: float = 0.0
    reachable: bool = True  # False: its connection is known to be gone (see module doc)
    flow_bound: bool = True  # reached through `flow`, not at `contact` (see module doc)

    def remaining(self, now: float) -> int:
        """Whole seconds left, rounded up (0 once lapsed)."""
        left = self.expires_at - now
        if left <= 0:
            return 0
        # round() first so float noise such as 3600.0000001 does not turn into 3601
        return max(0, int(math.ceil(round(left, 6))))

    @property
    def tied_to_connection(self) -> bool:
        """True when the flow is a connection and it is the only way to reach the contact."""
        return (self.flow_bound and self.flow is not None and _is_connection(self.flow)
                and not self.path)


def _is_connection(flow: Any) -> bool:
    return str(getattr(flow, "transport", "udp")).lower() in _CONNECTION_TRANSPORTS


def _order_key(binding: Binding) -> tuple[float, float]:
    return (-binding.q, -binding.registered_at)


class LocationStore:
    """The interface the registrar, the proxy and the core use."""

    #: seconds a REGISTER refused while the store is not writable is told to wait
    retry_after = 5

    @property
    def writable(self) -> bool:
        """False while changes cannot be stored (a shared store out of reach): the proxy
        then refuses REGISTER with 503 and a Retry-After of ``retry_after`` seconds."""
        return True

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live, reachable bindings of ``aor``: by q (highest first), then most recent."""
        raise NotImplementedError

    def bindings(self, aor: str, now: float) -> list[Binding]:
        """Same as :meth:`lookup`; what the registrar lists in its 200."""
        return self.lookup(aor, now)

    def get(self, aor: str, contact: str) -> Binding | None:
        """The stored binding of (aor, contact), even lapsed or unreachable."""
        raise NotImplementedError

    def find_instance(self, aor: str, instance: str, reg_id: int | None) -> list[Binding]:
        """Stored bindings of ``aor`` with that +sip.instance and reg-id."""
        raise NotImplementedError

    def find_contact(self, contact: str, now: float) -> Binding | None:
        """The live, reachable binding registered with exactly this Contact URI (any AOR;
        the most recent one if several), so that a request sent straight to a registered
        contact can use its flow."""
        raise NotImplementedError

    def put(self, binding: Binding) -> None:
        """Store ``binding``, replacing the one with the same (aor, contact) and any with
        the same (aor, instance, reg-id) when both are set."""
        raise NotImplementedError

    def remove(self, aor: str, contact: str) -> Binding | None:
        raise NotImplementedError

    def remove_all(self, aor: str) -> list[Binding]:
        raise NotImplementedError

    def flow_closed(self, flow: Flow) -> list[Binding]:
        """Drop the bindings tied to that (now closed) connection; returns them."""
        raise NotImplementedError

    def sweep(self, now: float) -> int:
        """Remove lapsed bindings; returns how many."""
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def aors(self) -> Iterable[str]:
        raise NotImplementedError

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class MemoryLocation(LocationStore):
    """Bindings in memory.

    * ``_aors``: aor -> {contact -> Binding}
    * ``_flows``: connection flow -> {(aor, contact): None} for bindings tied to it
    * ``_contacts``: contact -> {aor: None}
    * ``_heap``: (expires_at, seq, aor, contact); stale entries are skipped when popped and
      the heap is rebuilt whenever it grows past twice the number of bindings, so
      re-registrations cannot make it grow without bound.
    """

    def __init__(self) -> None:
        self._aors: dict[str, dict[str, Binding]] = {}
        self._flows: dict[Any, dict[tuple[str, str], None]] = {}
        self._contacts: dict[str, dict[str, None]] = {}
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._count = 0

    # -- hooks for write-behind subclasses -------------------------------------------------

    def _persist_put(self, binding: Binding) -> None:
        pass

    def _persist_remove(self, aor: str, contact: str) -> None:
        pass

    def _persist_remove_all(self, aor: str) -> None:
        pass

    # -- reads -----------------------------------------------------------------------------

    def lookup(self, aor: str, now: float) -> list[Binding]:
        contacts = self._aors.get(aor)
        if not contacts:
            return []
        found = [b for b in contacts.values() if b.expires_at > now and b.reachable]
        found.sort(key=_order_key)
        return found

    def get(self, aor: str, contact: str) -> Binding | None:
        contacts = self._aors.get(aor)
        if not contacts:
            return None
        return contacts.get(contact)

    def find_instance(self, aor: str, instance: str, reg_id: int | None) -> list[Binding]:
        contacts = self._aors.get(aor)
        if not contacts:
            return []
        return [b for b in contacts.values() if b.instance == instance and b.reg_id == reg_id]

    def find_contact(self, contact: str, now: float) -> Binding | None:
        aors = self._contacts.get(contact)
        if not aors:
            return None
        best = None
        for aor in aors:
            binding = self._aors[aor][contact]
            if binding.expires_at > now and binding.reachable:
                if best is None or binding.registered_at > best.registered_at:
                    best = binding
        return best

    def count(self) -> int:
        return self._count

    def aors(self) -> list[str]:
        return list(self._aors)

    # -- writes ----------------------------------------------------------------------------

    def put(self, binding: Binding) -> None:
        aor = binding.aor
        if binding.instance is not None and binding.reg_id is not None:
            for other in self.find_instance(aor, binding.instance, binding.reg_id):
                if other.contact != binding.contact:
                    self._drop(other)
                    self._persist_remove(aor, other.contact)
                    if events.listening:
                        events.emit("registration", action="removed", binding=other,
                                    reason="replaced")
        contacts = self._aors.get(aor)
        if contacts is None:
            contacts = self._aors[aor] = {}
        old = contacts.get(binding.contact)
        if old is not None:
            self._unindex_flow(old)
        else:
            self._count += 1
            self._contacts.setdefault(binding.contact, {})[aor] = None
        contacts[binding.contact] = binding
        self._index(binding)
        self._persist_put(binding)
        if events.listening:
            events.emit("registration", action="refreshed" if old else "added", binding=binding)

    def remove(self, aor: str, contact: str) -> Binding | None:
        binding = self.get(aor, contact)
        if binding is None:
            return None
        self._drop(binding)
        self._persist_remove(aor, contact)
        if events.listening:
            events.emit("registration", action="removed", binding=binding, reason="unregistered")
        return binding

    def remove_all(self, aor: str) -> list[Binding]:
        contacts = self._aors.get(aor)
        if not contacts:
            return []
        removed = list(contacts.values())
        for binding in removed:
            self._drop(binding)
            if events.listening:
                events.emit("registration", action="removed", binding=binding,
                            reason="unregistered")
        self._persist_remove_all(aor)
        return removed

    def flow_closed(self, flow: Flow) -> list[Binding]:
        keys = self._flows.pop(flow, None)
        if not keys:
            return []
        removed = []
        for aor, contact in list(keys):
            binding = self.get(aor, contact)
            if binding is None or binding.flow != flow:
                continue
            self._drop(binding)
            self._persist_remove(aor, contact)
            removed.append(binding)
            if events.listening:
                events.emit("registration", action="removed", binding=binding,
                            reason="connection closed")
        return removed

    def sweep(self, now: float) -> int:
        heap = self._heap
        removed = 0
        while heap and heap[0][0] <= now:
            expires_at, _seq, aor, contact = heapq.heappop(heap)
            binding = self.get(aor, contact)
            if binding is None or binding.expires_at != expires_at:
                continue  # stale entry: removed or re-registered since
            self._drop(binding)
            self._persist_remove(aor, contact)
            removed += 1
            if events.listening:
                events.emit("registration", action="expired", binding=binding)
        return removed

    # -- internals -------------------------------------------------------------------------

    def _index(self, binding: Binding) -> None:
        heapq.heappush(
            self._heap, (binding.expires_at, next(self._seq), binding.aor, binding.contact)
        )
        if len(self._heap) > 2 * self._count + 1024:
            self._rebuild_heap()
        if binding.reachable and binding.tied_to_connection:
            self._flows.setdefault(binding.flow, {})[(binding.aor, binding.contact)] = None

    def _unindex_flow(self, binding: Binding) -> None:
        if binding.flow is None:
            return
        keys = self._flows.get(binding.flow)
        if keys is None:
            return
        keys.pop((binding.aor, binding.contact), None)
        if not keys:
            del self._flows[binding.flow]

    def _drop(self, binding: Binding) -> None:
        """Forget ``binding`` in memory (its heap entry goes stale)."""
        contacts = self._aors.get(binding.aor)
        if not contacts or contacts.get(binding.contact) is not binding:
            return
        del contacts[binding.contact]
        if not contacts:
            del self._aors[binding.aor]
        self._count -= 1
        self._unindex_flow(binding)
        aors = self._contacts.get(binding.contact)
        if aors is not None:
            aors.pop(binding.aor, None)
            if not aors:
                del self._contacts[binding.contact]

    def _rebuild_heap(self) -> None:
        self._heap = [
            (b.expires_at, next(self._seq), b.aor, b.contact)
            for contacts in self._aors.values()
            for b in contacts.values()
        ]
        heapq.heapify(self._heap)


# -- SQLite write-behind -------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    expires_at REAL NOT NULL,
    q REAL NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    instance TEXT,
    reg_id INTEGER,
    path TEXT NOT NULL,
    params TEXT NOT NULL,
    registered_at REAL NOT NULL,
    transport TEXT,
    local_host TEXT,
    local_port INTEGER,
    remote_host TEXT,
    remote_port INTEGER,
    conn INTEGER,
    flow_bound INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (aor, contact)
)
"""

_COLUMNS = (
    "aor, contact, expires_at, q, call_id, cseq, instance, reg_id, path, params, "
    "registered_at, transport, local_host, local_port, remote_host, remote_port, conn, flow_bound"
)

_NCOLUMNS = 18


_NO_FLOW = (None, None, None, None, None, None)


def _row(binding: Binding) -> tuple:
    flow = binding.flow
    path = binding.path
    row = (
        binding.aor,
        binding.contact,
        float(binding.expires_at),
        float(binding.q),
        binding.call_id,
        int(binding.cseq),
        binding.instance,
        binding.reg_id,
        json.dumps(list(path)) if path else "[]",
        binding.params,
        float(binding.registered_at),
    )
    bound = 1 if binding.flow_bound else 0
    if flow is None:
        return row + _NO_FLOW + (bound,)
    local = flow.local
    remote = flow.remote
    return row + (flow.transport, local[0], int(local[1]), remote[0], int(remote[1]),
                  int(flow.conn), bound)


#: rows per INSERT statement (SQLite allows 32766 bound variables since 3.32, 999 before)
_ROWS_PER_INSERT = 999 // _NCOLUMNS if sqlite3.sqlite_version_info < (3, 32) else 32766 // _NCOLUMNS
#: keys per DELETE statement
_KEYS_PER_DELETE = 999 // 2 if sqlite3.sqlite_version_info < (3, 32) else 32766 // 2


def _insert_sql(rows: int) -> str:
    one = "(" + ", ".join("?" * _NCOLUMNS) + ")"
    return f"INSERT OR REPLACE INTO bindings ({_COLUMNS}) VALUES " + ", ".join([one] * rows)


def _delete_sql(keys: int) -> str:
    return ("DELETE FROM bindings WHERE (aor, contact) IN (VALUES "
            + ", ".join(["(?, ?)"] * keys) + ")")


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _SystemClock:
    def seconds(self) -> float:
        return time.time()


# writer-queue operations
_PUT, _DEL, _DEL_AOR, _FLUSH, _STOP = range(5)


class SqliteLocation(MemoryLocation):
    """:class:`MemoryLocation` persisted to ``state_dir/reticulum.sqlite3`` (table ``bindings``).

    ``state_dir`` may also name the database file itself (anything with a file extension,
    or an existing file), e.g. ``state_dir/reticulum.sqlite3``; other stores may keep their
    own tables in the same file.

    Every change is queued for one writer thread, which commits whatever has queued up in
    one transaction once ``batch_interval`` seconds have passed since the first change of
    the batch or ``batch_size`` changes are waiting.  A crash loses at most that window.

    ``start()`` loads unexpired rows (call it before listening); bindings that were tied to
    a connection come back unreachable (that connection is gone) until the client
    registers again or they lapse; the others are usable at once.  ``stop()`` commits what
    is queued and joins the writer.  ``flush()`` waits until everything queued so far is
    committed.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike,
        clock: Any = None,
        batch_interval: float = 0.05,
        batch_size: int = 500,
        log: Any = None,
    ) -> None:
        super().__init__()
        where = os.fspath(state_dir)
        if os.path.isfile(where) or (
            not os.path.isdir(where) and os.path.splitext(where)[1] != ""
        ):
            self.path = where
            self.state_dir = os.path.dirname(where) or "."
        else:
            self.state_dir = where
            self.path = os.path.join(where, DATABASE_FILE)
        self._clock = clock if clock is not None else _SystemClock()
        self.batch_interval = float(batch_interval)
        self.batch_size = max(1, int(batch_size))
        self._log = log if log is not None else logging.getLogger("reticulum.location")
        # Changes waiting for the writer: the reactor thread appends (deque.append is
        # atomic), the writer takes them from the left. _wake tells the writer a batch has
        # begun (or a flush/stop is waiting); _full that it need not wait out the interval.
        self._pending: deque = deque()
        self._wake = threading.Event()
        self._full = threading.Event()
        self._markers = 0  # flush/stop markers queued and not yet reached
        self._marker_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._sql_cache: dict = {}
        #: transactions committed by the writer (for monitoring and tests)
        self.commits = 0
        #: changes written by the writer
        self.written = 0
        #: batches that failed to commit
        self.errors = 0

    # -- persistence hooks -----------------------------------------------------------------

    def _enqueue(self, op: tuple) -> None:
        if self._thread is not None:
            pending = self._pending
            pending.append(op)
            size = len(pending)
            if size == 1:
                self._wake.set()
            elif size == self.batch_size:
                self._full.set()  # the writer looks at the length again before it waits

    def _signal(self, op: tuple) -> None:
        """Queue a flush or stop marker and have the writer act on it now."""
        with self._marker_lock:
            self._markers += 1
            self._pending.append(op)
        self._full.set()
        self._wake.set()

    def _persist_put(self, binding: Binding) -> None:
        self._enqueue((_PUT, _row(binding)))

    def _persist_remove(self, aor: str, contact: str) -> None:
        self._enqueue((_DEL, (aor, contact)))

    def _persist_remove_all(self, aor: str) -> None:
        self._enqueue((_DEL_AOR, (aor,)))

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        os.makedirs(self.state_dir, exist_ok=True)
        now = self._clock.seconds()
        db = sqlite3.connect(self.path)
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchall()
            db.execute(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(bindings)")}
            if "flow_bound" not in columns:  # a file from before the column existed
                db.execute("ALTER TABLE bindings ADD COLUMN flow_bound INTEGER NOT NULL DEFAULT 1")
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM bindings WHERE expires_at > ?", (now,)
            ).fetchall()
            db.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
            db.commit()
        finally:
            db.close()
        # the writer is not running yet, so these puts are not written back
        restored = 0
        for row in rows:
            self.put(self._from_row(row))
            restored += 1
        log_line(self._log, "info", f"location: restored {restored} bindings from {self.path}")
        self._thread = threading.Thread(
            target=self._writer, name="reticulum-location-writer", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._signal((_STOP, None))
        thread.join()
        self._thread = None

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every change queued so far is committed; False on timeout."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._signal((_FLUSH, done))
        return done.wait(timeout)

    # -- restore ---------------------------------------------------------------------------

    def _from_row(self, row: tuple) -> Binding:
        (aor, contact, expires_at, q, call_id, cseq, instance, reg_id, path, params,
         registered_at, transport, local_host, local_port, remote_host, remote_port,
         conn, bound) = row
        try:
            path_list = [str(p) for p in json.loads(path or "[]")]
        except ValueError:
            path_list = []
        flow = None
        if transport:
            flow = Flow(
                transport=transport,
                local=(local_host, int(local_port or 0)),
                remote=(remote_host, int(remote_port or 0)),
                conn=int(conn or 0),
            )
        binding = Binding(
            aor=aor,
            contact=contact,
            expires_at=float(expires_at),
            q=float(q),
            call_id=call_id or "",
            cseq=int(cseq or 0),
            instance=instance,
            reg_id=None if reg_id is None else int(reg_id),
            path=path_list,
            flow=flow,
            params=params or "",
            registered_at=float(registered_at or 0.0),
            flow_bound=bool(bound),
        )
        if binding.tied_to_connection:
            binding.reachable = False
        return binding

    # -- the writer thread -----------------------------------------------------------------

    def _writer(self) -> None:
        """The writer thread: wait for work, let a batch fill, commit it; until told to stop."""
        db = self._open()
        pending = self._pending
        wake = self._wake
        while True:
            wake.wait()
            wake.clear()
            if not pending:
                continue
            self._let_batch_fill()
            if self._drain(db):
                break
            if pending:
                wake.set()
        if db is not None:
            try:
                db.close()
            except sqlite3.Error:
                pass

    def _open(self) -> sqlite3.Connection | None:
        try:
            # off the reactor thread, so waiting out another writer of the file is fine
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            db.execute("PRAGMA journal_mode=WAL").fetchall()
            db.execute("PRAGMA synchronous=NORMAL")
            return db
        except sqlite3.Error as e:
            log_line(self._log, "error", f"location: cannot open {self.path}: {e}")
            return None

    def _let_batch_fill(self) -> None:
        """A batch has begun: let it fill for batch_interval, unless it is full already or a
        flush/stop is waiting."""
        pending, full, batch_size = self._pending, self._full, self.batch_size
        monotonic = time.monotonic
        deadline = monotonic() + self.batch_interval
        while not self._markers and len(pending) < batch_size:
            left = deadline - monotonic()
            if left <= 0:
                break
            full.clear()
            if self._markers or len(pending) >= batch_size:
                break
            full.wait(left)

    def _drain(self, db: sqlite3.Connection | None) -> bool:
        """Commit what is pending, a batch at a time, waking whoever waits for a flush; True
        when a stop was reached."""
        pending = self._pending
        while pending:
            batch, waiters, stopping = self._take_batch()
            if batch:
                self._commit(db, batch)
            for done in waiters:
                done.set()
            if stopping:
                return True
            if not waiters and not self._markers and len(pending) < self.batch_size:
                break  # what is left starts the next batch, with its own interval
        return False

    def _take_batch(self) -> tuple[list[tuple], list[threading.Event], bool]:
        """Up to batch_size changes, ending early at a flush (its event is returned) or a stop
        (True)."""
        pending = self._pending
        batch: list[tuple] = []
        waiters: list[threading.Event] = []
        while pending and len(batch) < self.batch_size:
            op = pending.popleft()
            kind = op[0]
            if kind == _STOP or kind == _FLUSH:
                with self._marker_lock:
                    self._markers -= 1
                if kind == _STOP:
                    return batch, waiters, True
                waiters.append(op[1])
                break
            batch.append(op)
        return batch, waiters, False

    def _sql(self, make, count: int) -> str:
        key = (make, count)
        sql = self._sql_cache.get(key)
        if sql is None:
            if len(self._sql_cache) > 64:
                self._sql_cache.clear()
            sql = self._sql_cache[key] = make(count)
        return sql

    def _commit(self, db: sqlite3.Connection | None, batch: list[tuple]) -> None:
        """One transaction for the batch. Runs of puts and of single removals become one
        statement each (a few bound-variable steps instead of one statement per row), so
        the writer takes the interpreter lock rarely and briefly; order is kept."""
        if db is None:
            self.errors += 1
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            i = 0
            n = len(batch)
            while i < n:
                kind = batch[i][0]
                j = i + 1
                while j < n and batch[j][0] == kind:
                    j += 1
                run = batch[i:j]
                if kind == _PUT:
                    for part in _chunks(run, _ROWS_PER_INSERT):
                        values = [v for _, row in part for v in row]
                        db.execute(self._sql(_insert_sql, len(part)), values)
                elif kind == _DEL:
                    for part in _chunks(run, _KEYS_PER_DELETE):
                        values = [v for _, key in part for v in key]
                        db.execute(self._sql(_delete_sql, len(part)), values)
                else:
                    for _, args in run:
                        db.execute("DELETE FROM bindings WHERE aor = ?", args)
                i = j
            db.execute("COMMIT")
            self.written += n
            self.commits += 1
        except Exception as e:  # keep the writer alive whatever happens
            self.errors += 1
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            log_line(self._log, "error", f"location: lost {len(batch)} changes: {e}")
