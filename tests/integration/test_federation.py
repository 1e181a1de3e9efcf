"""Federation: two servers find each other through real DNS (RFC 3263) and carry calls both ways.

A twisted.names server on loopback serves a zone this test writes (NAPTR, SRV, A); a.test is
served on 127.0.0.21, b.test on 127.0.0.22 and 127.0.0.23 (two listening addresses, one
registrar). b.test's first SRV target, 127.0.0.24, is dead or answers 503: calls still arrive
through the second, and the caller sees one final response. Callers authenticate with SIPp at
its defaults; nobody else is relayed to the other domain.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.integration.harness import REPO_ROOT, HarnessError, free_port, start_sipp
from tests.integration.sipclient import expecting

A_HOST, B_HOST, B_HOST2, DEAD_HOST = "127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"
CLIENT = "127.0.0.1"

ZONE = """\
zone = [
    SOA('test', mname='ns.test', rname='root.test', serial=1, refresh=60, retry=60,
        expire=60, minimum=5, ttl=5),
    A('ns.test', '127.0.0.1'),
    NAPTR('a.test', order=10, preference=10, flags=b's', service=b'SIP+D2T', regexp=b'',
          replacement='_sip._tcp.a.test', ttl=60),
    SRV('_sip._tcp.a.test', priority=10, weight=0, port={a_port}, target='sip.a.test', ttl=60),
    A('sip.a.test', '{a_host}', ttl=60),
    NAPTR('b.test', order=10, preference=10, flags=b's', service=b'SIP+D2T', regexp=b'',
          replacement='_sip._tcp.b.test', ttl=60),
    SRV('_sip._tcp.b.test', priority=10, weight=0, port={dead_port}, target='first.b.test',
        ttl=60),
    SRV('_sip._tcp.b.test', priority=20, weight=0, port={b_port}, target='second.b.test',
        ttl=60),
    A('first.b.test', '{dead_host}', ttl=60),
    A('second.b.test', '{b_host2}', ttl=60),
]
"""


class DNSServer:
    """twisted.names serving one Python-syntax zone file on 127.0.0.1 (UDP and TCP)."""

    def __init__(self, directory, records: str):
        self.port = free_port("127.0.0.1")
        self.zone = directory / "test.zone"
        self.zone.write_text(records)
        self.log = directory / "dns.log"
        self.proc = None

    def start(self) -> "DNSServer":
        out = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
             "-n", "--pidfile=", "dns", "--pyzone", str(self.zone), "--port", str(self.port),
             "--interface", "127.0.0.1"],
            cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        from reticulum.dns.lookup import make_resolver, query

        resolver = make_resolver([("127.0.0.1", self.port)], timeout=0.5)
        deadline = time.monotonic() + 20
        while query(resolver, "sip.a.test", "A").error is not None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise HarnessError("DNS server did not start:\n" + self.log.read_text())
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def federation(start_server, tmp_path):
    """(a, b, ports): both servers running against the test zone."""
    a_port, b_port, dead_port = free_port(A_HOST), free_port(B_HOST), free_port(DEAD_HOST)
    while True:  # B listens on the same port on both of its addresses
        try:
            import socket

            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(socket.AF_INET, kind)
                s.bind((B_HOST2, b_port))
                s.close()
            break
        except OSError:
            b_port = free_port(B_HOST)
    dns = DNSServer(tmp_path, ZONE.format(a_port=a_port, a_host=A_HOST, b_port=b_port,
                                          b_host2=B_HOST2, dead_port=dead_port,
                                          dead_host=DEAD_HOST)).start()
    common = dict(registrar={"store": "memory"},
                  dns={"nameservers": ["127.0.0.1:%d" % dns.port], "timeout": 2})
    try:
        a = start_server(host=A_HOST, port=a_port, domains=["a.test"], **common)
        b = start_server(host=B_HOST, port=b_port, domains=["b.test"],
                         listen={"udp": ["%s:%d" % (h, b_port) for h in (B_HOST, B_HOST2)],
                                 "tcp": ["%s:%d" % (h, b_port) for h in (B_HOST, B_HOST2)]},
                         **common)
        yield a, b, dead_port
    finally:
        dns.stop()


def register(server, tmp_path, user, port):
    result = start_sipp("register", server.address, "-s", user, "-au", user, "-ap",
                        "%s-secret" % user, "-key", "domain", server.domain,
                        "-key", "expires", "3600", "-key", "contact_params", "",
                        "-key", "contact_port", str(port), local_ip=CLIENT, local_port=port,
                        cwd=tmp_path, timeout=15, name="reg-%s-%d" % (user, port)).wait()
    assert result.ok, result.describe()


def callee(tmp_path, port, scenario="uas", transport="u1", host=CLIENT):
    return start_sipp(scenario, None, local_ip=host, local_port=port, transport=transport,
                      cwd=tmp_path, timeout=40, name="%s-%s-%d" % (scenario, host, port))


def call(server, tmp_path, caller, callee_aor, scenario="uac_auth", pause=200):
    """A call from `caller` (a local user, who authenticates) through `server`."""
    user, domain = callee_aor.split("@")
    name = caller.split("@")[0]
    return start_sipp(scenario, server.address, "-s", user, "-key", "domain", domain,
                      "-key", "caller", caller, "-au", name, "-ap", "%s-secret" % name,
                      "-d", str(pause), local_ip=CLIENT, cwd=tmp_path, timeout=40)


def connections_to(server, host, port) -> int:
    """How many connections the server opened to host:port."""
    return sum(1 for line in server.read_log().splitlines()
               if "to %s:%d: connecting" % (host, port) in line)


@pytest.mark.parametrize("first_target", ["dead", "503"])
def test_calls_cross_both_proxies_in_both_directions(federation, tmp_path, first_target):
    a, b, dead_port = federation
    unavailable = None
    if first_target == "503":
        unavailable = callee(tmp_path, dead_port, "uas_503", transport="t1", host=DEAD_HOST)
        time.sleep(0.5)
    alice_port, bob_port = free_port(CLIENT), free_port(CLIENT)
    register(a, tmp_path, "alice", alice_port)
    register(b, tmp_path, "bob", bob_port)  # on B's first address; calls arrive on its second

    # a.test -> b.test: DNS finds b.test, its first target fails, the second one answers
    bob = callee(tmp_path, bob_port)
    time.sleep(0.3)
    result = call(a, tmp_path, "alice@a.test", "bob@b.test").wait()
    assert result.ok, result.describe()
    assert bob.wait().ok
    if unavailable is not None:
        seen = unavailable.wait()
        assert seen.ok, seen.describe()  # exactly one INVITE, answered 503, ACKed
    for server in (a, b):  # 200, ACK and BYE crossed both proxies
        log = server.read_log()
        assert "-> ACK" in log and "-> BYE" in log and "-> 200 OK/BYE" in log, log
    log = a.read_log()
    assert connections_to(a, DEAD_HOST, dead_port) == 1 and "failed; trying" in log, log
    # B took the call on its second address and found bob, registered on its first
    assert "to %s:%d opened" % (B_HOST2, b.port) in b.read_log()

    # b.test -> a.test
    alice = callee(tmp_path, alice_port)
    time.sleep(0.3)
    result = call(b, tmp_path, "bob@b.test", "alice@a.test").wait()
    assert result.ok, result.describe()
    assert alice.wait().ok

    # a second call from A reuses A's connection to B
    bob = callee(tmp_path, bob_port)
    time.sleep(0.3)
    result = call(a, tmp_path, "alice@a.test", "bob@b.test").wait()
    assert result.ok, result.describe()
    assert bob.wait().ok
    assert connections_to(a, B_HOST2, b.port) == 1, a.read_log()


def test_unknown_domain_gets_one_quick_final_response_while_calls_go_on(federation, tmp_path):
    a, b, _ = federation
    bob_port = free_port(CLIENT)
    register(b, tmp_path, "bob", bob_port)
    bob = callee(tmp_path, bob_port)
    time.sleep(0.3)
    ongoing = call(a, tmp_path, "alice@a.test", "bob@b.test", pause=4000)
    time.sleep(0.5)
    started = time.monotonic()
    lost = call(a, tmp_path, "alice@a.test", "bob@nowhere.test",
                scenario=expecting(tmp_path, "uac_auth_fail", 404)).wait()
    assert lost.ok, lost.describe()  # one 404, and no second final response
    assert time.monotonic() - started < 1.5 + 4  # its own 1.5 s pause included
    assert "Warning: 399" in lost.messages and "nowhere.test" in lost.messages
    assert "nowhere.test" in a.read_log()
    result = ongoing.wait()
    assert result.ok, result.describe()
    assert bob.wait().ok


def test_strangers_are_not_relayed_to_the_other_domain(federation, tmp_path):
    """A caller of neither domain, and a local caller without credentials: A relays neither;
    nothing leaves for b.test's servers."""
    a, b, dead_port = federation
    for caller, status in (("carol@elsewhere.test", 403), ("alice@a.test", 407)):
        result = start_sipp(expecting(tmp_path, "uac_fail", status), a.address, "-s", "bob",
                            "-key", "domain", "b.test", "-key", "caller", caller,
                            local_ip=CLIENT, cwd=tmp_path, timeout=20).wait()
        assert result.ok, result.describe()
    assert connections_to(a, B_HOST2, b.port) == 0 and connections_to(a, DEAD_HOST, dead_port) == 0
    assert "-> INVITE" not in a.read_log()
