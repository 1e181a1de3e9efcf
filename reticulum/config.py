"""Configuration: a TOML file turned into a typed, validated ``Config``.

``load_config(path)`` reads the file; ``config_from_dict(data, base_dir)``
builds the same tree from an already parsed mapping (handy in tests).  Every
problem is reported as one ``ConfigError`` whose message names the offending
key (dotted, e.g. ``listen.udp[1]``) or address.

The tree is made of frozen dataclasses.  Addresses are ``(host, port)`` tuples
with IPv6 hosts written without brackets; ``state_dir`` and TLS file paths are
absolute (relative ones are taken from the config file's folder).
"""

from __future__ import annotations

import ipaddress
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, overload

from reticulum.sip import parse_uri

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:  # pragma: no cover - Python < 3.11 (PyPy 3.9)
    import tomli as _toml

__all__ = [
    "ConfigError",
    "Config",
    "ListenConfig",
    "TimersConfig",
    "RegistrarConfig",
    "AuthConfig",
    "TransportConfig",
    "LogConfig",
    "TLSConfig",
    "WebSocketConfig",
    "DialogConfig",
    "ClusterConfig",
    "DNSConfig",
    "ProxyConfig",
    "ServerConfig",
    "LISTEN_TRANSPORTS",
    "DIGEST_ALGORITHMS",
    "load_config",
    "config_from_dict",
    "parse_hostport",
]

Address = Tuple[str, int]

#: keys accepted under ``[listen]``; each one is a list of "host:port".
#: the SQLite file in state_dir shared by the location service and the accounts
DATABASE_FILE = "reticulum.sqlite3"
LISTEN_TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss", "admin")

#: digest algorithms accepted in ``[auth] algorithms`` (RFC 8760 names).
DIGEST_ALGORITHMS = ("MD5", "SHA-256", "SHA-512-256")


class ConfigError(Exception):
    """The configuration cannot be used; the message says why and where."""


# ---------------------------------------------------------------------------
# the tree


@dataclass(frozen=True)
class ListenConfig:
    udp: List[Address] = field(default_factory=list)
    tcp: List[Address] = field(default_factory=list)
    tls: List[Address] = field(default_factory=list)
    ws: List[Address] = field(default_factory=list)
    wss: List[Address] = field(default_factory=list)
    admin: List[Address] = field(default_factory=list)

    def items(self) -> List[Tuple[str, Address]]:
        """Every configured (transport, (host, port)), in a stable order."""
        out = []
        for name in LISTEN_TRANSPORTS:
            for addr in getattr(self, name):
                out.append((name, addr))
        return out


@dataclass(frozen=True)
class TimersConfig:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    invite_timeout: float = 180.0


@dataclass(frozen=True)
class RegistrarConfig:
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    store: str = "sqlite"  # "sqlite" (bindings survive restarts) or "memory"
    max_contacts: int = 10  # bindings per address-of-record; more are refused (503)
    #: when a binding is reached through its REGISTER's flow instead of its Contact:
    #: "auto" (evident NAT), "always" or "never" (outbound and .invalid Contacts always are)
    nat: str = "auto"


@dataclass(frozen=True)
class AuthConfig:
    enabled: bool = True  # off: nobody is challenged (a closed lab, a benchmark)
    algorithms: List[str] = field(default_factory=lambda: ["MD5"])
    max_failures: int = 10
    lockout_seconds: float = 300
    nonce_lifetime: float = 300
    check_uri: bool = False  # true: the digest uri must name the Request-URI


@dataclass(frozen=True)
class TransportConfig:
    max_message_size: int = 65535
    tcp_idle_timeout: float = 600
    max_connections_per_ip: int = 64  # per source address (IPv6: per /64)
    max_connections: Optional[int] = None  # None: from the open-files limit
    head_timeout: float = 30  # a message must arrive whole within this of its first byte


#: `[log] messages`: none, one line per message, or whole messages
LOG_MESSAGES = ("off", "summary", "full")
#: ``[log] level`` values, lowest first; ``[log] format`` values.
LOG_LEVELS = ("debug", "info", "warning")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class LogConfig:
    messages: str = "summary"  # one of LOG_MESSAGES (true/false read as summary/off)
    level: str = "info"  # the lowest level written: "debug", "info" or "warning"
    format: str = "text"  # "text" (twistd's lines) or "json" (one object a line)


@dataclass(frozen=True)
class AdminConfig:
    token: Optional[str] = None  # None: generated at first start into state_dir/admin-token


@dataclass(frozen=True)
class TLSConfig:
    certificate: Optional[str] = None
    private_key: Optional[str] = None
    verify_peers: bool = False


@dataclass(frozen=True)
class WebSocketConfig:
    allowed_origins: List[str] = field(default_factory=list)
    max_frame_size: int = 65535


@dataclass(frozen=True)
class DialogConfig:
    session_lifetime: float = 7200


@dataclass(frozen=True)
class ClusterConfig:
    #: "redis://host:port/db"; None: no cluster (bindings and accounts in SQLite)
    redis: Optional[str] = None
    #: this node's name (default: the host name); each node of a cluster needs its own
    node: Optional[str] = None
    #: (host, port, "udp") where the other nodes reach this one; None: the first udp
    #: listening address
    address: Optional[Tuple[str, int, str]] = None
    #: the prefix of every Redis key (several clusters may share one Redis)
    prefix: str = "reticulum:"


@dataclass(frozen=True)
class DNSConfig:
    #: (host, port) name servers; empty: the system's resolv.conf
    nameservers: List[Address] = field(default_factory=list)
    timeout: float = 5.0
    #: [dns.static]: name -> (IP address, port or None), for a LAN without DNS
    static: Dict[str, Tuple[str, Optional[int]]] = field(default_factory=dict)


@dataclass(frozen=True)
class ProxyConfig:
    #: every request for a foreign domain goes to this SIP URI (text) instead
    outbound_proxy: Optional[str] = None


@dataclass(frozen=True)
class ServerConfig:
    #: how the server names itself in Via and Record-Route; None: the listening address
    public_name: Optional[str] = None
    #: processes serving the same ports (SO_REUSEPORT); more than 1 needs [cluster]
    workers: int = 1


@dataclass(frozen=True)
class Config:
    domains: List[str] = field(default_factory=lambda: ["reticulum.local"])
    state_dir: str = field(default_factory=lambda: os.path.abspath("var"))
    listen: ListenConfig = field(default_factory=ListenConfig)
    timers: TimersConfig = field(default_factory=TimersConfig)
    users: Dict[str, str] = field(default_factory=dict)
    registrar: RegistrarConfig = field(default_factory=RegistrarConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    log: LogConfig = field(default_factory=LogConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    dialog: DialogConfig = field(default_factory=DialogConfig)
    dns: DNSConfig = field(default_factory=DNSConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    #: the file this came from (absolute), or None when built from a dict
    path: Optional[str] = None

    @property
    def realm(self) -> str:
        """The digest realm: the first domain."""
        return self.domains[0]

    @property
    def database(self) -> str:
        """The SQLite file the embedded stores share (bindings, accounts)."""
        return os.path.join(self.state_dir, DATABASE_FILE)


# ---------------------------------------------------------------------------
# loading


def load_config(path: str) -> Config:
    """Read and validate the TOML file at ``path``."""
    path = os.path.abspath(os.fspath(path))
    try:
        with open(path, "rb") as f:
            data = _toml.load(f)
    except FileNotFoundError:
        raise ConfigError("config file %s not found" % (path,)) from None
    except OSError as e:
        raise ConfigError("cannot read config file %s: %s" % (path, e.strerror or e)) from None
    except _toml.TOMLDecodeError as e:
        raise ConfigError("config file %s is not valid TOML: %s" % (path, e)) from None
    return config_from_dict(data, base_dir=os.path.dirname(path), path=path)


def config_from_dict(
    data: Mapping[str, Any], base_dir: Optional[str] = None, path: Optional[str] = None
) -> Config:
    """Validate an already parsed mapping (same schema as the TOML file).

    Relative paths are resolved against ``base_dir`` (default: the current
    directory).
    """
    base_dir = os.path.abspath(base_dir if base_dir is not None else os.getcwd())
    r = _Reader(data, "", path)
    domains = r.str_list("domains", ["reticulum.local"], non_empty=True)
    domains = [_domain(d, "domains[%d]" % i, path) for i, d in enumerate(domains)]
    state_dir = r.string("state_dir", "var", non_empty=True)
    state_dir = os.path.normpath(os.path.join(base_dir, os.path.expanduser(state_dir)))

    listen = _listen(r.section("listen"), path)
    timers = _timers(r.section("timers"))
    users = _users(r.section("users"), path)
    registrar = _registrar(r.section("registrar"))
    auth = _auth(r.section("auth"))
    transport = _transport(r.section("transport"))
    log = _log(r.section("log"))
    admin = AdminConfig(token=_done(r.section("admin"), _admin_token))
    tls = _tls(r.section("tls"), base_dir)
    websocket = _websocket(r.section("websocket"))
    dialog = DialogConfig(
        session_lifetime=_done(r.section("dialog"), lambda s: s.number("session_lifetime", 7200, minimum=1))
    )
    dns = _dns(r.section("dns"), path)
    proxy = ProxyConfig(outbound_proxy=_done(r.section("proxy"), _outbound_proxy))
    cluster = _cluster(r.section("cluster"), listen)
    server = _server(r.section("server"), cluster)
    r.finish()
    return Config(
        domains=domains,
        state_dir=state_dir,
        listen=listen,
        timers=timers,
        users=users,
        registrar=registrar,
        auth=auth,
        transport=transport,
        log=log,
        tls=tls,
        websocket=websocket,
        dialog=dialog,
        dns=dns,
        proxy=proxy,
        cluster=cluster,
        server=server,
        admin=admin,
        path=path,
    )


# ---------------------------------------------------------------------------
# addresses


def parse_hostport(text: str) -> Address:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``; host must be an IP.

    Raises ValueError with a short reason.
    """
    if not isinstance(text, str):
        raise ValueError("expected a \"host:port\" string")
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError("expected \"[ipv6]:port\"")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError("%r is not an IPv6 address" % (host,)) from None
        if ip.version != 6:
            raise ValueError("brackets are only for IPv6 addresses")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError("expected \"host:port\"")
        if ":" in host:
            raise ValueError("write IPv6 addresses as \"[addr]:port\"")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError("%r is not an IP address" % (host,)) from None
    if not port_text.isdigit():
        raise ValueError("port %r is not a number" % (port_text,))
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError("port %d is out of range 1-65535" % (port,))
    return str(ip), port



# ---------------------------------------------------------------------------
# sections


def _done(r: "_Reader", fn):
    value = fn(r)
    r.finish()
    return value


def _listen(r: "_Reader", path: Optional[str]) -> ListenConfig:
    values = {}
    for name in LISTEN_TRANSPORTS:
        items = r.str_list(name, [])
        addrs: List[Address] = []
        for i, item in enumerate(items):
            key = r.key("%s[%d]" % (name, i))
            try:
                addr = parse_hostport(item)
            except ValueError as e:
                raise ConfigError(_where(path, "%s: bad address %r: %s" % (key, item, e))) from None
            if addr in addrs:
                raise ConfigError(_where(path, "%s: address %r is listed twice" % (key, item)))
            addrs.append(addr)
        values[name] = addrs
    r.finish()
    return ListenConfig(**values)


def _log_messages(r: "_Reader") -> str:
    value = r.take("messages", "summary")
    if value is True or value is False:
        return "summary" if value else "off"
    if value not in LOG_MESSAGES:
        raise ConfigError(r.msg("messages", "must be one of %s, not %r"
                                % (", ".join('"%s"' % v for v in LOG_MESSAGES), value)))
    return value


def _admin_token(r: "_Reader") -> Optional[str]:
    token = r.string("token", None, non_empty=True)
    if token is not None and (len(token) < 16 or any(c.isspace() for c in token)):
        raise ConfigError(r.msg("token", "must be at least 16 characters with no spaces"))
    return token


def _timers(r: "_Reader") -> TimersConfig:
    t1 = r.number("t1", 0.5, minimum=0.001)
    t2 = r.number("t2", 4.0, minimum=0.001)
    t4 = r.number("t4", 5.0, minimum=0.001)
    invite_timeout = r.number("invite_timeout", 180, minimum=1)
    if t2 < t1:
        raise ConfigError(r.msg("t2", "must not be smaller than timers.t1 (%g < %g)" % (t2, t1)))
    r.finish()
    return TimersConfig(t1=t1, t2=t2, t4=t4, invite_timeout=invite_timeout)


def _users(r: "_Reader", path: Optional[str]) -> Dict[str, str]:
    users: Dict[str, str] = {}
    for name in list(r.data):
        key = r.key(name)
        value = r.take(name)
        if not name or any(c.isspace() for c in name) or "@" in name or ":" in name:
            raise ConfigError(_where(path, "%s: bad user name %r" % (key, name)))
        if not isinstance(value, str):
            raise ConfigError(_where(path, "%s: the password must be a string" % (key,)))
        if not value:
            raise ConfigError(_where(path, "%s: the password must not be empty" % (key,)))
        users[name] = value
    r.finish()
    return users


def _registrar(r: "_Reader") -> RegistrarConfig:
    min_e = r.integer("min_expires", 60, minimum=1)
    max_e = r.integer("max_expires", 7200, minimum=1)
    default_e = r.integer("default_expires", 3600, minimum=1)
    if max_e < min_e:
        raise ConfigError(r.msg("max_expires", "must not be smaller than registrar.min_expires"))
    if not min_e <= default_e <= max_e:
        raise ConfigError(
            r.msg("default_expires", "must lie between min_expires (%d) and max_expires (%d)" % (min_e, max_e))
        )
    store = r.string("store", "sqlite", non_empty=True)
    if store not in ("sqlite", "memory"):
        raise ConfigError(r.msg("store", "must be \"sqlite\" or \"memory\""))
    max_contacts = r.integer("max_contacts", 10, minimum=1, maximum=1000)
    nat = r.string("nat", "auto", non_empty=True)
    if nat not in ("auto", "always", "never"):
        raise ConfigError(r.msg("nat", "must be \"auto\", \"always\" or \"never\""))
    r.finish()
    return RegistrarConfig(min_expires=min_e, max_expires=max_e, default_expires=default_e,
                           store=store, nat=nat, max_contacts=max_contacts)


def _auth(r: "_Reader") -> AuthConfig:
    algorithms = r.str_list("algorithms", ["MD5"], non_empty=True)
    out = []
    for i, a in enumerate(algorithms):
        up = a.strip().upper()
        if up not in DIGEST_ALGORITHMS:
            raise ConfigError(
                r.msg("algorithms[%d]" % i, "unknown digest algorithm %r (known: %s)" % (a, ", ".join(DIGEST_ALGORITHMS)))
            )
        if up in out:
            raise ConfigError(r.msg("algorithms[%d]" % i, "algorithm %r is listed twice" % (a,)))
        out.append(up)
    max_failures = r.integer("max_failures", 10, minimum=0)
    lockout = r.number("lockout_seconds", 300, minimum=0)
    nonce_lifetime = r.number("nonce_lifetime", 300, minimum=1)
    enabled = r.boolean("enabled", True)
    check_uri = r.boolean("check_uri", False)
    r.finish()
    return AuthConfig(enabled=enabled, algorithms=out, max_failures=max_failures, lockout_seconds=lockout, nonce_lifetime=nonce_lifetime,
                      check_uri=check_uri)


def _transport(r: "_Reader") -> TransportConfig:
    size = r.integer("max_message_size", 65535, minimum=1024, maximum=1 << 24)
    idle = r.number("tcp_idle_timeout", 600, minimum=1)
    per_ip = r.integer("max_connections_per_ip", 64, minimum=1)
    total = r.integer("max_connections", None, minimum=1)
    head = r.number("head_timeout", 30, minimum=0.1)
    r.finish()
    return TransportConfig(max_message_size=size, tcp_idle_timeout=idle,
                           max_connections_per_ip=per_ip, max_connections=total,
                           head_timeout=head)


def _log(r: "_Reader") -> LogConfig:
    messages = _log_messages(r)
    level = r.choice("level", "info", LOG_LEVELS)
    fmt = r.choice("format", "text", LOG_FORMATS)
    r.finish()
    return LogConfig(messages=messages, level=level, format=fmt)


def _tls(r: "_Reader", base_dir: str) -> TLSConfig:
    cert = r.string("certificate", None, non_empty=True)
    key = r.string("private_key", None, non_empty=True)
    verify = r.boolean("verify_peers", False)
    r.finish()

    def resolve(p):
        return None if p is None else os.path.normpath(os.path.join(base_dir, os.path.expanduser(p)))

    return TLSConfig(certificate=resolve(cert), private_key=resolve(key), verify_peers=verify)


def _websocket(r: "_Reader") -> WebSocketConfig:
    origins = r.str_list("allowed_origins", [])
    size = r.integer("max_frame_size", 65535, minimum=1024, maximum=1 << 24)
    r.finish()
    return WebSocketConfig(allowed_origins=list(origins), max_frame_size=size)


def _dns(r: "_Reader", path: Optional[str]) -> DNSConfig:
    servers: List[Address] = []
    for i, item in enumerate(r.str_list("nameservers", [])):
        try:
            servers.append(parse_hostport(item))
        except ValueError as e:
            raise ConfigError(r.msg("nameservers[%d]" % i, "bad address %r: %s" % (item, e))) from None
    timeout = r.number("timeout", 5.0, minimum=0.1, maximum=60)
    s = r.section("static")
    static: Dict[str, Tuple[str, Optional[int]]] = {}
    for name in list(s.data):
        value = s.take(name)
        key = s.key(_toml_name(name))
        host = name.strip().lower().rstrip(".")
        if not _is_host_name(host):
            raise ConfigError(_where(path, "%s: bad host name %r" % (key, name)))
        if not isinstance(value, str):
            raise ConfigError(_where(path, "%s: must be a string \"address:port\", not %s" % (key, _type_name(value))))
        try:
            ipaddress.ip_address(value.strip())
            static[host] = (str(ipaddress.ip_address(value.strip())), None)
        except ValueError:
            try:
                static[host] = parse_hostport(value)
            except ValueError as e:
                raise ConfigError(_where(path, "%s: bad address %r: %s" % (key, value, e))) from None
    s.finish()
    r.finish()
    return DNSConfig(nameservers=servers, timeout=timeout, static=static)


def _toml_name(name: str) -> str:
    return name if all(c.isalnum() or c in "-_" for c in name) else '"%s"' % name


def _is_host_name(name: str) -> bool:
    """A DNS name: dot-separated labels of letters, digits, '-' and '_', at most 253 long."""
    if not name or len(name) > 253:
        return False
    return all(label and len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label)
               for label in name.split("."))


def _outbound_proxy(r: "_Reader") -> Optional[str]:
    text = r.string("outbound_proxy", None, non_empty=True)
    if text is None:
        return None
    try:
        uri = parse_uri(text.strip())
    except Exception:
        raise ConfigError(r.msg("outbound_proxy", "not a SIP URI: %r" % (text,))) from None
    if uri.scheme not in ("sip", "sips") or not uri.host:
        raise ConfigError(r.msg("outbound_proxy", "must be a sip: or sips: URI with a host, not %r" % (text,)))
    transport = (uri.params.get("transport") or "").lower()
    if transport and transport not in ("udp", "tcp", "tls"):
        raise ConfigError(r.msg("outbound_proxy", "transport must be udp, tcp or tls, not %r" % (transport,)))
    return str(uri)


def _public_name(r: "_Reader") -> Optional[str]:
    text = r.string("public_name", None, non_empty=True)
    if text is None:
        return None
    name = text.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    if not _is_host_name(name):
        raise ConfigError(r.msg("public_name", "not a host name or IP address: %r" % (text,)))
    return name


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_NODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _cluster(r: "_Reader", listen: ListenConfig) -> ClusterConfig:
    url = r.string("redis", None, non_empty=True)
    if url is not None and not url.startswith(_REDIS_SCHEMES):
        raise ConfigError(r.msg("redis", "must be a redis://host:port/db URL"))
    node = r.string("node", None, non_empty=True)
    if node is not None and (len(node) > 64 or not set(node) <= _NODE_CHARS):
        raise ConfigError(r.msg("node", "must be at most 64 letters, digits, '.', '_' or '-'"))
    text = r.string("address", None, non_empty=True)
    address = None
    if text is not None:
        try:
            host, port = parse_hostport(text)
        except ValueError as e:
            raise ConfigError(r.msg("address", "bad address %r: %s" % (text, e))) from None
        if (host, port) not in listen.udp:
            raise ConfigError(r.msg("address", "must be one of the udp listening addresses"))
        address = (host, port, "udp")
    prefix = r.string("prefix", "reticulum:")
    if url is None and (node is not None or address is not None):
        raise ConfigError(r.msg("redis", "is needed for a cluster"))
    if url is not None and not listen.udp:
        raise ConfigError(r.msg("redis", "a cluster node needs a udp listening address"))
    r.finish()
    return ClusterConfig(redis=url, node=node, address=address, prefix=prefix)


def _server(r: "_Reader", cluster: ClusterConfig) -> ServerConfig:
    value = r.take("workers", 1)
    if value == "auto":
        value = os.cpu_count() or 1
    elif isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise ConfigError(r.msg("workers", "must be a number of processes (1-256) or \"auto\""))
    if value > 1 and cluster.redis is None:
        raise ConfigError(r.msg("workers", "more than one worker needs [cluster] redis: the "
                                           "workers share their bindings through Redis"))
    public_name = _public_name(r)
    r.finish()
    return ServerConfig(workers=value, public_name=public_name)


def _domain(value: str, key: str, path: Optional[str]) -> str:
    d = value.strip().lower()
    if not d or any(c.isspace() or c in "/@<>;,\"" for c in d):
        raise ConfigError(_where(path, "%s: bad domain %r" % (key, value)))
    return d


# ---------------------------------------------------------------------------
# a strict reader of one table


def _where(path: Optional[str], message: str) -> str:
    if path:
        return "%s: %s" % (path, message)
    return message


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


_MISSING = object()


class _Reader:
    """Takes keys out of one table; ``finish()`` complains about what is left."""

    def __init__(self, data: Any, prefix: str, path: Optional[str]):
        self.prefix = prefix
        self.path = path
        self.data = dict(data)

    def key(self, name: str) -> str:
        return self.prefix + name

    def msg(self, name: str, text: str) -> str:
        return _where(self.path, "%s: %s" % (self.key(name), text))

    def take(self, name: str, default: Any = _MISSING) -> Any:
        return self.data.pop(name, default)

    def finish(self) -> None:
        if self.data:
            name = sorted(self.data)[0]
            raise ConfigError(_where(self.path, "unknown key %r" % (self.key(name),)))

    def section(self, name: str) -> "_Reader":
        value = self.take(name, {})
        if not isinstance(value, dict):
            raise ConfigError(self.msg(name, "must be a table, not %s" % _type_name(value)))
        return _Reader(value, self.key(name) + ".", self.path)

    def string(self, name: str, default: Any, non_empty: bool = False) -> Any:
        value = self.take(name)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise ConfigError(self.msg(name, "must be a string, not %s" % _type_name(value)))
        if non_empty and not value.strip():
            raise ConfigError(self.msg(name, "must not be empty"))
        return value

    def choice(self, name: str, default: str, allowed: Tuple[str, ...]) -> str:
        value = self.string(name, default)
        if value not in allowed:
            raise ConfigError(self.msg(name, "must be one of %s, not %r"
                                       % (", ".join('"%s"' % a for a in allowed), value)))
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.take(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.msg(name, "must be true or false, not %s" % _type_name(value)))
        return value

    @overload
    def integer(self, name: str, default: int, minimum: Optional[int] = None,
                maximum: Optional[int] = None) -> int: ...

    @overload
    def integer(self, name: str, default: None, minimum: Optional[int] = None,
                maximum: Optional[int] = None) -> Optional[int]: ...

    def integer(self, name: str, default: Optional[int], minimum: Optional[int] = None,
                maximum: Optional[int] = None) -> Optional[int]:
        value = self.take(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.msg(name, "must be an integer, not %s" % _type_name(value)))
        self._range(name, value, minimum, maximum)
        return value

    def number(
        self,
        name: str,
        default: float,
        minimum: Optional[float] = None,
        maximum: Optional[float] = None,
    ) -> float:
        value = self.take(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(self.msg(name, "must be a number, not %s" % _type_name(value)))
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(self.msg(name, "must be a finite number"))
        self._range(name, value, minimum, maximum)
        return value

    def _range(self, name, value, minimum, maximum) -> None:
        if minimum is not None and value < minimum:
            raise ConfigError(self.msg(name, "must be at least %s (got %s)" % (minimum, value)))
        if maximum is not None and value > maximum:
            raise ConfigError(self.msg(name, "must be at most %s (got %s)" % (maximum, value)))

    def str_list(self, name: str, default: List[str], non_empty: bool = False) -> List[str]:
        value = self.take(name)
        if value is _MISSING:
            return list(default)
        if not isinstance(value, list):
            raise ConfigError(self.msg(name, "must be a list of strings, not %s" % _type_name(value)))
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(self.msg("%s[%d]" % (name, i), "must be a string, not %s" % _type_name(item)))
        if non_empty and not value:
            raise ConfigError(self.msg(name, "must not be empty"))
        return list(value)
