"""The Redis location store, accounts and shared secrets against a real redis-server (two
stores stand for two nodes; the changes one makes reach the other's cache)."""
from __future__ import annotations

import json
import logging
import queue
import time

import pytest

from reticulum.cluster import Cluster, RedisAccounts, RedisLocation, _record, share_secret_files
from reticulum.config import config_from_dict
from reticulum.location import Binding
from reticulum.addresses import Flow
from tests.redisserver import RedisServer

pytestmark = pytest.mark.timeout(120)

WS = Flow("ws", ("127.0.0.31", 8080), ("127.0.0.1", 40000), conn=7)
UDP = Flow("udp", ("127.0.0.31", 5060), ("127.0.0.1", 40001))
PATH_A = "<sip:127.0.0.31:5060;lr>"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


class Node:
    """A store whose cross-thread changes are applied when the test pumps them, as the
    reactor would run them."""

    def __init__(self, url, name, prefix):
        self.inbox: queue.Queue = queue.Queue()
        self.store = RedisLocation(url, name, PATH_A if name == "a" else "<sip:127.0.0.32;lr>",
                                   call_in_main=lambda f, *a: self.inbox.put((f, a)),
                                   prefix=prefix)

    def pump_until(self, condition, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("condition not met in %.0f s" % timeout)
            try:
                f, args = self.inbox.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            f(*args)


@pytest.fixture
def nodes(redis_server, request):
    prefix = "t%d:" % (id(request) % 1_000_000)
    made = []

    def make(name):
        node = Node(redis_server.url, name, prefix)
        node.store.start()
        made.append(node)
        return node

    make.prefix = prefix
    yield make
    for node in made:
        node.store.stop()


def binding(contact, flow=None, flow_bound=False, expires_at=None, aor="sip:bob@reticulum.local",
            **kw):
    return Binding(aor=aor, contact=contact, expires_at=expires_at or time.time() + 600,
                   flow=flow, flow_bound=flow_bound, registered_at=time.time(), call_id="c1",
                   cseq=1, **kw)


def test_a_binding_put_on_one_node_is_found_on_the_other(nodes):
    a, b = nodes("a"), nodes("b")
    a.store.put(binding("sip:bob@127.0.0.1:40001", flow=UDP))
    b.pump_until(lambda: b.store.lookup("sip:bob@reticulum.local", time.time()))
    found = b.store.lookup("sip:bob@reticulum.local", time.time())[0]
    assert found.contact == "sip:bob@127.0.0.1:40001"
    assert found.flow is None and found.path == []  # reached at its Contact
    assert b.store.find_contact("sip:bob@127.0.0.1:40001", time.time()) is found


def test_a_flow_bound_binding_is_reached_through_its_node(nodes):
    a, b = nodes("a"), nodes("b")
    a.store.put(binding("sip:x@h.invalid;transport=ws", flow=WS, flow_bound=True))
    b.pump_until(lambda: b.store.lookup("sip:bob@reticulum.local", time.time()))
    remote = b.store.lookup("sip:bob@reticulum.local", time.time())[0]
    assert remote.path == [PATH_A] and remote.flow is None
    local = a.store.lookup("sip:bob@reticulum.local", time.time())[0]
    assert local.flow == WS and local.path == []  # the owner keeps its flow


def test_removal_reaches_the_other_node(nodes):
    a, b = nodes("a"), nodes("b")
    a.store.put(binding("sip:bob@127.0.0.1:40001", flow=UDP))
    b.pump_until(lambda: b.store.count() == 1)
    a.store.remove("sip:bob@reticulum.local", "sip:bob@127.0.0.1:40001")
    b.pump_until(lambda: b.store.count() == 0)
    a.store.put(binding("sip:bob@127.0.0.1:40002", flow=UDP))
    b.pump_until(lambda: b.store.count() == 1)
    b.store.remove_all("sip:bob@reticulum.local")
    a.pump_until(lambda: a.store.count() == 0)


def test_a_closed_connection_removes_its_bindings_everywhere(nodes):
    a, b = nodes("a"), nodes("b")
    a.store.put(binding("sip:x@h.invalid;transport=ws", flow=WS, flow_bound=True))
    b.pump_until(lambda: b.store.count() == 1)
    assert a.store.flow_closed(WS)
    b.pump_until(lambda: b.store.count() == 0)


def test_a_sweep_leaves_a_binding_renewed_on_another_node(nodes):
    a, b = nodes("a"), nodes("b")
    a.store.put(binding("sip:bob@127.0.0.1:40001", flow=UDP, expires_at=time.time() + 60))
    b.pump_until(lambda: b.store.count() == 1)
    # b renews it; before a hears of it, a sweeps with a clock past the old expiry
    b.store.put(binding("sip:bob@127.0.0.1:40001", flow=UDP, expires_at=time.time() + 3600))
    assert b.store.flush(5)
    assert a.store.sweep(time.time() + 120) == 1
    assert a.store.flush(5)
    c = nodes("c")  # a fresh node loads what Redis holds
    assert c.store.count() == 1
    a.pump_until(lambda: a.store.count() == 1)


def test_a_restarted_node_loads_every_binding_but_its_own_flow_bound_ones(nodes, redis_server):
    a = nodes("a")
    a.store.put(binding("sip:bob@127.0.0.1:40001", flow=UDP))
    a.store.put(binding("sip:x@h.invalid;transport=ws", flow=WS, flow_bound=True))
    assert a.store.flush(5)
    a.store.stop()
    again = nodes("a")
    found = again.store.lookup("sip:bob@reticulum.local", time.time())
    assert [x.contact for x in found] == ["sip:bob@127.0.0.1:40001"]
    assert redis_server.client().hlen(nodes.prefix + "b:sip:bob@reticulum.local") == 1


def test_a_bad_change_message_costs_only_itself(nodes, redis_server, caplog):
    b = nodes("b")
    b.pump_until(lambda: b.store.writable)
    record = _record(binding("sip:bob@127.0.0.1:40001"), "a", "v1", None)
    good = json.dumps({"op": "p", "a": "sip:bob@reticulum.local", "r": record, "n": "a"})
    pipe = redis_server.client().pipeline(transaction=True)  # one after the other on the wire
    pipe.publish(nodes.prefix + "changes", good)
    pipe.publish(nodes.prefix + "changes", "{not json")
    with caplog.at_level(logging.ERROR, logger="reticulum.cluster"):
        pipe.execute()
        b.pump_until(lambda: b.store.count() == 1)
        deadline = time.monotonic() + 10
        while "bad change message" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "bad change message" in caplog.text
    assert b.store.get("sip:bob@reticulum.local", "sip:bob@127.0.0.1:40001") is not None


def test_without_redis_changes_wait_and_nothing_is_lost(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    node = Node(server.url, "a", "p:")
    node.store.start()
    try:
        node.store.put(binding("sip:bob@127.0.0.1:40001", flow=UDP))
        assert node.store.flush(5)
        assert node.store.writable
        server.stop()
        node.pump_until(lambda: not node.store.writable)
        # the cache still answers; a change made meanwhile waits for Redis
        assert node.store.lookup("sip:bob@reticulum.local", time.time())
        node.store.put(binding("sip:carol@127.0.0.1:40002", aor="sip:carol@reticulum.local",
                               flow=UDP))
        server.start()
        node.pump_until(lambda: node.store.writable)
        assert node.store.flush(10)
        client = server.client()
        assert client.hlen("p:b:sip:bob@reticulum.local") == 1
        assert client.hlen("p:b:sip:carol@reticulum.local") == 1
        assert node.store.count() == 2
    finally:
        node.store.stop()
        server.stop()


def test_accounts_set_on_one_node_are_known_on_the_other(redis_server):
    one = RedisAccounts(redis_server.url, ["reticulum.local"], prefix="acct:")
    two = RedisAccounts(redis_server.url, ["reticulum.local"], prefix="acct:")
    one.start()
    two.start()
    try:
        one.set_password("dave", "s3cret")
        assert one.exists("dave") and one.ha1("dave", "reticulum.local", "MD5")
        deadline = time.monotonic() + 10
        while not two.exists("dave"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert two.ha1("dave", "reticulum.local", "MD5") == one.ha1("dave", "reticulum.local", "MD5")
        assert two.remove("dave")
        while one.exists("dave"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        one.stop()
        two.stop()


def test_the_first_node_s_secret_becomes_everybody_s(redis_server, tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    second.mkdir()
    (second / "nonce.secret").write_text("ab" * 32 + "\n")
    client = redis_server.client()
    share_secret_files(client, str(first), prefix="sec:")
    share_secret_files(client, str(second), prefix="sec:")
    assert (first / "nonce.secret").read_text() == (second / "nonce.secret").read_text()
    assert (second / "nonce.secret").stat().st_mode & 0o077 == 0


def test_a_dead_node_s_flow_bound_bindings_go_and_the_others_stay(nodes, redis_server, tmp_path):
    a, b = nodes("a"), nodes("b")
    a.store.put(binding("sip:x@h.invalid;transport=ws", flow=WS, flow_bound=True))
    a.store.put(binding("sip:bob@127.0.0.1:40001", flow=UDP))
    b.pump_until(lambda: b.store.count() == 2)
    config = config_from_dict({"listen": {"udp": ["127.0.0.32:5060"]}, "state_dir": str(tmp_path),
                               "cluster": {"redis": redis_server.url, "node": "b",
                                           "prefix": nodes.prefix}})
    watcher = Cluster(config)
    watcher._announcement = "[]"
    watcher.location = b.store
    watcher._redis = redis_server.client()
    watcher._connected_since = time.monotonic() - 3600  # it has watched for long
    redis_server.client().hset(nodes.prefix + "nodes", "a", '[["127.0.0.31", 5060]]')
    watcher._beat()  # a never beat: it is dead
    b.pump_until(lambda: b.store.count() == 1)
    assert b.store.lookup("sip:bob@reticulum.local", time.time())[0].contact == \
        "sip:bob@127.0.0.1:40001"
    assert "a" not in redis_server.client().hgetall(nodes.prefix + "nodes")


def test_a_live_node_is_a_trusted_peer(redis_server, tmp_path):
    config = config_from_dict({"listen": {"udp": ["127.0.0.32:5060"]}, "state_dir": str(tmp_path),
                               "cluster": {"redis": redis_server.url, "node": "b",
                                           "prefix": "peer:"}})
    watcher = Cluster(config)
    watcher._redis = redis_server.client()
    watcher._announcement = "[]"
    watcher._redis.hset("peer:nodes", "a", '[["127.0.0.31", 5060]]')
    watcher._redis.set("peer:alive:a", "1", px=60000)
    watcher._beat()
    assert watcher.is_peer(Flow("udp", ("127.0.0.32", 5060), ("127.0.0.31", 5060)))
    assert not watcher.is_peer(Flow("udp", ("127.0.0.32", 5060), ("127.0.0.31", 5061)))
    assert not watcher.is_peer(Flow("tcp", ("127.0.0.32", 5060), ("127.0.0.31", 5060), 3))
    assert not watcher.is_peer(UDP)


def test_the_users_command_writes_the_cluster_s_accounts(redis_server, tmp_path):
    from reticulum.users import run

    config = tmp_path / "reticulum.toml"
    config.write_text('state_dir = "state"\n[listen]\nudp = ["127.0.0.31:5060"]\n'
                      '[cluster]\nredis = "%s"\nprefix = "cli:"\n' % redis_server.url)
    assert run(["add", "erin", "--password", "erin-secret", "--config", str(config)]) == 0
    node = RedisAccounts(redis_server.url, ["reticulum.local"], prefix="cli:", watch=False)
    node.start()
    assert node.exists("erin") and node.ha1("erin", "reticulum.local", "MD5")
    assert run(["remove", "erin", "--config", str(config)]) == 0
    node.reload()
    assert not node.exists("erin")
