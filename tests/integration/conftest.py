"""Fixtures for tests against the real server.

``start_server(**overrides)`` starts a server (see ``harness.Server``) and
waits until it answers; every server a test started is stopped afterwards,
and their logs are printed when the test failed.
"""

from __future__ import annotations

from typing import Any, List

import pytest

from tests.integration.harness import Server, sipp_path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


def _failed(node: Any) -> bool:
    for when in ("setup", "call"):
        rep = getattr(node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


@pytest.fixture
def start_server(request, tmp_path):
    """Factory: ``start_server(port=None, host="127.0.0.1", transports=("udp", "tcp"),
    wait=True, **config_overrides) -> Server``."""
    servers: List[Server] = []

    def start(wait: bool = True, **kwargs: Any) -> Server:
        server = Server(tmp_path / ("server%d" % len(servers)), **kwargs)
        servers.append(server)
        server.start(wait=wait)
        return server

    yield start

    for server in servers:
        server.stop()
    if _failed(request.node):
        for server in servers:
            print("===== log of %r =====" % (server,))
            print(server.read_log())


@pytest.fixture
def sipp():
    """The sipp binary; the test fails (is not skipped) when it is missing."""
    return sipp_path()
