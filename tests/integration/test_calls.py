"""Call flows through the real server with SIPp on both ends (RFC 3261 §16), at SIPp's
defaults and the bundled [auth] defaults. Several callees are registered by a separate SIPp
(another socket, or a TCP connection that is closed before the call): requests go to the
registered Contact (RFC 3261 §10, §16.5)."""
from __future__ import annotations

import time

import pytest

from tests.integration.harness import free_port, start_sipp
from tests.integration.sipclient import DOMAIN, expecting, register

FOREIGN_CALLER = "carol@example.org"  # a caller of another domain needs no credentials


def call(server, tmp_path, scenario, callee="bob", transport="u1", *args, timeout=30):
    return start_sipp(scenario, server.address, "-s", callee, "-key", "domain", DOMAIN,
                      "-key", "caller", FOREIGN_CALLER, "-d", "200", *args,
                      transport=transport, cwd=tmp_path, timeout=timeout)


def callee(tmp_path, scenario, port, transport="u1", timeout=30):
    return start_sipp(scenario, None, transport=transport, local_port=port, cwd=tmp_path,
                      timeout=timeout, name="%s-%d" % (scenario, port))


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_basic_call(start_server, tmp_path, transport):
    server = start_server()
    port = free_port()
    assert register(server, tmp_path, "bob", port,
                    contact_params=";line=1" if transport == "u1" else ";transport=tcp").ok
    uas = callee(tmp_path, "uas", port, transport)
    time.sleep(0.3)
    uac = call(server, tmp_path, "uac", "bob", transport).wait()
    assert uac.ok, uac.describe()
    assert uas.wait().ok


def test_callee_registered_by_another_client_gets_its_call(start_server, tmp_path):
    """A SIPp UAS whose REGISTER came from another SIPp (another port): the INVITE goes to
    the registered Contact, not to where the REGISTER came from."""
    server = start_server()
    port, helper = free_port(), free_port()
    uas = callee(tmp_path, "uas", port)
    assert register(server, tmp_path, "bob", port, source_port=helper).ok
    uac = call(server, tmp_path, "uac", "bob").wait()
    assert uac.ok, uac.describe()
    result = uas.wait()
    assert result.ok, result.describe()


def test_tcp_callee_registered_over_a_connection_that_closed_gets_its_call(start_server,
                                                                            tmp_path):
    """A SIPp UAS on TCP, registered by a SIPp that then exits (its connection closes): the
    binding stays, and the call opens a new connection to the Contact."""
    server = start_server()
    port, helper = free_port(), free_port()
    uas = callee(tmp_path, "uas", port, "t1")
    assert register(server, tmp_path, "bob", port, transport="t1",
                    contact_params=";transport=tcp", source_port=helper).ok
    deadline = time.monotonic() + 10
    while "closed" not in server.read_log() and time.monotonic() < deadline:
        time.sleep(0.1)  # the registering SIPp has gone, and its connection with it
    uac = call(server, tmp_path, "uac", "bob", "u1").wait()
    assert uac.ok, uac.describe()
    result = uas.wait()
    assert result.ok, result.describe()


def test_udp_caller_reaches_tcp_callee(start_server, tmp_path):
    server = start_server()
    port = free_port()
    assert register(server, tmp_path, "bob", port, contact_params=";transport=tcp").ok
    uas = callee(tmp_path, "uas", port, "t1")
    time.sleep(0.3)
    uac = call(server, tmp_path, "uac", "bob", "u1").wait()
    assert uac.ok, uac.describe()
    result = uas.wait()
    assert result.ok, result.describe()


def test_busy_is_acked_by_the_proxy_and_the_callers_ack_absorbed(start_server, tmp_path):
    server = start_server()
    port = free_port()
    assert register(server, tmp_path, "bob", port).ok
    uas = callee(tmp_path, "uas_busy", port)
    time.sleep(0.3)
    uac = call(server, tmp_path, expecting(tmp_path, "uac_fail", 486)).wait()
    assert uac.ok, uac.describe()
    result = uas.wait()
    assert result.ok, result.describe()  # exactly one ACK reached the callee


def test_cancel_during_ringing(start_server, tmp_path):
    server = start_server()
    port = free_port()
    assert register(server, tmp_path, "bob", port).ok
    uas = callee(tmp_path, "uas_ring", port)
    time.sleep(0.3)
    uac = call(server, tmp_path, "uac_cancel").wait()
    assert uac.ok, uac.describe()
    result = uas.wait()
    assert result.ok, result.describe()


def test_unanswered_call_gets_exactly_one_408(start_server, tmp_path):
    server = start_server(timers={"invite_timeout": 3})
    port = free_port()
    assert register(server, tmp_path, "bob", port).ok
    uas = callee(tmp_path, "uas_ring", port)
    time.sleep(0.3)
    started = time.monotonic()
    uac = call(server, tmp_path, expecting(tmp_path, "uac_fail", 408)).wait()
    assert uac.ok, uac.describe()
    assert time.monotonic() - started < 3 + 1.5 + 5
    result = uas.wait()
    assert result.ok, result.describe()  # the ringing callee was CANCELled


def test_forking_one_answers_the_other_is_cancelled(start_server, tmp_path):
    server = start_server()
    answering, ringing = free_port(), free_port()
    assert register(server, tmp_path, "bob", answering, source_port=free_port()).ok
    assert register(server, tmp_path, "bob", ringing).ok
    uas1 = callee(tmp_path, "uas", answering)
    uas2 = callee(tmp_path, "uas_ring", ringing)
    time.sleep(0.3)
    uac = call(server, tmp_path, "uac").wait()
    assert uac.ok, uac.describe()
    for uas in (uas1, uas2):
        result = uas.wait()
        assert result.ok, result.describe()


def local_call(server, tmp_path, *args, name="uac_auth"):
    """alice (of our domain) calls bob with SIPp's own [authentication]."""
    return start_sipp(name, server.address, "-s", "bob",
                      "-au", "alice", "-ap", "alice-secret", "-key", "domain", DOMAIN,
                      "-key", "caller", "alice@" + DOMAIN, *args, cwd=tmp_path, timeout=30)


def test_local_caller_is_challenged_then_connected(start_server, tmp_path):
    """SIPp's default [authentication]: its digest uri names the server's address, not the
    Request-URI."""
    server = start_server()
    port = free_port()
    assert register(server, tmp_path, "bob", port, source_port=free_port()).ok
    uas = callee(tmp_path, "uas", port)
    time.sleep(0.3)
    uac = local_call(server, tmp_path).wait()
    assert uac.ok, uac.describe()
    assert 'uri="sip:%s"' % server.address in uac.messages  # not the Request-URI
    assert uas.wait().ok


def test_check_uri_wants_the_request_uri_as_digest_uri(start_server, tmp_path):
    """[auth] check_uri = true: SIPp's default digest uri is refused; -auth_uri naming the
    Request-URI gets through."""
    server = start_server(auth={"check_uri": True})
    port = free_port()
    assert register(server, tmp_path, "bob", port, args=("-auth_uri", DOMAIN)).ok
    uas = callee(tmp_path, "uas", port)
    refused = local_call(server, tmp_path, name="uac_auth_refused").wait()
    assert refused.ok, refused.describe()
    uac = local_call(server, tmp_path, "-auth_uri", "bob@" + DOMAIN).wait()
    assert uac.ok, uac.describe()
    assert uas.wait().ok


def test_retransmitted_invite_is_absorbed(start_server):
    """A caller's retransmission is answered from our server transaction (the 100 again)
    and never reaches the callee a second time."""
    from tests.integration.sipclient import UDPPeer, build

    # T1 of 2 s: the proxy's own Timer A retransmission cannot blur the count below
    server = start_server(auth={"enabled": False}, timers={"t1": 2.0, "t2": 4.0})
    callee = UDPPeer()
    callee.send(build("REGISTER", "sip:" + DOMAIN, callee.address,
                      from_="<sip:bob@%s>;tag=r" % DOMAIN, to="<sip:bob@%s>" % DOMAIN,
                      headers=["Contact: <sip:bob@127.0.0.1:%d>" % callee.address[1]]), server)
    assert callee.final().startswith(b"SIP/2.0 200")
    caller = UDPPeer()
    invite = build("INVITE", "sip:bob@" + DOMAIN, caller.address, branch="z9hG4bKretrans1")
    caller.send(invite, server)
    assert caller.recv().startswith(b"SIP/2.0 100")
    assert callee.recv().startswith(b"INVITE ")
    caller.send(invite, server)  # the same INVITE again, as a retransmission
    assert caller.recv().startswith(b"SIP/2.0 100")
    callee.sock.settimeout(0.5)
    with pytest.raises(OSError):
        callee.sock.recv(65535)
    caller.close()
    callee.close()
