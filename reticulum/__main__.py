"""``python -m reticulum``: the twistd plugin in the foreground, ``init``, and the workers.

    python -m reticulum [--config PATH] ...   same as ``twistd -n --pidfile= reticulum ...``
    python -m reticulum init PATH             write a sample configuration to PATH
    python -m reticulum --version             print the version
    python -m reticulum worker CONFIG INDEX   worker INDEX of ``[server] workers`` (started
                                              by worker 0, see reticulum.workers)
"""

from __future__ import annotations

import os
import sys
from typing import Any, List, Optional

SAMPLE = "sample.toml"


def sample_config() -> bytes:
    """The sample configuration shipped in the package."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, SAMPLE), "rb") as f:
        return f.read()


def init_config(path: str) -> int:
    """Write the sample configuration to ``path`` (never over an existing file)."""
    try:
        data = sample_config()
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with open(path, "xb") as f:
            f.write(data)
    except FileExistsError:
        sys.stderr.write("reticulum: %s already exists; not overwritten\n" % (path,))
        return 1
    except OSError as e:
        sys.stderr.write("reticulum: cannot write %s: %s\n" % (path, e.strerror or e))
        return 1
    print("wrote %s; edit it, then: twistd -n reticulum --config %s" % (path, path))
    return 0


def run_worker(args: List[str]) -> int:
    """Worker INDEX of the server configured by CONFIG (started by worker 0): the whole
    server, without twistd, until worker 0 stops it (SIGTERM) or goes away."""
    if len(args) != 2 or not args[1].isdigit():
        sys.stderr.write("usage: python -m reticulum worker CONFIG INDEX\n")
        return 2
    # imported here: the reactor module installs the default reactor when imported, and
    # `init` and twistd (which picks its own reactor) must not pay for the server
    from twisted.internet import reactor as default_reactor
    from twisted.internet import task
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from reticulum.config import ConfigError, load_config
    from reticulum.service import ReticulumService
    from reticulum.workers import PARENT_CHECK

    # zope interfaces (IReactorCore, ILogObserver) read to mypy as classes whose methods
    # lack `self`, and @implementer is invisible to it: the reactor is used untyped
    reactor: Any = default_reactor
    try:
        config = load_config(args[0])
    except ConfigError as e:
        sys.stderr.write("reticulum: %s\n" % (e,))
        return 2
    observer: Any = textFileLogObserver(sys.stdout)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    service = ReticulumService(config, reactor=reactor, worker=int(args[1]))
    parent = os.getppid()

    def parent_gone() -> None:
        if os.getppid() != parent:
            reactor.stop()

    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    task.LoopingCall(parent_gone).start(PARENT_CHECK, now=False)
    reactor.run()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "init":
        if len(args) != 2 or args[1].startswith("-"):
            sys.stderr.write("usage: python -m reticulum init PATH\n")
            return 2
        return init_config(args[1])
    if args and args[0] == "worker":
        return run_worker(args[1:])
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", "-n", "--pidfile=", "reticulum"] + args
    run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
