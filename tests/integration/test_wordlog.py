"""The log in words of the real server, for registrations, calls and connections made by
SIPp, and `[log] messages` = off / summary / full."""
from __future__ import annotations

import re
import time

from tests.integration.harness import free_port
from tests.integration.sipclient import DOMAIN, register
from tests.integration.test_admin import register_outbound, sipp_call


def wait_log(server, pattern: str, timeout: float = 15.0) -> "re.Match":
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, server.read_log())
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("no log line matching %r in:\n%s" % (pattern, server.read_log()))
        time.sleep(0.1)


def test_registrations_in_words(start_server, tmp_path):
    server = start_server()
    port = free_port()
    assert register(server, tmp_path, "alice", port).ok
    wait_log(server, r"alice registered sip:alice@127\.0\.0\.1:%d;line=1 \(udp 127\.0\.0\.1:%d\)"
                     r" for 3600 s" % (port, port))
    assert register(server, tmp_path, "alice", port, expires=600).ok
    wait_log(server, r"alice refreshed sip:alice@127\.0\.0\.1:%d;line=1 \(udp 127\.0\.0\.1:%d\)"
                     r" for 600 s" % (port, port))
    assert register(server, tmp_path, "alice", port, expires=0).ok
    wait_log(server, r"alice unregistered sip:alice@127\.0\.0\.1:%d;line=1" % port)
    # bob over TCP as an outbound client: SIPp closes its connection when it is done, and
    # the binding goes with it
    tcp = free_port()
    assert register_outbound(server, tmp_path, "bob", tcp).ok
    wait_log(server, r"bob registered sip:bob@127\.0\.0\.1:%d;transport=tcp \(tcp 127\.0\.0\.1:%d\)"
             % (tcp, tcp))
    wait_log(server, r"connection from 127\.0\.0\.1 closed: 1 binding removed")


def test_a_call_in_words(start_server, tmp_path):
    server = start_server()
    uac, uas, _ = sipp_call(server, tmp_path, pause_ms=1500)
    assert uac.wait().ok and uas.wait().ok
    answered = wait_log(server, r"call alice -> bob \(Call-ID ([^)]+)\): 180 after ([\d.]+) s, "
                                r"200 after ([\d.]+) s\n")
    call_id = answered.group(1)
    assert 0 <= float(answered.group(2)) <= float(answered.group(3)) < 10
    ended = wait_log(server, r"call ended by alice after ([\d.]+) s \(Call-ID %s\)"
                     % re.escape(call_id))
    assert 1.4 <= float(ended.group(1)) < 10
    log = server.read_log()
    # the challenge is no call of its own, and each fact is told once
    assert len(re.findall(r"call alice -> bob", log)) == 1
    assert "407" not in "".join(line for line in log.splitlines() if "call alice" in line)


def test_messages_full_logs_whole_messages(start_server, tmp_path):
    server = start_server(log={"messages": "full"})
    assert register(server, tmp_path, "alice", free_port()).ok
    log = wait_log(server, r"alice registered").string
    assert re.search(r"<- REGISTER \S+ from udp 127\.0\.0\.1:\d+\n\s+REGISTER sip:%s SIP/2\.0\n"
                     % re.escape(DOMAIN), log), log
    assert re.search(r"\n\s+CSeq: 2 REGISTER\n", log)
    assert re.search(r"-> 200 OK/REGISTER \S+ to udp \S+\n\s+SIP/2\.0 200 OK\n", log)


def test_messages_off_logs_no_messages(start_server, tmp_path):
    server = start_server(log={"messages": "off"})
    assert register(server, tmp_path, "alice", free_port()).ok
    time.sleep(0.5)
    log = server.read_log()
    assert "<- REGISTER" not in log and "-> 200" not in log
    assert "alice registered" not in log
