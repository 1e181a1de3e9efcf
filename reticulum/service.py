"""Wires config, transports and core into one Twisted service.

``make_service(config)`` returns a MultiService.  When it starts (under
twistd: in ``privilegedStartService``, before the reactor runs and before
privileges are dropped) it

1. creates ``state_dir``,
2. builds the flow table (``Transports``) and the ``Core``,
3. calls ``core.start()`` (stores load),
4. binds every configured listening address.

A listening address that cannot be bound is reported as one line
``reticulum: cannot listen on udp 0.0.0.0:5060: address already in use`` on
stderr and the process exits with status 1 before the server runs.  On stop
the listening sockets and connections are closed and ``core.stop()`` is
called (stores flush).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger

from reticulum.transport import BindError, Transports

__all__ = ["ReticulumService", "StartupError", "make_service"]

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


class StartupError(Exception):
    """The server cannot start; the message says why."""


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

    name = "reticulum"

    def __init__(self, config: Any, reactor: Any = None, exit_on_error: bool = True) -> None:
        MultiService.__init__(self)
        self.config = config
        self._reactor = reactor
        self.exit_on_error = exit_on_error
        self.transports: Optional[Transports] = None
        self.core: Any = None
        self._started = False
        self.admin: Any = None  # reticulum.admin.AdminService when [listen] admin is set
        self._word_log: Any = None

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _start(self) -> None:
        """Build and bind everything; raises StartupError."""
        config = self.config
        try:
            os.makedirs(config.state_dir, exist_ok=True)
        except OSError as e:
            raise StartupError("cannot create state_dir %s: %s" % (config.state_dir, e.strerror or e)) from None

        from reticulum.core import Core

        raise_open_files_limit()

        transports = Transports(config, reactor=self.reactor)
        core = Core(config, clock=self.reactor, transports=transports)
        transports.attach(core)
        self.transports = transports
        self.core = core
        core.start()
        tune_gc()
        try:
            transports.listen()
        except BindError as e:
            try:
                core.stop()
            except Exception:
                log.failure("core.stop() failed")
            raise StartupError(str(e)) from None
        self._start_watchers()
        log.info(
            "Reticulum serving {domains}; state in {state_dir}",
            domains=", ".join(config.domains),
            state_dir=config.state_dir,
        )

    def _start_watchers(self) -> None:
        """The observers of the core's events: the log in words, the admin port."""
        from reticulum import events

        if self.config.log.messages != "off":
            from reticulum.wordlog import WordLog

            self._word_log = WordLog(self.config.domains)
            events.subscribe(self._word_log)
        if self.config.listen.admin:
            from reticulum.admin import start_admin

            try:
                self.admin = start_admin(self.config, self.core, self.transports, self.reactor)
            except ValueError as e:
                self._stop_watchers()
                stopping = self.transports.stop()
                stopping.addBoth(lambda _: self.core.stop())
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
            if self.exit_on_error:
                _fail(str(e))
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
            inner = self._stop_watchers()
            if transports is not None:
                inner.addCallback(lambda _: transports.stop())
            if core is not None:

                def stop_core(_: Any) -> Any:
                    return core.stop()

                inner.addCallback(stop_core)
            inner.addErrback(lambda f: log.failure("error while stopping", f))
            return inner

        d.addCallback(stop_own)
        return d


def make_service(config: Any, reactor: Any = None) -> ReticulumService:
    """The server for ``config`` as a Twisted service (not started)."""
    return ReticulumService(config, reactor=reactor)
