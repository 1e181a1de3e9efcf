"""``[server] workers = N``: N processes serve the same ports, each a node of the cluster.

The process twistd started is worker 0. Once its sockets are bound it starts workers 1..N-1
(``python -m reticulum worker CONFIG INDEX``, see :mod:`reticulum.__main__`), which bind the same UDP/TCP/TLS/WS addresses:
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

import signal
import socket
import subprocess
import sys
from typing import Any, List, Tuple

from reticulum.addresses import advertised_host

__all__ = ["own_udp_address", "spawn", "stop", "PARENT_CHECK"]

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
    """Start workers 1..N-1 for the configuration file ``config`` came from. Each runs the
    whole server (:func:`reticulum.__main__.run_worker`); this module stays below the
    service, which calls it."""
    if config.path is None:
        raise ValueError("[server] workers needs a configuration file")
    children = []
    for index in range(1, config.server.workers):
        children.append(subprocess.Popen(
            [sys.executable, "-m", "reticulum", "worker", config.path, str(index)],
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
