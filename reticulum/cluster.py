"""Many nodes, one location service: bindings, accounts and secrets shared through Redis.

With ``[cluster] redis = "redis://host:port/db"`` every node keeps the bindings in memory as
before (:class:`RedisLocation` is a :class:`~reticulum.location.MemoryLocation`: the proxy
never waits on Redis), writes its own changes to Redis from one writer thread, and hears the
other nodes' changes on a pub/sub channel, applied to its cache on the reactor thread.

Keys (all under ``prefix``, default ``reticulum:``)::

    b:<aor>          hash  contact -> binding record (JSON, see _record)
    aors             set   every aor with a b:<aor> hash
    owned:<node>     set   "aor\\ncontact" of the flow-bound bindings that node holds
    nodes            hash  node -> its address ("host:port")
    alive:<node>     string with a time to live, refreshed by the node (its heartbeat)
    secret:<file>    the shared content of state_dir/<file> (nonce and route-token key)
    accounts         hash  "name\\trealm\\talgorithm" -> HA1
    changes          channel: binding changes (JSON)
    accounts         channel: "changed"

A binding reachable only over a connection the node holds (``flow_bound``) is published with
the node's own address as first Path entry (RFC 3327), so any other node sends requests for
it through the owner, which holds the flow. When a node's heartbeat lapses, another node
removes the flow-bound bindings it owned; its other bindings stay.

Losing Redis: lookups go on from the cache; changes queue up in the writer and are written
when Redis is back; :attr:`RedisLocation.writable` is False meanwhile, which makes the proxy
answer REGISTER with 503 and a Retry-After.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple, cast

import redis
from redis.commands.core import Script

from reticulum import events
from reticulum.accounts import DEFAULT_ALGORITHMS, AccountLookups, base_algorithms, valid_name
from reticulum.addresses import advertised_host, hostport
from reticulum.location import Binding, MemoryLocation, log_line
from reticulum.sip import digest

__all__ = ["Cluster", "RedisLocation", "RedisAccounts", "share_secret_files", "SECRET_FILES",
           "RETRY_AFTER"]

#: files of state_dir whose content every node must share (nonce and route-token key)
SECRET_FILES = ("nonce.secret",)
#: seconds a REGISTER refused for want of Redis is told to wait
RETRY_AFTER = 5
#: a node's heartbeat is refreshed this often (seconds) and lapses after NODE_TTL
HEARTBEAT = 1.0
NODE_TTL = 5.0
#: the writer waits this long before retrying a change Redis did not take
RETRY_DELAY = 0.5
#: changes written in one round trip, and how long the writer lets them gather (seconds)
BATCH = 256
BATCH_INTERVAL = 0.01

_log = logging.getLogger("reticulum.cluster")


#: what a lost or unreachable Redis raises (the others are bugs or bad data)
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _client(url: str) -> redis.Redis:
    """A client that decodes replies: redis-py types them ``bytes | str`` whatever
    ``decode_responses`` says, so the replies read below are cast to ``str``."""
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0,
                                decode_responses=True)


def _close(pubsub: Any) -> None:
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception:
            pass


def _listen(client: redis.Redis, channel: str, stopping: threading.Event,
            subscribed: Callable[[], None], heard: Callable[[List[str]], None],
            lost: Callable[[Exception], None], failed: Callable[[Exception], None]) -> None:
    """Listen on ``channel`` until ``stopping`` is set (a thread's body).

    After every (re)subscription ``subscribed()`` catches up with what was said while
    nobody listened; the messages that arrived together (up to BATCH) go to ``heard`` in
    one call. A Redis error goes to ``lost``, and the loop subscribes again after
    RETRY_DELAY; any other error of the handlers goes to ``failed``."""
    pubsub = None
    while not stopping.is_set():
        try:
            if pubsub is None:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                subscribed()
            message = pubsub.get_message(timeout=0.5)
            data: List[str] = []
            while message is not None and len(data) < BATCH:
                if message.get("type") == "message":
                    data.append(message["data"])
                message = pubsub.get_message(timeout=0)
            if data:
                heard(data)
        except REDIS_ERRORS as e:
            lost(e)
            _close(pubsub)
            pubsub = None
            stopping.wait(RETRY_DELAY)
        except Exception as e:
            failed(e)
    _close(pubsub)


# -- records -------------------------------------------------------------------------------

def _record(binding: Binding, node: str, version: str, own_path: str | None) -> str:
    """A binding as stored in Redis. A flow-bound binding the node holds gets the node's
    own Path entry first: it can only be reached through that node."""
    path = list(binding.path)
    owned = binding.flow_bound and binding.flow is not None and not binding.path
    if owned and own_path:
        path.insert(0, own_path)
    return json.dumps({
        "c": binding.contact, "e": binding.expires_at, "q": binding.q, "ci": binding.call_id,
        "cs": binding.cseq, "i": binding.instance, "r": binding.reg_id, "p": path,
        "pa": binding.params, "t": binding.registered_at, "fb": binding.flow_bound,
        "n": node, "o": owned, "v": version,
    }, separators=(",", ":"))


def _binding(aor: str, rec: Dict[str, Any]) -> Binding:
    """A binding another node holds: no flow here, reached at its Contact or its Path."""
    return Binding(
        aor=aor, contact=rec["c"], expires_at=float(rec["e"]), q=float(rec.get("q", 1.0)),
        call_id=rec.get("ci") or "", cseq=int(rec.get("cs") or 0), instance=rec.get("i"),
        reg_id=rec.get("r"), path=[str(p) for p in rec.get("p") or ()], flow=None,
        params=rec.get("pa") or "", registered_at=float(rec.get("t") or 0.0),
        flow_bound=bool(rec.get("fb")),
    )


# Conditional removal: only the version the remover knew (a newer registration made on
# another node meanwhile stays), or only when lapsed (a sweep).
_REMOVE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local rec = cjson.decode(cur)
if ARGV[2] ~= '' and rec.v ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' and tonumber(rec.e) > tonumber(ARGV[3]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[4]) end
if rec.o then redis.call('SREM', ARGV[5] .. 'owned:' .. rec.n, ARGV[4] .. '\\n' .. ARGV[1]) end
redis.call('PUBLISH', ARGV[5] .. 'changes', cjson.encode({op='d', a=ARGV[4], c=ARGV[1], v=rec.v, n=ARGV[6]}))
return 1
"""

_REMOVE_AOR = """
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local rec = cjson.decode(all[i + 1])
  if rec.o then redis.call('SREM', ARGV[2] .. 'owned:' .. rec.n, ARGV[1] .. '\\n' .. all[i]) end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2] .. 'changes', cjson.encode({op='D', a=ARGV[1], n=ARGV[3]}))
return #all / 2
"""

# A dead node's flow-bound bindings go (those it still owns: a client may have registered
# the same contact through another node since).
_REAP = """
local members = redis.call('SMEMBERS', KEYS[1])
local removed = 0
for _, member in ipairs(members) do
  local nl = string.find(member, '\\n', 1, true)
  local aor = string.sub(member, 1, nl - 1)
  local contact = string.sub(member, nl + 1)
  local key = ARGV[1] .. 'b:' .. aor
  local cur = redis.call('HGET', key, contact)
  if cur then
    local rec = cjson.decode(cur)
    if rec.n == ARGV[2] and rec.o then
      redis.call('HDEL', key, contact)
      if redis.call('HLEN', key) == 0 then redis.call('SREM', ARGV[1] .. 'aors', aor) end
      redis.call('PUBLISH', ARGV[1] .. 'changes', cjson.encode({op='d', a=aor, c=contact, v=rec.v, n=ARGV[3]}))
      removed = removed + 1
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', ARGV[1] .. 'nodes', ARGV[2])
return removed
"""

_PUT, _DEL, _DEL_AOR, _FLUSH = range(4)


class RedisLocation(MemoryLocation):
    """The location service shared through Redis (see the module docstring).

    ``call_in_main(f, *args)`` runs ``f`` on the thread that owns the cache (the reactor's
    ``callFromThread``); the store's own threads never touch the cache directly.
    """

    def __init__(self, url: str, node: str, own_path: str | None = None,
                 call_in_main: Callable[..., Any] | None = None, prefix: str = "reticulum:",
                 clock: Any = None, log: Any = None) -> None:
        super().__init__()
        self.url = url
        self.node = node
        self.own_path = own_path
        self.prefix = prefix
        self.channel = prefix + "changes"
        self._call_in_main = call_in_main or (lambda f, *a: f(*a))
        self._clock = clock
        self._log = log if log is not None else _log
        #: (aor, contact) -> version of the cached binding
        self._versions: Dict[Tuple[str, str], Optional[str]] = {}
        self._salt = uuid.uuid4().hex[:8]  # versions: unique across nodes and restarts
        self._serial = itertools.count(1)
        self._hurry = threading.Event()  # a flush waits: write without gathering more
        self._applying = False  # a change from Redis: not written back
        self._sweep_before: float | None = None
        self._pending: deque = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: List[threading.Thread] = []
        self._redis: Optional[redis.Redis] = None
        self._scripts: Dict[str, Script] = {}
        self._writer_ok = True
        self._listener_ok = True
        #: changes written, and changes heard from other nodes (monitoring and tests)
        self.written = 0
        self.heard = 0

    @property
    def writable(self) -> bool:
        """False while Redis cannot be reached (the proxy refuses REGISTER then)."""
        return self._writer_ok and self._listener_ok

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Load every binding from Redis (at start-up: blocking is fine), then start the
        writer and the listener. A node that restarts has lost its connections: its own
        flow-bound bindings are removed first."""
        if self._threads:
            return
        r = self._redis = _client(self.url)
        self._scripts = {
            "remove": r.register_script(_REMOVE),
            "remove_aor": r.register_script(_REMOVE_AOR),
            "reap": r.register_script(_REAP),
        }
        self._scripts["reap"](keys=[self.prefix + "owned:" + self.node],
                              args=[self.prefix, self.node, ""])
        self._install(self._snapshot(r))
        log_line(self._log, "info", "cluster: node %s loaded %d bindings from Redis"
                 % (self.node, self.count()))
        for target, name in ((self._writer, "writer"), (self._listener, "listener")):
            thread = threading.Thread(target=target, args=(r,), name="reticulum-redis-" + name,
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        if not self._threads:
            return
        self.flush(timeout=5.0)
        self._stopping.set()
        self._hurry.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads = []

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every change queued so far reached Redis; False on timeout."""
        if not self._threads:
            return True
        done = threading.Event()
        self._pending.append((_FLUSH, done))
        self._hurry.set()
        self._wake.set()
        return done.wait(timeout)

    # -- persistence hooks (the reactor thread) --------------------------------------------

    def _persist_put(self, binding: Binding) -> None:
        if self._applying:
            return
        version = "%s%x" % (self._salt, next(self._serial))
        key = (binding.aor, binding.contact)
        self._versions[key] = version
        owned = binding.flow_bound and binding.flow is not None and not binding.path
        self._queue((_PUT, binding.aor, binding.contact,
                     _record(binding, self.node, version, self.own_path), owned, version))

    def _persist_remove(self, aor: str, contact: str) -> None:
        version = self._versions.pop((aor, contact), "")
        if self._applying:
            return
        sweep = self._sweep_before
        self._queue((_DEL, aor, contact, "" if sweep is not None else version,
                     "" if sweep is None else repr(sweep)))

    def _persist_remove_all(self, aor: str) -> None:
        for key in [k for k in self._versions if k[0] == aor]:
            del self._versions[key]
        if not self._applying:
            self._queue((_DEL_AOR, aor))

    def sweep(self, now: float) -> int:
        self._sweep_before = now  # removals of lapsed bindings only when still lapsed there
        try:
            return super().sweep(now)
        finally:
            self._sweep_before = None

    def _queue(self, op: tuple) -> None:
        if self._threads:
            self._pending.append(op)
            self._wake.set()

    # -- the writer thread -------------------------------------------------------------------

    def _writer(self, r: redis.Redis) -> None:
        """Writes what queued up, up to BATCH changes per round trip (one pipeline), in
        order; a batch Redis did not take is tried again (every change is idempotent)."""
        pending = self._pending
        while True:
            self._wake.wait()
            self._wake.clear()
            # let a batch gather (a round trip per change would cost more than the change)
            if len(pending) < BATCH and self._hurry.wait(BATCH_INTERVAL):
                self._hurry.clear()
            while pending:
                batch = list(itertools.islice(pending, BATCH))
                try:
                    pipe = r.pipeline(transaction=False)
                    for op in batch:
                        self._add(pipe, op)
                    pipe.execute()
                except REDIS_ERRORS as e:
                    if self._writer_ok:
                        log_line(self._log, "warning", "cluster: Redis unreachable (%s); "
                                 "%d changes wait for it" % (e, len(pending)))
                    self._writer_ok = False
                    if self._stopping.wait(RETRY_DELAY):
                        return
                    continue
                except Exception as e:  # a bad record must not stop the writer
                    log_line(self._log, "error",
                             "cluster: %d changes dropped: %s" % (len(batch), e))
                for op in batch:
                    pending.popleft()
                    if op[0] == _FLUSH:
                        op[1].set()
                self.written += len(batch)
                self._writer_ok = True
            if self._stopping.is_set():
                return

    def _add(self, pipe: Any, op: tuple) -> None:
        kind = op[0]
        prefix = self.prefix
        if kind == _PUT:
            _, aor, contact, record, owned, _version = op
            pipe.hset(prefix + "b:" + aor, contact, record)
            pipe.sadd(prefix + "aors", aor)
            if owned:
                pipe.sadd(prefix + "owned:" + self.node, aor + "\n" + contact)
            pipe.publish(self.channel, json.dumps({"op": "p", "a": aor, "r": record,
                                                   "n": self.node}))
        elif kind == _DEL:
            _, aor, contact, version, before = op
            self._scripts["remove"](keys=[prefix + "b:" + aor, prefix + "aors"],
                                    args=[contact, version, before, aor, prefix, self.node],
                                    client=pipe)
        elif kind == _DEL_AOR:
            self._scripts["remove_aor"](keys=[prefix + "b:" + op[1], prefix + "aors"],
                                        args=[op[1], prefix, self.node], client=pipe)

    # -- the listener thread -----------------------------------------------------------------

    def _listener(self, r: redis.Redis) -> None:
        """Hears the other nodes' changes; after every (re)subscription the whole cache is
        loaded again, so nothing said while this node was cut off is missed."""
        _listen(r, self.channel, self._stopping,
                subscribed=lambda: self._call_in_main(self._resync, self._snapshot(r)),
                heard=self._heard, lost=self._lost,
                failed=self._bad_message)

    def _bad_message(self, error: Exception) -> None:
        log_line(self._log, "error", "cluster: bad change message: %s" % (error,))

    def _heard(self, data: List[str]) -> None:
        changes = []
        for text in data:
            try:
                change = json.loads(text)
                mine = change.get("n") == self.node
            except Exception as e:  # one bad message costs only itself
                self._bad_message(e)
                continue
            if not mine:
                changes.append(change)
        if changes:  # one wake-up of the reactor for all that arrived together
            self.heard += len(changes)
            self._call_in_main(self._apply_all, changes)

    def _lost(self, error: Exception) -> None:
        if self._listener_ok:
            log_line(self._log, "warning", "cluster: lost Redis (%s)" % (error,))
        self._listener_ok = False

    def _snapshot(self, r: redis.Redis) -> Dict[str, Dict[str, str]]:
        aors = list(cast(Set[str], r.smembers(self.prefix + "aors")))
        found: Dict[str, Dict[str, str]] = {}
        for start in range(0, len(aors), 500):
            chunk = aors[start:start + 500]
            pipe = r.pipeline(transaction=False)
            for aor in chunk:
                pipe.hgetall(self.prefix + "b:" + aor)
            for aor, fields in zip(chunk, pipe.execute()):
                if fields:
                    found[aor] = fields
        return found

    # -- applying changes (the cache's own thread) -------------------------------------------

    def _install(self, snapshot: Dict[str, Dict[str, str]]) -> None:
        self._applying = True
        try:
            for aor, fields in snapshot.items():
                for contact, text in fields.items():
                    rec = json.loads(text)
                    self._put_remote(aor, rec)
        finally:
            self._applying = False

    def _resync(self, snapshot: Dict[str, Dict[str, str]]) -> None:
        """Make the cache what Redis holds (after a start or a reconnection). This node's own
        bindings (their flows) stay; one Redis lacks, or holds in an older form, is written
        again: Redis may have lost it, or not have it yet. The newest registration wins."""
        wanted: Dict[Tuple[str, str], Dict[str, Any]] = {}
        for aor, fields in snapshot.items():
            for text in fields.values():
                rec = json.loads(text)
                wanted[(aor, rec["c"])] = rec
        salt = self._salt
        republish = []
        self._applying = True
        try:
            for aor in list(self._aors):
                for contact in list(self._aors.get(aor, {})):
                    key = (aor, contact)
                    binding = self.get(aor, contact)
                    if key in wanted or binding is None:
                        continue
                    if (self._versions.get(key) or "").startswith(salt):
                        republish.append(binding)
                    else:
                        self._forget(binding)
            for (aor, contact), rec in wanted.items():
                version = self._versions.get((aor, contact))
                if version == rec.get("v"):
                    continue
                binding = self.get(aor, contact)
                if binding is not None and (version or "").startswith(salt) \
                        and binding.registered_at >= float(rec.get("t") or 0.0):
                    republish.append(binding)
                    continue
                self._put_remote(aor, rec)
        finally:
            self._applying = False
        for binding in republish:
            self._persist_put(binding)
        self._listener_ok = True
        log_line(self._log, "info", "cluster: in step with Redis (%d bindings, %d written "
                 "again)" % (self.count(), len(republish)))

    def _put_remote(self, aor: str, rec: Dict[str, Any]) -> None:
        binding = _binding(aor, rec)
        self.put(binding)
        self._versions[(aor, binding.contact)] = rec.get("v")

    def _apply_all(self, changes: List[Dict[str, Any]]) -> None:
        for change in changes:
            self._apply(change)

    def _apply(self, change: Dict[str, Any]) -> None:
        op = change.get("op")
        aor: Any = change.get("a")  # a field of JSON another node wrote
        self._applying = True
        try:
            if op == "p":
                self._put_remote(aor, json.loads(change["r"]))
            elif op == "d":
                key: Any = (aor, change.get("c"))
                if self._versions.get(key) == change.get("v"):
                    binding = self.get(*key)
                    if binding is not None:
                        self._forget(binding)
                    self._versions.pop(key, None)
            elif op == "D":
                for binding in list(self._aors.get(aor, {}).values()):
                    self._forget(binding)
        finally:
            self._applying = False

    def _forget(self, binding: Binding) -> None:
        """Drop a binding another node removed (not written back)."""
        self._drop(binding)
        self._versions.pop((binding.aor, binding.contact), None)
        if events.listening:
            events.emit("registration", action="removed", binding=binding,
                        reason="removed by another node")


# -- accounts --------------------------------------------------------------------------------

class RedisAccounts(AccountLookups):
    """:class:`reticulum.accounts.AccountStore`'s interface over a Redis hash: lookups from
    memory, changes written through, reloaded when any node or the CLI says so."""

    def __init__(self, url: str, realms: List[str], algorithms: Iterable[str] | None = None,
                 prefix: str = "reticulum:", watch: bool = True, log: Any = None) -> None:
        if not realms:
            raise ValueError("at least one realm is needed")
        self.url = url
        self.realms = list(realms)
        self.algorithms = base_algorithms(DEFAULT_ALGORITHMS if algorithms is None
                                          else algorithms)
        self.key = prefix + "accounts"
        self.watch = watch
        self.log = log if log is not None else _log
        self._state: Tuple[Dict[Tuple[str, str, str], str], FrozenSet[str]] = ({}, frozenset())
        self._redis: Optional[redis.Redis] = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        self._redis = _client(self.url)
        self.reload()
        if self.watch and self._watcher is None:
            self._stopping.clear()
            self._watcher = threading.Thread(target=self._watch, args=(self._require(),),
                                             name="reticulum-redis-accounts", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.join(timeout=5.0)

    def set_password(self, name: str, password: str) -> None:
        if not valid_name(name):
            raise ValueError("invalid user name: %r" % (name,))
        if not password:
            raise ValueError("empty password")
        wanted = {(name, realm, algorithm): digest.ha1(name, realm, password, algorithm)
                  for realm in self.realms for algorithm in self.algorithms}
        current = {k: v for k, v in self._state[0].items() if k[0] == name}
        if current == wanted:
            return
        r = self._require()
        pipe = r.pipeline(transaction=True)
        stale = self._fields_of(r, name)
        if stale:
            pipe.hdel(self.key, *stale)
        pipe.hset(self.key, mapping={"\t".join(k): v for k, v in wanted.items()})
        pipe.publish(self.key, "changed")
        pipe.execute()
        hashes = {k: v for k, v in self._state[0].items() if k[0] != name}
        hashes.update(wanted)
        self._install(hashes)

    def remove(self, name: str) -> bool:
        r = self._require()
        stale = self._fields_of(r, name)
        if stale:
            pipe = r.pipeline(transaction=True)
            pipe.hdel(self.key, *stale)
            pipe.publish(self.key, "changed")
            pipe.execute()
        self._install({k: v for k, v in self._state[0].items() if k[0] != name})
        return bool(stale)

    def _fields_of(self, r: redis.Redis, name: str) -> List[str]:
        """The hash fields ("name\trealm\talgorithm") of one user as Redis has them now."""
        return [f for f in cast(List[str], r.hkeys(self.key)) if f.split("\t", 1)[0] == name]

    def reload(self) -> None:
        fields = cast(Dict[str, str], self._require().hgetall(self.key))
        hashes = {}
        for field_, ha1 in fields.items():
            parts = field_.split("\t")
            if len(parts) == 3:
                hashes[(parts[0], parts[1], parts[2])] = ha1
        self._install(hashes)

    def _require(self) -> redis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisAccounts is not started")
        return self._redis

    def _watch(self, r: redis.Redis) -> None:
        """Reload when any node or the CLI says the accounts changed, and after every
        (re)subscription (whatever changed while not listening)."""
        _listen(r, self.key, self._stopping, subscribed=self.reload,
                heard=lambda _: self.reload(), lost=lambda _: None,
                failed=lambda e: log_line(self.log, "error",
                                          "cluster: accounts not reloaded: %s" % (e,)))


# -- secrets ---------------------------------------------------------------------------------

def share_secret_files(r: redis.Redis, state_dir: str, prefix: str = "reticulum:",
                       names: Iterable[str] = SECRET_FILES) -> None:
    """Make ``state_dir/<name>`` hold the cluster's one value for each secret file: the first
    node to start offers its own (or a new one), every node then writes what Redis kept.
    So a nonce or a route token one node issued verifies on every other."""
    os.makedirs(state_dir, exist_ok=True)
    for name in names:
        path = os.path.join(state_dir, name)
        try:
            with open(path) as f:
                mine = f.read().strip()
        except FileNotFoundError:
            mine = ""
        key = prefix + "secret:" + name
        r.set(key, mine or os.urandom(32).hex(), nx=True)
        shared = cast(Optional[str], r.get(key))
        if shared and shared != mine:
            temporary = "%s.%d.tmp" % (path, os.getpid())
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(shared + "\n")
            os.replace(temporary, path)


# -- the node --------------------------------------------------------------------------------

class Cluster:
    """This node's membership: its heartbeat, the other nodes it trusts, and its stores."""

    def __init__(self, config: Any, call_in_main: Callable[..., Any] | None = None,
                 log: Any = None, worker: int = 0,
                 address: Tuple[str, int, str] | None = None) -> None:
        cluster = config.cluster
        self.config = config
        self.url = cluster.redis
        self.node = cluster.node or socket.gethostname()
        if config.server.workers > 1:
            self.node += ".w%d" % worker  # each worker is a node (reticulum.workers)
        self.prefix = cluster.prefix
        self.address = address or cluster.address or _first_address(config)
        host, port, transport = self.address
        self.own_path = "<sip:%s;lr%s>" % (hostport(host, port),
                                           "" if transport == "udp" else ";transport=" + transport)
        self.log = log if log is not None else _log
        self.location = RedisLocation(self.url, self.node, self.own_path, call_in_main,
                                      prefix=self.prefix, log=self.log)
        self.accounts = RedisAccounts(self.url, list(config.domains), prefix=self.prefix,
                                      log=self.log)
        #: the UDP addresses (host, port) of the other live nodes: a request they pass on
        #: to a contact registered here was authorised by the node that first took it
        self.peer_addresses: FrozenSet[Tuple[str, int]] = frozenset()
        self._redis: Optional[redis.Redis] = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected_since: float | None = None
        self.node_ttl = NODE_TTL

    def start(self) -> None:
        """At start-up, before the stores load: reach Redis, share the secret files."""
        self._announcement = json.dumps(self._my_addresses())
        self._redis = _client(self.url)
        share_secret_files(self._redis, self.config.state_dir, self.prefix)
        self._beat()
        self._thread = threading.Thread(target=self._heartbeat, name="reticulum-redis-heartbeat",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        try:
            if self._redis is not None:
                self._redis.delete(self.prefix + "alive:" + self.node)
        except Exception:
            pass

    def is_peer(self, flow: Any) -> bool:
        """Did this come from a UDP socket of another node of the cluster?"""
        return flow.transport == "udp" and flow.remote in self.peer_addresses

    def _my_addresses(self) -> List[List[Any]]:
        """Every UDP address this node sends from (the others trust these)."""
        found = [[self.address[0], self.address[1]]] if self.address[2] == "udp" else []
        for host, port in self.config.listen.udp:
            entry = [advertised_host(host), port]
            if entry not in found:
                found.append(entry)
        return found

    def _beat(self) -> None:
        r = self._redis
        if r is None:
            raise RuntimeError("Cluster is not started")
        prefix = self.prefix
        pipe = r.pipeline(transaction=False)
        pipe.set(prefix + "alive:" + self.node, "1", px=int(self.node_ttl * 1000))
        pipe.hset(prefix + "nodes", self.node, self._announcement)
        pipe.hgetall(prefix + "nodes")
        nodes = pipe.execute()[2]
        others = [n for n in nodes if n != self.node]
        alive = r.mget([prefix + "alive:" + n for n in others]) if others else []
        now = time.monotonic()
        if self._connected_since is None:
            self._connected_since = now
        hosts: set = set()
        for name, flag in zip(others, alive):
            if flag is not None:
                try:
                    hosts.update((str(h), int(p)) for h, p in json.loads(nodes[name]))
                except (ValueError, TypeError):
                    pass
            elif now - self._connected_since > 2 * self.node_ttl:
                # gone for longer than its heartbeat, while we were watching all along
                removed = self.location._scripts["reap"](
                    keys=[prefix + "owned:" + name], args=[prefix, name, ""]) \
                    if self.location._scripts else 0
                log_line(self.log, "info", "cluster: node %s is gone; %d of its bindings "
                         "removed" % (name, removed or 0))
        if hosts != self.peer_addresses:
            log_line(self.log, "info", "cluster: peers %s" % (
                ", ".join(hostport(h, p) for h, p in sorted(hosts)) or "none"))
        self.peer_addresses = frozenset(hosts)

    def _heartbeat(self) -> None:
        while not self._stopping.wait(HEARTBEAT):
            try:
                self._beat()
            except REDIS_ERRORS:
                self._connected_since = None
            except Exception as e:
                log_line(self.log, "error", "cluster: heartbeat failed: %s" % (e,))


def _first_address(config: Any) -> Tuple[str, int, str]:
    """Where the other nodes reach this one: the first UDP listening address."""
    for host, port in config.listen.udp:
        return advertised_host(host), port, "udp"
    raise ValueError("[cluster] needs a udp listening address")
