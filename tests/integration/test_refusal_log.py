"""Every refusal says why, once: the real server's log after SIPp is refused for each rule."""
from __future__ import annotations

import time
from typing import Callable, List

from tests.integration.harness import free_port, start_sipp
from tests.integration.sipclient import DOMAIN, expecting, register


class LogWatch:
    """The lines a server logged since the last mark."""

    def __init__(self, server):
        self.server = server
        self.start = 0

    def mark(self) -> None:
        self.start = len(self.server.read_log())

    def lines(self) -> List[str]:
        return self.server.read_log()[self.start:].splitlines()

    def wait(self, pred: Callable[[str], bool], timeout: float = 10.0) -> List[str]:
        """The new lines that match, once there is at least one (the log is written a moment
        after the response)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines() if pred(line)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


def call(server, tmp_path, status, callee, domain, caller):
    result = start_sipp(expecting(tmp_path, "uac_fail", status), server.address, "-s", callee,
                        "-key", "domain", domain, "-key", "caller", caller, cwd=tmp_path,
                        timeout=20).wait()
    assert result.ok, result.describe()


def reasons(lines: List[str]) -> List[str]:
    """The lines that say why something was refused or challenged."""
    words = ("Refused ", "Challenging ", "Wrong password", "Refusing ", "No route")
    return [line for line in lines if any(w in line for w in words)]


def test_every_refusal_says_why_once(start_server, tmp_path):
    server = start_server(auth={"max_failures": 2, "lockout_seconds": 300})
    log = LogWatch(server)

    # an INVITE from a local user without credentials: challenged
    log.mark()
    call(server, tmp_path, 407, "bob", DOMAIN, "alice@" + DOMAIN)
    found = log.wait(lambda l: "Challenging INVITE" in l)
    assert len(found) == 1 and found[0].endswith("from 127.0.0.1: no credentials"), log.lines()
    assert reasons(log.lines()) == found

    # a stranger to a foreign domain: relaying denied
    log.mark()
    call(server, tmp_path, 403, "dave", "example.com", "carol@example.org")
    found = log.wait(lambda l: "Refused INVITE" in l)
    assert len(found) == 1 and "with 403" in found[0] and "foreign" in found[0], log.lines()
    assert reasons(log.lines()) == found

    # a stranger to a user nobody has: no such user
    log.mark()
    call(server, tmp_path, 404, "nobody", DOMAIN, "carol@example.org")
    found = log.wait(lambda l: "Refused INVITE" in l)
    assert len(found) == 1, log.lines()
    assert found[0].endswith("with 404: no such user sip:nobody@%s" % DOMAIN), found
    assert reasons(log.lines()) == found

    # a wrong password, then one more: the second locks 127.0.0.1 out for alice
    for attempt in (1, 2):
        log.mark()
        result = register(server, tmp_path, "alice", free_port(), password="wrong",
                          scenario=expecting(tmp_path, "register_expect", 401))
        assert result.ok, result.describe()
        found = log.wait(lambda l: "Wrong password" in l)
        assert len(found) == 1, log.lines()
        assert "Wrong password for 'alice' from 127.0.0.1 (REGISTER " in found[0]
        if attempt == 2:
            locked = log.wait(lambda l: "Refusing source" in l)
            assert len(locked) == 1, log.lines()
            assert "Refusing source 127.0.0.1 for 'alice' for 300s" in locked[0]

    # locked out: the right password is refused, and the lockout is not told again
    log.mark()
    result = register(server, tmp_path, "alice", free_port(),
                      scenario=expecting(tmp_path, "register_expect", 403))
    assert result.ok, result.describe()
    log.wait(lambda l: "Challenging REGISTER" in l)
    assert [l for l in reasons(log.lines()) if "Challenging REGISTER" not in l] == [], log.lines()


def test_a_digest_uri_mismatch_says_so_once(start_server, tmp_path):
    server = start_server(auth={"check_uri": True})
    log = LogWatch(server)
    # the digest uri names another request (SIPp -auth_uri: this test is about check_uri)
    log.mark()
    result = register(server, tmp_path, "alice", free_port(), args=("-auth_uri", "elsewhere.invalid"),
                      scenario=expecting(tmp_path, "register_expect", 401))
    assert result.ok, result.describe()
    found = log.wait(lambda l: "digest uri" in l)
    assert len(found) == 1 and "for 'alice'" in found[0] and "elsewhere.invalid" in found[0] \
        and "is not the Request-URI sip:%s" % DOMAIN in found[0], log.lines()
    assert [l for l in reasons(log.lines()) if "REGISTER" in l and "no credentials" not in l] \
        == found
