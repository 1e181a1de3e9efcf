from __future__ import annotations

import os
from pathlib import Path

import pytest

from reticulum.addresses import hostport
from reticulum.config import (
    Config,
    ConfigError,
    config_from_dict,
    load_config,
    parse_hostport,
)

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(data, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        config_from_dict(data, **kw)
    return str(e.value)


def test_bundled_config_loads():
    c = load_config(REPO / "reticulum.toml")
    assert c.domains == ["reticulum.local"]
    assert c.realm == "reticulum.local"
    assert c.state_dir == str(REPO / "var")
    assert c.listen.udp == [("0.0.0.0", 5060)]
    assert c.listen.tcp == [("0.0.0.0", 5060)]
    assert c.listen.tls == [("0.0.0.0", 5061)]
    assert c.listen.ws == [("0.0.0.0", 8080)]
    assert c.listen.wss == [("0.0.0.0", 8443)]
    assert c.users["alice"] == "alice-secret"
    assert "bob" in c.users
    assert c.timers.t1 == 0.5 and c.timers.t2 == 4.0 and c.timers.t4 == 5.0
    assert c.timers.invite_timeout == 180
    assert c.path == str(REPO / "reticulum.toml")


def test_full_example(tmp_path):
    p = write(
        tmp_path,
        """
domains = ["Example.COM", "other.example"]
state_dir = "data/state"
[listen]
udp = ["127.0.0.1:5060", "[::1]:5060"]
tcp = ["0.0.0.0:5061"]
tls = ["0.0.0.0:5062"]
ws = ["127.0.0.1:8080"]
wss = ["127.0.0.1:8443"]
admin = ["127.0.0.1:8000"]
[timers]
t1 = 0.25
t2 = 4
t4 = 5.0
invite_timeout = 60
[users]
alice = "a"
"bob.smith" = "b"
[registrar]
min_expires = 10
max_expires = 100
default_expires = 50
[auth]
algorithms = ["sha-256"]
max_failures = 3
lockout_seconds = 60
nonce_lifetime = 30
[transport]
max_message_size = 4096
tcp_idle_timeout = 30
[log]
messages = false
[tls]
certificate = "cert.pem"
private_key = "/abs/key.pem"
verify_peers = true
[websocket]
allowed_origins = ["https://example.com"]
max_frame_size = 8192
[dialog]
session_lifetime = 1800
""",
    )
    c = load_config(str(p))
    assert c.domains == ["example.com", "other.example"]
    assert c.state_dir == str(tmp_path / "data" / "state")
    assert c.listen.udp == [("127.0.0.1", 5060), ("::1", 5060)]
    assert c.listen.tcp == [("0.0.0.0", 5061)]
    assert c.listen.tls == [("0.0.0.0", 5062)]
    assert c.listen.ws == [("127.0.0.1", 8080)]
    assert c.listen.wss == [("127.0.0.1", 8443)]
    assert c.listen.admin == [("127.0.0.1", 8000)]
    assert c.listen.items()[0] == ("udp", ("127.0.0.1", 5060))
    assert c.timers.t1 == 0.25 and c.timers.t2 == 4 and c.timers.invite_timeout == 60
    assert c.users == {"alice": "a", "bob.smith": "b"}
    assert (c.registrar.min_expires, c.registrar.max_expires, c.registrar.default_expires) == (10, 100, 50)
    assert c.auth.algorithms == ["SHA-256"]
    assert c.auth.max_failures == 3 and c.auth.lockout_seconds == 60 and c.auth.nonce_lifetime == 30
    assert c.transport.max_message_size == 4096 and c.transport.tcp_idle_timeout == 30
    assert c.log.messages == "off"
    assert c.tls.certificate == str(tmp_path / "cert.pem")
    assert c.tls.private_key == "/abs/key.pem"
    assert c.tls.verify_peers is True
    assert c.websocket.allowed_origins == ["https://example.com"]
    assert c.websocket.max_frame_size == 8192
    assert c.dialog.session_lifetime == 1800


def test_defaults():
    c = config_from_dict({}, base_dir="/srv/r")
    assert isinstance(c, Config)
    assert c.domains == ["reticulum.local"]
    assert c.state_dir == "/srv/r/var"
    assert c.listen.udp == [] and c.listen.tcp == []
    assert c.users == {}
    assert c.registrar.min_expires == 60
    assert c.registrar.max_expires == 7200
    assert c.registrar.default_expires == 3600
    assert c.registrar.max_contacts == 10
    assert c.auth.algorithms == ["MD5"]
    assert c.auth.check_uri is False
    assert c.registrar.nat == "auto"
    assert c.auth.max_failures == 10
    assert c.auth.lockout_seconds == 300
    assert c.auth.nonce_lifetime == 300
    assert c.transport.max_message_size == 65535
    assert c.transport.tcp_idle_timeout == 600
    assert c.transport.max_connections_per_ip == 64
    assert c.transport.max_connections is None  # derived from the open-files limit at start
    assert c.transport.head_timeout == 30
    assert c.log.messages == "summary"
    assert c.log.level == "info" and c.log.format == "text"
    assert c.admin.token is None
    assert c.tls.certificate is None and c.tls.private_key is None and c.tls.verify_peers is False
    assert c.websocket.allowed_origins == [] and c.websocket.max_frame_size == 65535
    assert c.dialog.session_lifetime == 7200
    assert c.timers.t1 == 0.5 and c.timers.t2 == 4.0 and c.timers.t4 == 5.0 and c.timers.invite_timeout == 180
    assert c.path is None


def test_config_is_frozen():
    c = config_from_dict({})
    with pytest.raises(Exception):
        c.domains = []  # type: ignore[misc]
    with pytest.raises(Exception):
        c.timers.t1 = 1  # type: ignore[misc]


def test_absolute_state_dir_kept(tmp_path):
    c = config_from_dict({"state_dir": str(tmp_path / "x")}, base_dir="/elsewhere")
    assert c.state_dir == str(tmp_path / "x")


@pytest.mark.parametrize(
    "data, key",
    [
        ({"domain": ["x"]}, "'domain'"),
        ({"listen": {"sctp": ["1.2.3.4:5060"]}}, "listen.sctp"),
        ({"timers": {"t3": 1}}, "timers.t3"),
        ({"registrar": {"min_expire": 1}}, "registrar.min_expire"),
        ({"auth": {"realm": "x"}}, "auth.realm"),
        ({"transport": {"x": 1}}, "transport.x"),
        ({"log": {"colour": "red"}}, "log.colour"),
        ({"tls": {"cert": "x"}}, "tls.cert"),
        ({"websocket": {"origins": []}}, "websocket.origins"),
        ({"dialog": {"lifetime": 1}}, "dialog.lifetime"),
    ],
)
def test_unknown_keys_are_named(data, key):
    msg = error_of(data)
    assert "unknown key" in msg
    assert key in msg


@pytest.mark.parametrize(
    "value, reason",
    [
        ("1.2.3.4", "host:port"),
        ("1.2.3.4:", "not a number"),
        ("1.2.3.4:0", "out of range"),
        ("1.2.3.4:70000", "out of range"),
        ("1.2.3.4:50x", "not a number"),
        ("example.com:5060", "not an IP address"),
        ("::1:5060", "[addr]:port"),
        ("[::1:5060", "[ipv6]:port"),
        ("[1.2.3.4]:5060", "only for IPv6"),
        ("[zz::]:5060", "not an IPv6"),
        (":5060", "host:port"),
    ],
)
def test_bad_addresses(value, reason):
    msg = error_of({"listen": {"tcp": ["127.0.0.1:5060", value]}})
    assert "listen.tcp[1]" in msg
    assert repr(value) in msg
    assert reason in msg


def test_address_forms():
    assert parse_hostport("[::1]:5060") == ("::1", 5060)
    assert parse_hostport("[::]:5060") == ("::", 5060)
    assert parse_hostport("[0:0::1]:1") == ("::1", 1)
    assert parse_hostport(" 10.0.0.1:65535 ") == ("10.0.0.1", 65535)
    assert hostport("::1", 5060) == "[::1]:5060"
    assert hostport("127.0.0.1", 5060) == "127.0.0.1:5060"


def test_duplicate_address():
    msg = error_of({"listen": {"udp": ["127.0.0.1:5060", "127.0.0.1:5060"]}})
    assert "listen.udp[1]" in msg and "twice" in msg


@pytest.mark.parametrize(
    "data, key",
    [
        ({"domains": "x"}, "domains"),
        ({"domains": []}, "domains"),
        ({"domains": [1]}, "domains[0]"),
        ({"domains": ["a b"]}, "domains[0]"),
        ({"state_dir": 5}, "state_dir"),
        ({"state_dir": ""}, "state_dir"),
        ({"listen": ["1.2.3.4:5"]}, "listen"),
        ({"listen": {"udp": "1.2.3.4:5060"}}, "listen.udp"),
        ({"listen": {"udp": [5060]}}, "listen.udp[0]"),
        ({"timers": {"t1": "fast"}}, "timers.t1"),
        ({"timers": {"t1": 0}}, "timers.t1"),
        ({"timers": {"t1": True}}, "timers.t1"),
        ({"timers": {"t1": float("nan")}}, "timers.t1"),
        ({"timers": {"t1": 5, "t2": 4}}, "timers.t2"),
        ({"timers": {"invite_timeout": -1}}, "timers.invite_timeout"),
        ({"users": {"alice": 5}}, "users.alice"),
        ({"users": {"alice": ""}}, "users.alice"),
        ({"users": {"al ice": "x"}}, "users.al ice"),
        ({"users": {"a@b": "x"}}, "users.a@b"),
        ({"users": "alice"}, "users"),
        ({"registrar": {"min_expires": 1.5}}, "registrar.min_expires"),
        ({"registrar": {"min_expires": 0}}, "registrar.min_expires"),
        ({"registrar": {"min_expires": 100, "max_expires": 50, "default_expires": 70}}, "registrar.max_expires"),
        ({"registrar": {"default_expires": 10}}, "registrar.default_expires"),
        ({"registrar": {"max_contacts": 0}}, "registrar.max_contacts"),
        ({"registrar": {"max_contacts": "10"}}, "registrar.max_contacts"),
        ({"auth": {"algorithms": ["SHA-1"]}}, "auth.algorithms[0]"),
        ({"auth": {"algorithms": []}}, "auth.algorithms"),
        ({"auth": {"algorithms": ["MD5", "md5"]}}, "auth.algorithms[1]"),
        ({"auth": {"max_failures": -1}}, "auth.max_failures"),
        ({"auth": {"check_uri": "yes"}}, "auth.check_uri"),
        ({"registrar": {"nat": "sometimes"}}, "registrar.nat"),
        ({"registrar": {"nat": True}}, "registrar.nat"),
        ({"auth": {"nonce_lifetime": 0}}, "auth.nonce_lifetime"),
        ({"transport": {"max_message_size": 100}}, "transport.max_message_size"),
        ({"transport": {"tcp_idle_timeout": 0}}, "transport.tcp_idle_timeout"),
        ({"transport": {"max_connections_per_ip": 0}}, "transport.max_connections_per_ip"),
        ({"transport": {"max_connections": 1.5}}, "transport.max_connections"),
        ({"transport": {"head_timeout": 0}}, "transport.head_timeout"),
        ({"log": {"messages": "yes"}}, "log.messages"),
        ({"admin": {"token": "short"}}, "admin.token"),
        ({"admin": {"secret": "x"}}, "admin.secret"),
        ({"log": {"level": "verbose"}}, "log.level"),
        ({"log": {"level": 10}}, "log.level"),
        ({"log": {"format": "xml"}}, "log.format"),
        ({"tls": {"verify_peers": 1}}, "tls.verify_peers"),
        ({"tls": {"certificate": 1}}, "tls.certificate"),
        ({"websocket": {"allowed_origins": "*"}}, "websocket.allowed_origins"),
        ({"websocket": {"max_frame_size": 0}}, "websocket.max_frame_size"),
        ({"dialog": {"session_lifetime": 0}}, "dialog.session_lifetime"),
    ],
)
def test_bad_values_name_the_key(data, key):
    msg = error_of(data)
    assert key in msg, msg


def test_log_level_and_format():
    c = config_from_dict({"log": {"level": "debug", "format": "json"}})
    assert c.log.level == "debug" and c.log.format == "json"


def test_error_names_the_file(tmp_path):
    p = write(tmp_path, 'bogus = 1\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value)
    assert "'bogus'" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.toml")
    assert "not found" in str(e.value)
    assert "nope.toml" in str(e.value)


def test_bad_toml(tmp_path):
    p = write(tmp_path, "domains = [\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "not valid TOML" in str(e.value)


def test_config_error_is_one_line(tmp_path):
    p = write(tmp_path, '[listen]\nudp = ["1.2.3.4"]\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "\n" not in str(e.value)


def test_relative_path_resolved_from_config_folder(tmp_path, monkeypatch):
    sub = tmp_path / "conf"
    sub.mkdir()
    p = write(sub, 'state_dir = "../state"\n')
    monkeypatch.chdir("/")
    c = load_config(os.path.relpath(p, "/"))
    assert c.state_dir == str(tmp_path / "state")


@pytest.mark.parametrize("value, mode", [("off", "off"), ("summary", "summary"),
                                         ("full", "full"), (True, "summary"), (False, "off")])
def test_log_messages_modes(value, mode):
    assert config_from_dict({"log": {"messages": value}}).log.messages == mode


def test_admin_token():
    token = "0123456789abcdef0123"
    assert config_from_dict({"admin": {"token": token}}).admin.token == token


def test_dns_proxy_and_server_sections(tmp_path):
    path = write(tmp_path, """
[dns]
nameservers = ["127.0.0.1:5353", "[::1]:53"]
timeout = 2

[dns.static]
"Home.Reticulum.Local" = "192.168.1.20:5080"
nas = "10.0.0.2"

[proxy]
outbound_proxy = "sip:proxy.example.org:5061;transport=tls"

[server]
public_name = "SIP.example.org"
""")
    config = load_config(path)
    assert config.dns.nameservers == [("127.0.0.1", 5353), ("::1", 53)]
    assert config.dns.timeout == 2
    assert config.dns.static == {"home.reticulum.local": ("192.168.1.20", 5080),
                                 "nas": ("10.0.0.2", None)}
    assert config.proxy.outbound_proxy == "sip:proxy.example.org:5061;transport=tls"
    assert config.server.public_name == "sip.example.org"
    defaults = config_from_dict({})
    assert defaults.dns.nameservers == [] and defaults.dns.static == {}
    assert defaults.proxy.outbound_proxy is None and defaults.server.public_name is None


@pytest.mark.parametrize("data, key", [
    ({"dns": {"nameservers": ["ns.example.org:53"]}}, "dns.nameservers[0]"),
    ({"dns": {"timeout": 0}}, "dns.timeout"),
    ({"dns": {"static": {"home.lan": "somewhere"}}}, 'dns.static."home.lan"'),
    ({"dns": {"static": {"bad name": "10.0.0.1"}}}, "dns.static"),
    ({"dns": {"static": {"home.lan": 5060}}}, 'dns.static."home.lan"'),
    ({"dns": {"colour": 1}}, "dns.colour"),
    ({"proxy": {"outbound_proxy": "http://example.org"}}, "proxy.outbound_proxy"),
    ({"proxy": {"outbound_proxy": "sip:p.example.org;transport=sctp"}}, "proxy.outbound_proxy"),
    ({"server": {"public_name": "sip example"}}, "server.public_name"),
])
def test_bad_dns_proxy_server_values_name_the_key(data, key):
    message = error_of(data)
    assert key in message and "\n" not in message
