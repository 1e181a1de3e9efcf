"""``[server] workers = N``: N processes serve the same ports, each a node of the cluster.

The process twistd started is worker 0. Once its sockets are bound it starts workers 1..N-1
(``python -m reticulum.workers CONFIG INDEX``), which bind the same UDP/TCP/TLS/WS addresses:
every listening socket has ``SO_REUSEPORT``, so the kernel spreads datagrams and connections
over the workers. Requests may land on any worker; a response must reach the worker whose
client transaction sent the request, so each worker also listens on a UDP port of its own
and writes that port in its Via sent-by and Record-Route. Workers share bindings, accounts
and secrets through the ``[cluster]`` Redis store (hence ``workers > 1`` needs ``[cluster]``);
a worker is the node ``<node>.w<index>``.

Workers 1..N-1 stop when worker 0 stops (it sends SIGTERM) or goes away (they notice their
parent changed).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Any, List, Optional, Tuple

from reticulum.addresses import advertised_host

__all__ = ["own_udp_address", "spawn", "stop", "main"]

#: how often a worker looks whether worker 0 is still there (seconds)
PARENT_CHECK = 1.0


def own_udp_address(config: Any) -> Tuple[str, int]:
    """A UDP port of this worker's own on the host of the first UDP listening address."""
    host = advertised_host(config.listen.udp[0][0])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return host, s.getsockname()[1]


def spawn(config: Any) -> List[subprocess.Popen]:
    """Start workers 1..N-1 for the configuration file ``config`` came from."""
    if config.path is None:
        raise ValueError("[server] workers needs a configuration file")
    children = []
    for index in range(1, config.server.workers):
        children.append(subprocess.Popen(
            [sys.executable, "-m", "reticulum.workers", config.path, str(index)],
            stdin=subprocess.DEVNULL, close_fds=True))
    return children


def stop(children: List[subprocess.Popen], timeout: float = 5.0) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout)


def main(argv: Optional[List[str]] = None) -> int:
    """Worker INDEX of the server configured by CONFIG (started by worker 0)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        sys.stderr.write("usage: python -m reticulum.workers CONFIG INDEX\n")
        return 2
    from twisted.internet import reactor, task
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from reticulum.config import ConfigError, load_config
    from reticulum.service import ReticulumService

    try:
        config = load_config(args[0])
    except ConfigError as e:
        sys.stderr.write("reticulum: %s\n" % (e,))
        return 2
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)],
                                     redirectStandardIO=False)
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


if __name__ == "__main__":
    sys.exit(main())
