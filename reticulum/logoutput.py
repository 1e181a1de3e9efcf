"""Where the server's log events are written: ``[log] level`` and ``[log] format``.

Everything logs through Twisted's logger; this module only builds the observer twistd
installs (as the application's ``ILogObserver`` component), so there is one logging system:

* ``format = "text"``: twistd's own lines (``2026-01-01T12:00:00+0000 [namespace#info] ...``);
* ``format = "json"``: one JSON object a line, for journald, Loki or ``jq``:
  ``{"time": ..., "level": "info", "namespace": ..., "message": ..., "fields": {...}}``;
* ``level``: events below it are dropped before they are formatted.

The destination follows twistd's options: stdout in the foreground (``-n``) or with
``--logfile -``, else the ``--logfile`` (default ``twistd.log``), reopened on SIGUSR1. A
``.tac`` (no twistd options known here) keeps twistd's own observer unless ``[log]`` asks for
another level or format; then it writes to stdout (``twistd -ny``).
"""

from __future__ import annotations

import datetime
import json
import sys
import threading
from typing import IO, Any, Mapping, Optional, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)
from zope.interface import implementer

__all__ = ["JSONLinesObserver", "make_observer", "observer_for_twistd", "log_level"]

#: ``[log] level`` names -> Twisted's levels
_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warning": LogLevel.warn}
#: Twisted's level names -> the words written in JSON
_LEVEL_WORDS = {"debug": "debug", "info": "info", "warn": "warning", "error": "error",
                "critical": "critical"}
#: keys of legacy (twisted.python.log) events that are not the caller's own fields
_LEGACY_KEYS = frozenset(("message", "isError", "system", "format", "time", "why", "failure"))


def log_level(name: str) -> LogLevel:
    return _LEVELS[name]


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes each event as one JSON object on one line (no record separators)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, event: LogEvent) -> None:
        level = event.get("log_level") or LogLevel.info
        when = event.get("log_time")
        record = {
            "time": datetime.datetime.fromtimestamp(
                when if when is not None else 0, datetime.timezone.utc
            ).isoformat(timespec="milliseconds"),
            "level": _LEVEL_WORDS.get(level.name, level.name),
            "namespace": event.get("log_namespace") or event.get("system") or "-",
            "message": formatEvent(event),
        }
        fields = {}
        for key, value in event.items():
            if key.startswith("log_") or key in _LEGACY_KEYS:
                continue
            if value is None or isinstance(value, (str, int, float, bool)):
                fields[key] = value
        if fields:
            record["fields"] = fields
        failure = event.get("log_failure")
        if failure is not None:
            try:
                record["traceback"] = failure.getTraceback()
            except Exception:  # pragma: no cover - a broken failure still gets its line
                record["traceback"] = repr(failure)
        try:
            self.stream.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # pragma: no cover - closed or full stream
            pass


def make_observer(log_config: Any, stream: IO[str]) -> ILogObserver:
    """The observer for ``[log]`` (level and format) writing to ``stream``."""
    fmt = getattr(log_config, "format", "text")
    # these provide ILogObserver and ILogFilterPredicate (@implementer), which mypy does not
    # read (zope.interface declarations): the casts say so
    inner = cast(ILogObserver, JSONLinesObserver(stream) if fmt == "json"
                 else textFileLogObserver(stream))
    level = log_level(getattr(log_config, "level", "info"))
    if level == LogLevel.debug:
        return inner  # nothing to leave out: no predicate per event
    predicate = cast(ILogFilterPredicate, LogLevelFilterPredicate(defaultLogLevel=level))
    return cast(ILogObserver, FilteringLogObserver(inner, [predicate]))


def observer_for_twistd(log_config: Any, twistd_options: Optional[Mapping[str, Any]]) -> Optional[ILogObserver]:
    """make_observer() writing where twistd would have; None when twistd was told to log
    somewhere this does not cover (``--syslog``, ``--logger``): twistd's choice wins."""
    options = twistd_options or {}
    if options.get("syslog") or options.get("logger"):
        return None
    logfile = options.get("logfile") or ""
    nodaemon = options.get("nodaemon", True) if twistd_options is not None else True
    if logfile == "-" or (nodaemon and not logfile):
        return make_observer(log_config, sys.stdout)
    from twisted.python.logfile import LogFile

    target = LogFile.fromFullPath(logfile or "twistd.log")
    _lock_signal_safely(target)
    _reopen_on_sigusr1(target)
    return make_observer(log_config, target)


def _lock_signal_safely(target: Any) -> None:
    """Give twistd's LogFile the C RLock instead of Twisted's pure-Python one.

    `twisted.python.threadable` locks ``LogFile.write`` with a subclass of the pure-Python
    RLock, which takes its inner lock and only then notes its owner, two bytecodes apart. When
    SIGTERM lands between the two while the reactor thread is logging, the handler's own log
    line ("Received SIGTERM") waits for a lock its thread already holds, and the daemon hangs
    for ever. The C RLock takes and notes in one step."""
    target.__dict__["_threadable_lock"] = threading.RLock()


def _reopen_on_sigusr1(target: Any) -> None:
    """As twistd does for its own log file: SIGUSR1 starts a new file (logrotate)."""
    try:
        import signal
    except ImportError:  # pragma: no cover
        return
    if not hasattr(signal, "SIGUSR1") or signal.getsignal(signal.SIGUSR1):
        return

    def rotate(signum: int, frame: Any) -> None:
        from twisted.internet import reactor

        reactor.callFromThread(target.rotate)

    signal.signal(signal.SIGUSR1, rotate)
