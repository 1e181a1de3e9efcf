"""[log] level and format: the observer twistd installs, and start-up failures in a daemon."""
from __future__ import annotations

import io
import json
import threading

import pytest
from twisted.application.service import Application
from twisted.logger import ILogObserver, Logger, LogPublisher
from twisted.python.logfile import LogFile

from reticulum.config import config_from_dict
from reticulum.logoutput import _lock_signal_safely, make_observer, observer_for_twistd
from reticulum.service import StartupError, make_service


def emit(log_config, *calls):
    out = io.StringIO()
    publisher = LogPublisher(make_observer(log_config, out))
    log = Logger(namespace="reticulum.test", observer=publisher)
    for level, text, fields in calls:
        getattr(log, level)(text, **fields)
    return out.getvalue()


def test_json_lines_parse_and_carry_fields():
    config = config_from_dict({"log": {"format": "json"}}).log
    out = emit(config, ("info", "{user} registered for {seconds} s", {"user": "alice", "seconds": 60}),
               ("warn", "refused {peer}", {"peer": "192.0.2.9"}))
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 2 and len(out.splitlines()) == 2
    assert records[0]["message"] == "alice registered for 60 s"
    assert records[0]["level"] == "info" and records[0]["namespace"] == "reticulum.test"
    assert records[0]["fields"] == {"user": "alice", "seconds": 60}
    assert records[1]["level"] == "warning"


def test_json_line_of_a_failure_carries_the_traceback():
    out = io.StringIO()
    log = Logger(namespace="reticulum.test", observer=LogPublisher(
        make_observer(config_from_dict({"log": {"format": "json"}}).log, out)))
    try:
        1 / 0
    except ZeroDivisionError:
        log.failure("while dividing")
    record = json.loads(out.getvalue())
    assert record["level"] == "critical" and "ZeroDivisionError" in record["traceback"]


@pytest.mark.parametrize("level, seen", [("debug", 3), ("info", 2), ("warning", 1)])
def test_level_drops_what_is_below(level, seen):
    out = emit(config_from_dict({"log": {"level": level}}).log,
               ("debug", "d", {}), ("info", "i", {}), ("warn", "w", {}))
    assert len(out.splitlines()) == seen


def test_twistd_options_choose_the_destination(tmp_path):
    log_config = config_from_dict({}).log
    assert observer_for_twistd(log_config, {"syslog": True}) is None
    assert observer_for_twistd(log_config, {"nodaemon": True, "logfile": None}) is not None
    logfile = tmp_path / "server.log"
    observer = observer_for_twistd(log_config, {"nodaemon": False, "logfile": str(logfile)})
    Logger(namespace="x", observer=observer).info("to the file")
    assert "to the file" in logfile.read_text()


def test_the_log_file_lock_survives_a_signal_handler_that_logs(tmp_path):
    """The daemon's log file is locked with the C RLock, which takes and notes its owner in one
    step: a signal handler that logs on the same thread can always take it again. Twisted's
    own lock (the pure-Python RLock) can hang between its two steps."""
    plain = LogFile.fromFullPath(str(tmp_path / "plain.log"))
    plain.write("x\n")
    assert type(vars(plain)["_threadable_lock"]) is not type(threading.RLock())

    target = LogFile.fromFullPath(str(tmp_path / "server.log"))
    _lock_signal_safely(target)
    target.write("first\n")
    target.flush()
    assert type(vars(target)["_threadable_lock"]) is type(threading.RLock())
    assert (tmp_path / "server.log").read_text() == "first\n"


def test_the_application_gets_the_observer(tmp_path):
    service = make_service(config_from_dict({"state_dir": str(tmp_path)}))
    service.twistd_options = {"nodaemon": True}
    application = Application("reticulum")
    service.setServiceParent(application)
    assert application.getComponent(ILogObserver, None) is not None


def test_a_tac_keeps_twistds_observer_unless_log_asks_for_more(tmp_path):
    plain = Application("reticulum")
    make_service(config_from_dict({"state_dir": str(tmp_path)})).setServiceParent(plain)
    assert plain.getComponent(ILogObserver, None) is None
    json_logs = Application("reticulum")
    make_service(config_from_dict({"state_dir": str(tmp_path), "log": {"format": "json"}})
                 ).setServiceParent(json_logs)
    assert json_logs.getComponent(ILogObserver, None) is not None


def test_a_daemon_raises_instead_of_exiting(tmp_path):
    """twistd reports an exception to its waiting parent; SystemExit would leave it waiting."""
    (tmp_path / "file").write_text("")
    service = make_service(config_from_dict({"state_dir": str(tmp_path / "file" / "state")}))
    service.twistd_options = {"nodaemon": False}
    with pytest.raises(StartupError, match="cannot create state_dir"):
        service.privilegedStartService()
    foreground = make_service(config_from_dict({"state_dir": str(tmp_path / "file" / "state")}))
    foreground.twistd_options = {"nodaemon": True}
    with pytest.raises(SystemExit):
        foreground.privilegedStartService()
