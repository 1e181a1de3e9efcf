"""The real server answers OPTIONS (SIPp, UDP and TCP) and starts/stops cleanly."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.integration.harness import (
    SCENARIOS,
    free_port,
    run_server_once,
    run_sipp,
    sip_exchange,
    sip_options,
    write_config,
)


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_options_answered_with_200(start_server, sipp, tmp_path, transport):
    server = start_server()
    result = run_sipp(
        SCENARIOS / "options.xml",
        server.address,
        transport=transport,
        calls=3,
        timeout=20,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.describe()
    assert server.running


def test_tcp_keepalive_ping_gets_pong(start_server):
    server = start_server(transports=("tcp",))
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(b"\r\n\r\n")
        assert s.recv(16) == b"\r\n"
        # the connection stays usable for SIP afterwards
        s.sendall(b"\r\n\r\n\r\n\r\n")
        got = b""
        while len(got) < 4:
            got += s.recv(16)
        assert got == b"\r\n\r\n"


OPTIONS_TCP = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-framing\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:t@127.0.0.1>;tag=1\r\n"
    b"To: <sip:127.0.0.1>\r\n"
    b"Call-ID: framing@test\r\n"
    b"CSeq: 1 OPTIONS\r\n"
)


def test_tcp_bad_content_length_gets_400_then_close(start_server):
    server = start_server(transports=("tcp",))
    data = sip_exchange(
        server.host, server.port, OPTIONS_TCP + b"Content-Length: -5\r\n\r\n", "tcp", timeout=5, until_close=True
    )
    assert data is not None and data.startswith(b"SIP/2.0 400"), data


def test_tcp_oversized_message_gets_413_then_close(start_server):
    server = start_server(transports=("tcp",), transport={"max_message_size": 2048})
    data = sip_exchange(
        server.host, server.port, OPTIONS_TCP + b"Content-Length: 5000\r\n\r\n", "tcp", timeout=5, until_close=True
    )
    assert data is not None and data.startswith(b"SIP/2.0 413"), data


def test_udp_oversized_message_gets_413(start_server):
    server = start_server(transports=("udp",), transport={"max_message_size": 2048})
    # rport: the answer goes back to the source port (RFC 3581), not to the Via's port 9
    msg = OPTIONS_TCP.replace(b"TCP 127.0.0.1:9;branch=z9hG4bK-framing",
                              b"UDP 127.0.0.1:9;branch=z9hG4bK-framing;rport")
    msg += b"Content-Length: 3000\r\n\r\n" + b"x" * 3000
    data = sip_exchange(server.host, server.port, msg, "udp", timeout=5)
    assert data is not None and data.startswith(b"SIP/2.0 413"), data


def test_restart_keeps_serving(start_server):
    server = start_server()
    server.restart()
    assert sip_options(server.host, server.port, "tcp", timeout=2)


def test_two_servers_side_by_side(start_server):
    a = start_server()
    b = start_server()
    assert a.port != b.port
    assert sip_options(a.host, a.port, "udp", timeout=2)
    assert sip_options(b.host, b.port, "tcp", timeout=2)


def test_sigterm_stops_the_server(start_server):
    server = start_server()
    code = server.stop()
    log = server.read_log()
    # twistd shuts down cleanly, then re-raises the signal as its exit status
    assert code in (0, -signal.SIGTERM), log
    assert "Main loop terminated." in log, log
    assert "Traceback" not in log, log


def test_bad_config_is_one_line_and_nonzero(tmp_path):
    path, _ = write_config(tmp_path, free_port(), listen={"udp": ["127.0.0.1:notaport"]})
    proc = run_server_once(path)
    assert proc.returncode != 0
    err = proc.stderr.decode()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("reticulum: ")
    assert "listen.udp[0]" in lines[0]


def test_unknown_key_is_named(tmp_path):
    path, _ = write_config(tmp_path, free_port(), registrar={"min_expire": 10})
    proc = run_server_once(path)
    assert proc.returncode != 0
    assert "registrar.min_expire" in proc.stderr.decode()


def test_busy_port_is_reported_before_running(tmp_path):
    port = free_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", port))
    try:
        path, _ = write_config(tmp_path, port)
        started = time.monotonic()
        proc = run_server_once(path)
    finally:
        blocker.close()
    assert proc.returncode != 0
    assert time.monotonic() - started < 20
    err = proc.stderr.decode()
    assert "reticulum: cannot listen on udp 127.0.0.1:%d" % port in err, err + proc.stdout.decode()
