"""[cluster] and [server] workers: defaults, and one line naming the key for a bad value."""
from __future__ import annotations

import pytest

from reticulum.config import ConfigError, config_from_dict

LISTEN = {"listen": {"udp": ["127.0.0.31:5060"], "tcp": ["127.0.0.31:5060"]}}


def test_defaults_are_one_worker_and_no_cluster():
    config = config_from_dict(LISTEN)
    assert config.cluster.redis is None and config.server.workers == 1


def test_a_cluster_node():
    config = config_from_dict(dict(LISTEN, cluster={"redis": "redis://127.0.0.1:6379/0",
                                                    "node": "n1", "address": "127.0.0.31:5060"},
                                   server={"workers": 2}))
    assert config.cluster.node == "n1"
    assert config.cluster.address == ("127.0.0.31", 5060, "udp")
    assert config.server.workers == 2


@pytest.mark.parametrize("data, key", [
    ({"cluster": {"redis": "http://x"}}, "cluster.redis"),
    ({"cluster": {"redis": "redis://h:1/0", "node": "a b"}}, "cluster.node"),
    ({"cluster": {"redis": "redis://h:1/0", "address": "127.0.0.9:5060"}}, "cluster.address"),
    ({"cluster": {"node": "n1"}}, "cluster.redis"),
    ({"cluster": {"redis": "redis://h:1/0", "colour": 1}}, "cluster.colour"),
    ({"server": {"workers": 0}}, "server.workers"),
    ({"server": {"workers": "many"}}, "server.workers"),
    ({"server": {"workers": 2}}, "server.workers"),  # more than one needs [cluster]
])
def test_bad_values_name_their_key(data, key):
    with pytest.raises(ConfigError) as info:
        config_from_dict(dict(LISTEN, **data))
    assert key in str(info.value)
