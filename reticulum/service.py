"""Wires config, transports and core into one Twisted service.

``make_service(config)`` returns a MultiService.  When it starts (under
twistd: in ``privilegedStartService``, before the reactor runs and before
privileges are dropped) it

1. creates ``state_dir`` and checks that it can write there (``check_state_dir``),
2. builds the flow table (``Transports``) and the ``Core``,
3. calls ``core.start()`` (stores load),
4. binds every configured listening address.

A listening address that cannot be bound is reported as one line
``reticulum: cannot listen on udp 0.0.0.0:5060: address already in use`` on
stderr and the process exits with status 1 before the server runs; so is a
``state_dir`` it cannot write or a TLS file it cannot read.  Under twistd without ``-n``
the plugin runs the same checks (``preflight``) before twistd forks, while the terminal
is still there.  On stop
the listening sockets and connections are closed and ``core.stop()`` is
called (stores flush).
"""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
import sys
from typing import Any, Optional

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger

from reticulum import __version__
from reticulum.accounts import AccountStore
from reticulum.addresses import LocalAddresses, hostport
from reticulum.auth import Authenticator, load_or_create_secret
from reticulum.config import DATABASE_FILE
from reticulum.core import Core, Outbox
from reticulum.dialog import DialogTracker
from reticulum.dns import NoLookup, Resolver
from reticulum.location import MemoryLocation, SqliteLocation
from reticulum.proxy import Proxy, RouteTokens
from reticulum.registrar import Registrar
from reticulum.transaction import Timers, TransactionLayer
from reticulum.transport import BindError, Transports

__all__ = ["ReticulumService", "StartupError", "build_core", "make_service"]

log = Logger(namespace="reticulum.service")


def raise_open_files_limit() -> None:
    """Every connection (TCP, TLS, WebSocket) holds a file descriptor: lift the soft
    limit on open files to the hard one."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = max(soft, 1 << 20) if hard == resource.RLIM_INFINITY else hard
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open files limit raised from {soft} to {target}", soft=soft, target=target)
    except (OSError, ValueError):
        pass


#: Young collections as usual; a full collection only after this many collections of the
#: middle generation (CPython's default is 10).
GC_FULL_AFTER = 1000


def tune_gc() -> None:
    """Keep the cycle collector's full collections off the message path.

    Transactions linger for 32 s (Timer J, L, M) to absorb retransmissions, so at thousands
    of messages a second hundreds of thousands of live objects belong to them; a full
    collection walks every one of them (about 0.5 s for a million) while the reactor waits
    and UDP datagrams pile up. Calls and registrations hold no reference cycles (they are
    freed by reference counting), so full collections have little to find: make them rare,
    and move what start-up built (modules, restored bindings) out of the collector's way.
    PyPy's collector is incremental and has neither knob."""
    import gc

    if hasattr(gc, "freeze"):
        gc.collect()
        gc.freeze()
    if sys.implementation.name == "cpython":
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, GC_FULL_AFTER)


# ---------------------------------------------------------------------------
# assembly: the one place where the server's parts are made and given to each other


def make_location(config: Any, clock: Any) -> Any:
    """The binding store `[registrar] store` names."""
    if config.registrar.store == "memory":
        return MemoryLocation()
    return SqliteLocation(config.database, clock=clock)


def make_resolver(config: Any, clock: Any, listening: Any, lookup: Any) -> Resolver:
    """RFC 3263 over `lookup` (DNS), for the transports and address families we send on."""
    dns = config.dns
    transports = {point.transport for point in listening} or {"udp"}
    families = ("A", "AAAA") if any(":" in point.host for point in listening) else ("A",)
    return Resolver(lookup, clock, static=dns.static, transports=transports,
                    families=families, timeout=dns.timeout)


def build_core(config: Any, clock: Any, transports: Any, location: Any = None,
               accounts: Any = None, lookup: Any = None, cluster: Any = None) -> Core:
    """The server without its sockets: config -> stores -> addresses -> transactions ->
    secret -> registrar, auth, route tokens -> proxy -> core, each given what it uses.

    `transports` is the flow table (`listening`, `send`, `send_to`, `alive`); `location` and
    `accounts` default to the configured stores, `lookup` (DNS questions) to none at all.
    Reads the server's secret from `state_dir` (made when missing). The stores load in
    `Core.start`."""
    if location is None:
        location = make_location(config, clock)
    if accounts is None:
        accounts = AccountStore(config.database, realms=list(config.domains))
    addresses = LocalAddresses(transports.listening, config.domains, config.server.public_name)
    messages = config.log.messages
    outbox = Outbox(transports, log_messages=messages not in ("off", False),
                    log_full=messages == "full")
    timers = config.timers
    transaction_log = Logger(namespace="reticulum.transaction")
    transactions = TransactionLayer(clock, Timers(t1=timers.t1, t2=timers.t2, t4=timers.t4),
                                    outbox.send,
                                    log=lambda text: transaction_log.warn("{text}", text=text))
    dialogs = DialogTracker(clock, session_lifetime=config.dialog.session_lifetime)
    resolver = make_resolver(config, clock, transports.listening,
                             lookup if lookup is not None else NoLookup())
    # one secret, read in one place: nonces and route tokens are derived from it
    secret = load_or_create_secret(config.state_dir)
    registrar = Registrar(
        list(config.domains), location, clock,
        min_expires=config.registrar.min_expires,
        max_expires=config.registrar.max_expires,
        default_expires=config.registrar.default_expires,
        nat=config.registrar.nat,
        max_contacts=config.registrar.max_contacts,
        domain_of=addresses.local_domain,
        points_here=addresses.points_at_us,
    )
    auth = None
    if config.auth.enabled:
        auth = Authenticator(
            accounts, list(config.domains), clock, secret,
            algorithms=tuple(config.auth.algorithms),
            nonce_lifetime=config.auth.nonce_lifetime,
            max_failures=config.auth.max_failures,
            lockout_seconds=config.auth.lockout_seconds,
            check_uri=config.auth.check_uri,
        )
    proxy = Proxy(config, clock, transactions, location, dialogs, resolver, addresses,
                  registrar, auth, RouteTokens(secret), send=outbox.send,
                  alive=transports.alive, accounts=accounts, cluster=cluster)
    return Core(config, clock, outbox, transactions, proxy, location, accounts, dialogs,
                resolver, addresses)


class StartupError(Exception):
    """The server cannot start; the message says why."""


# ---------------------------------------------------------------------------
# start-up checks: one line naming the path or address instead of a traceback



def _reason(e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return "address already in use"
    if e.errno == errno.EADDRNOTAVAIL:
        return "no such local address"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.EROFS:
        return "read-only file system"
    return e.strerror.lower() if e.strerror else str(e)


def check_state_dir(config: Any) -> None:
    """Make ``state_dir`` when missing and prove that a file can be made in it and that an
    existing database is writable (SQLite would only say "unable to open database file")."""
    path = config.state_dir
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise StartupError("cannot create state_dir %s: %s" % (path, _reason(e))) from None
    if not os.path.isdir(path):
        raise StartupError("state_dir %s is not a folder" % (path,))
    probe = os.path.join(path, ".write-test-%d" % os.getpid())
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as e:
        raise StartupError("state_dir %s is not writable: %s" % (path, _reason(e))) from None
    for suffix in ("", "-wal", "-shm"):
        db = os.path.join(path, DATABASE_FILE + suffix)
        if os.path.exists(db) and not os.access(db, os.R_OK | os.W_OK):
            raise StartupError("database %s is not writable: permission denied" % (db,))


def check_tls_files(config: Any) -> None:
    """Load (or make) the TLS certificate and key when a TLS transport is configured."""
    if not (config.listen.tls or config.listen.wss):
        return
    from reticulum.certs import TLSContexts

    try:
        TLSContexts(config)
    except ValueError as e:
        raise StartupError(str(e)) from None


def check_listening(config: Any) -> None:
    """Bind every configured address once and let it go again.

    twistd binds only after it has become a daemon, where an error has no terminal to go
    to; this runs before that, so a busy port is reported where the operator is looking."""
    for name, (host, port) in config.listen.items():
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_DGRAM if name == "udp" else socket.SOCK_STREAM
        s = socket.socket(family, kind)
        try:
            if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if kind == socket.SOCK_STREAM and os.name == "posix":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError as e:
            raise StartupError(
                "cannot listen on %s %s: %s" % (name, hostport(host, port), _reason(e))
            ) from None
        finally:
            s.close()


def preflight(config: Any) -> None:
    """Every check that can fail before the server starts; raises StartupError."""
    check_state_dir(config)
    check_tls_files(config)
    check_listening(config)


def log_startup_summary(service: "ReticulumService") -> None:
    """What start-up loaded, for the operator: accounts, restored bindings, the TLS
    certificate, the admin URL (listening points are logged as they are bound)."""
    config, core = service.config, service.core
    assert core is not None
    from_config = len(config.users or {})
    log.info(
        "accounts: {accounts} ({from_config} from [users]); bindings restored: {bindings}",
        accounts=len(core.accounts.names()),
        from_config=from_config,
        bindings=core.location.count(),
    )
    if service.transports is not None and (config.listen.tls or config.listen.wss):
        try:
            log.info("{certificate}", certificate=service.transports.tls_contexts().describe())
        except Exception:  # the certificate loaded for listening; its description is a nicety
            log.failure("cannot describe the TLS certificate")
    for host, port in config.listen.admin:
        log.info("admin API at {url}", url="http://%s/api/" % hostport(host, port))


def install_log_observer(service: "ReticulumService", parent: Any) -> None:
    """Give twistd's application the observer for ``[log] level`` and ``format`` (twistd
    asks the application for an ILogObserver before it makes its own)."""
    from twisted.logger import ILogObserver

    if not hasattr(parent, "setComponent") or parent.getComponent(ILogObserver, None) is not None:
        return
    if service.twistd_options is None and (service.config.log.level, service.config.log.format) == ("info", "text"):
        return  # a .tac: twistd's own observer, which knows where it was told to write
    from reticulum.logoutput import observer_for_twistd

    observer = observer_for_twistd(service.config.log, service.twistd_options)
    if observer is not None:
        parent.setComponent(ILogObserver, observer)


def _fail(message: str) -> None:
    """Report a startup failure on the real stderr and exit."""
    stream = sys.__stderr__ or sys.stderr
    try:
        stream.write("reticulum: %s\n" % (message,))
        stream.flush()
    except Exception:  # pragma: no cover
        pass
    log.critical("cannot start: {message}", message=message)
    raise SystemExit(1)


class ReticulumService(MultiService):
    """The whole server; see the module docstring."""

    name = "reticulum"  # type: ignore[assignment]  # Twisted's stubs say Service.name is None

    def __init__(self, config: Any, reactor: Any = None, exit_on_error: bool = True,
                 worker: int = 0) -> None:
        MultiService.__init__(self)
        self.config = config
        #: which of the ``[server] workers`` processes this is (reticulum.workers)
        self.worker = worker
        self._workers: list = []
        self._reactor = reactor
        self.exit_on_error = exit_on_error
        #: twistd's own options (set by the plugin): where logs go, daemon or not
        self.twistd_options: Any = None
        self.transports: Optional[Transports] = None
        self.core: Optional[Core] = None
        self.cluster: Any = None
        self.dns: Any = None  # the DNS lookup and its thread pool
        self._started = False
        self.admin: Any = None  # reticulum.admin.service.AdminService when [listen] admin is set
        self._word_log: Any = None

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    @property
    def daemon(self) -> bool:
        """True under twistd without -n (the terminal is gone once we start)."""
        options = self.twistd_options
        return options is not None and not options.get("nodaemon", True)

    def setServiceParent(self, parent: Any) -> Any:
        install_log_observer(self, parent)
        return MultiService.setServiceParent(self, parent)

    def _start(self) -> None:
        """Build and bind everything; raises StartupError."""
        config = self.config
        check_state_dir(config)
        raise_open_files_limit()

        from reticulum.dns.lookup import ThreadedLookup

        transports = Transports(config, reactor=self.reactor)
        own = None
        if config.server.workers > 1:
            from reticulum.workers import own_udp_address

            own = own_udp_address(config)
            transports.share_ports(own)
        cluster = self._start_cluster(own)
        self.dns = ThreadedLookup(self.reactor, nameservers=config.dns.nameservers,
                                  timeout=config.dns.timeout)
        core = build_core(config, self.reactor, transports, lookup=self.dns,
                          location=cluster.location if cluster else None,
                          accounts=cluster.accounts if cluster else None, cluster=cluster)
        self.dns.start()
        self.transports = transports
        self.core = core
        try:
            core.start()
        except sqlite3.Error as e:
            raise StartupError("cannot open the database in state_dir %s: %s" % (config.state_dir, e)) from None
        tune_gc()
        try:
            transports.listen(core)
        except BindError as e:
            try:
                core.stop()
            except Exception:
                log.failure("core.stop() failed")
            raise StartupError(str(e)) from None
        self._start_watchers()
        log.info(
            "Reticulum {version} serving {domains}; state in {state_dir}",
            version=__version__,
            domains=", ".join(config.domains),
            state_dir=config.state_dir,
        )
        log_startup_summary(self)
        if config.server.workers > 1 and self.worker == 0:
            from reticulum.workers import spawn

            self._workers = spawn(config)
            log.info("started {count} more workers", count=len(self._workers))

    def _start_cluster(self, own: Any = None) -> Any:
        """With ``[cluster]``: join it (reach Redis, share the secrets); else None."""
        config = self.config
        if config.cluster.redis is None:
            return None
        from reticulum.cluster import Cluster

        cluster = Cluster(config, call_in_main=self.reactor.callFromThread,
                          log=Logger(namespace="reticulum.cluster"), worker=self.worker,
                          address=None if own is None else (own[0], own[1], "udp"))
        try:
            cluster.start()
        except Exception as e:
            raise StartupError("cannot reach Redis at %s: %s" % (config.cluster.redis, e)) from None
        self.cluster = cluster
        log.info("Cluster node {node}, reached by the others at {path}", node=cluster.node,
                 path=cluster.own_path)
        return cluster

    def _start_watchers(self) -> None:
        """The observers of the core's events: the log in words, the admin port."""
        from reticulum import events

        if self.config.log.messages != "off":
            from reticulum.wordlog import WordLog

            self._word_log = WordLog(self.config.domains)
            events.subscribe(self._word_log)
        if self.config.listen.admin:
            from reticulum.admin.service import start_admin

            try:
                self.admin = start_admin(self.config, self.core, self.transports, self.reactor)
            except ValueError as e:
                self._stop_watchers()
                core, transports = self.core, self.transports
                assert core is not None and transports is not None
                transports.stop().addBoth(lambda _: core.stop())
                raise StartupError(str(e)) from None

    def _stop_watchers(self) -> Any:
        from reticulum import events

        if self._word_log is not None:
            events.unsubscribe(self._word_log)
            self._word_log = None
        admin, self.admin = self.admin, None
        return admin.stop() if admin is not None else defer.succeed(None)

    def _ensure_started(self) -> None:
        if self._started:
            return
        self._started = True
        try:
            self._start()
        except StartupError as e:
            if self.exit_on_error and not self.daemon:
                _fail(str(e))
            if self.daemon:
                # twistd reports an exception to the waiting parent (which exits 1) and
                # removes its pid file; SystemExit would leave the parent waiting for ever
                log.critical("cannot start: {message}", message=str(e))
            raise

    def privilegedStartService(self) -> None:
        self._ensure_started()
        MultiService.privilegedStartService(self)

    def startService(self) -> None:
        self._ensure_started()
        MultiService.startService(self)

    def stopService(self) -> defer.Deferred:
        d = defer.maybeDeferred(MultiService.stopService, self)

        def stop_own(_: Any) -> Any:
            transports, core = self.transports, self.core
            self._started = False
            if self.dns is not None:
                self.dns.stop()
                self.dns = None
            inner = self._stop_watchers()
            if transports is not None:
                inner.addCallback(lambda _: transports.stop())
            if core is not None:

                def stop_core(_: Any) -> Any:
                    return core.stop()

                inner.addCallback(stop_core)
            workers, self._workers = self._workers, []
            if workers:
                from reticulum.workers import stop as stop_workers

                inner.addCallback(lambda _: stop_workers(workers))
            cluster, self.cluster = self.cluster, None
            if cluster is not None:
                inner.addCallback(lambda _: cluster.stop())
            inner.addErrback(lambda f: log.failure("error while stopping", f))
            return inner

        d.addCallback(stop_own)
        return d


def make_service(config: Any, reactor: Any = None) -> ReticulumService:
    """The server for ``config`` as a Twisted service (not started)."""
    return ReticulumService(config, reactor=reactor)
