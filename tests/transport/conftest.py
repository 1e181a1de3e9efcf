"""A fake core and a flow table on a memory reactor, for transport tests."""

from __future__ import annotations

import socket
from typing import Any, List, Tuple

import pytest
from twisted.internet.testing import MemoryReactorClock

from reticulum.config import config_from_dict
from reticulum.transport import Transports


class FakeCore:
    """Records what the transports hand to the core."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, Any, Any]] = []
        self.fail = False

    def _record(self, name: str, data: Any, flow: Any = None) -> None:
        self.calls.append((name, data, flow))
        if self.fail:
            raise RuntimeError("core exploded")

    def message_received(self, data, flow) -> None:
        self._record("receive", data, flow)

    def message_too_large(self, head, flow) -> None:
        self._record("too_large", head, flow)

    def flow_closed(self, flow) -> None:
        self._record("closed", None, flow)

    def flow_failed(self, flow) -> None:
        self._record("failed", None, flow)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def named(self, name: str) -> list:
        return [c for c in self.calls if c[0] == name]


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        t = socket.socket(family, socket.SOCK_STREAM)
        u = socket.socket(family, socket.SOCK_DGRAM)
        try:
            t.bind((host, 0))
            port = t.getsockname()[1]
            try:
                u.bind((host, port))
            except OSError:
                continue
            return port
        finally:
            t.close()
            u.close()


def make_config(**sections):
    return config_from_dict(sections, base_dir="/tmp")


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
def reactor() -> MemoryReactorClock:
    return MemoryReactorClock()


@pytest.fixture
def make_transports(core, reactor):
    def make(**sections) -> Transports:
        t = Transports(make_config(**sections), reactor=reactor)
        t.delivery.sink = core  # what listen(core) does, without binding sockets
        return t

    return make
