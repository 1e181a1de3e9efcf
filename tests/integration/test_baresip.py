"""A real hardphone at its defaults against the bundled [auth] defaults: Debian's baresip 1.0
(libre 1.1) gives up on a registration whose 401 names any algorithm it does not know, so
the server sends one MD5 challenge unless told otherwise. It registers over UDP and over TCP
and is then called through the server (reached at its Contact, or over its live connection)."""
from __future__ import annotations

import pytest

from tests.integration.baresip import Baresip, called_by_sipp, phones  # noqa: F401 (fixture)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_registers_with_the_defaults_and_is_called(start_server, tmp_path, phones,
                                                           transport):
    server = start_server()
    alice = Baresip(tmp_path / "alice", server, "alice", transport=transport)
    phones.append(alice)
    alice.registered()
    called_by_sipp(server, tmp_path, alice)
    lines = server.read_log().splitlines()
    assert any("<- REGISTER" in l and "from %s" % transport in l for l in lines)
    assert any("-> INVITE" in l and "to %s" % transport in l for l in lines)


def test_baresip_fails_when_sha256_is_offered_too(start_server, tmp_path, phones):
    """Why the default is one MD5 challenge (the test would pass vacuously otherwise)."""
    server = start_server(auth={"algorithms": ["SHA-256", "MD5"]})
    alice = Baresip(tmp_path / "alice", server, "alice", transport="udp")
    phones.append(alice)
    with pytest.raises(AssertionError):
        alice.registered(timeout=6)
