"""Digest authentication and authorization through the real server, with SIPp."""
from __future__ import annotations

import time

from tests.integration.harness import free_port, start_sipp
from tests.integration.sipclient import DOMAIN, expecting, register


def test_register_with_digest(start_server, tmp_path):
    server = start_server()
    result = register(server, tmp_path, "alice", free_port())
    assert result.ok, result.describe()


def test_wrong_password_never_gets_200(start_server, tmp_path):
    server = start_server()
    result = register(server, tmp_path, "alice", free_port(), password="wrong",
                      scenario=expecting(tmp_path, "register_expect", 401))
    assert result.ok, result.describe()
    assert "SIP/2.0 200" not in result.messages


def test_registering_someone_elses_address_is_forbidden(start_server, tmp_path):
    server = start_server()
    result = register(server, tmp_path, "bob", free_port(), auth_user="alice",
                      password="alice-secret",
                      scenario=expecting(tmp_path, "register_expect", 403))
    assert result.ok, result.describe()


def test_unknown_user_looks_like_a_wrong_password(start_server, tmp_path):
    server = start_server()
    result = register(server, tmp_path, "mallory", free_port(),
                      scenario=expecting(tmp_path, "register_expect", 401))
    assert result.ok, result.describe()


def _call(server, tmp_path, scenario, callee, domain, caller):
    return start_sipp(scenario, server.address, "-s", callee, "-key", "domain", domain,
                      "-key", "caller", caller, cwd=tmp_path, timeout=20).wait()


def test_no_open_relay(start_server, tmp_path):
    server = start_server()
    # A local user without credentials is challenged; nothing is forwarded.
    result = _call(server, tmp_path, expecting(tmp_path, "uac_fail", 407), "dave",
                   "example.com", "alice@" + DOMAIN)
    assert result.ok, result.describe()
    # A stranger asking to reach another stranger is refused.
    result = _call(server, tmp_path, expecting(tmp_path, "uac_fail", 403), "dave",
                   "example.com", "carol@example.org")
    assert result.ok, result.describe()
    assert "-> INVITE" not in server.read_log()


def test_lockout_after_repeated_failures_and_recovery(start_server, tmp_path):
    server = start_server(auth={"max_failures": 3, "lockout_seconds": 3})
    for _ in range(3):
        result = register(server, tmp_path, "alice", free_port(), password="wrong",
                          scenario=expecting(tmp_path, "register_expect", 401))
        assert result.ok, result.describe()
    # That address is refused for alice for the rest of the window, right password or not.
    result = register(server, tmp_path, "alice", free_port(),
                      scenario=expecting(tmp_path, "register_expect", 403))
    assert result.ok, result.describe()
    assert "refusing source 127.0.0.1" in server.read_log().lower()
    time.sleep(3.5)
    result = register(server, tmp_path, "alice", free_port())
    assert result.ok, result.describe()
