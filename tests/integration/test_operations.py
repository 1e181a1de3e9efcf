"""Running the real server the way an operator does: daemon mode, start-up errors that fit
on one line, what start-up reports, JSON logs, --version, the sample configuration."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.harness import (
    REPO_ROOT,
    free_port,
    run_server_once,
    server_command,
    sip_options,
    write_config,
)
from tests.integration.sipclient import DOMAIN, UDPPeer, build, status

TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.exit(run())"]


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The only non-empty line of stderr (the test fails when there are more)."""
    err = proc.stderr.decode() if isinstance(proc.stderr, bytes) else proc.stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("reticulum: "), err
    return lines[0]


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


# ---------------------------------------------------------------------------
# daemon mode


def test_daemon_with_a_busy_port_exits_at_once_with_one_line(tmp_path):
    port = free_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", port))
    pidfile = tmp_path / "twistd.pid"
    try:
        path, _ = write_config(tmp_path, port)
        started = time.monotonic()
        proc = subprocess.run(TWISTD + ["--pidfile", str(pidfile), "reticulum", "--config", str(path)],
                              cwd=str(tmp_path), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=60)
        took = time.monotonic() - started
    finally:
        blocker.close()
    assert proc.returncode != 0
    assert took < 5, took
    assert one_line(proc) == "reticulum: cannot listen on udp 127.0.0.1:%d: address already in use" % port
    assert not pidfile.exists()


def test_daemon_starts_reports_and_stops(tmp_path):
    port = free_port()
    path, _ = write_config(tmp_path, port)
    pidfile = tmp_path / "twistd.pid"
    logfile = tmp_path / "twistd.log"
    proc = subprocess.run(TWISTD + ["--pidfile", str(pidfile), "--logfile", str(logfile),
                                    "reticulum", "--config", str(path)],
                          cwd=str(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert pidfile.exists()
    pid = int(pidfile.read_text())
    try:
        # answering means the reactor runs (and handles SIGTERM instead of dying of it)
        assert wait_for(lambda: sip_options("127.0.0.1", port, timeout=0.25) is not None), logfile.read_text()
        assert "accounts: 2 (2 from [users])" in logfile.read_text()
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not pidfile.exists(), timeout=30), logfile.read_text()


# ---------------------------------------------------------------------------
# files the server cannot use


def _read_only_bind(path: Path, command):
    """``command`` inside a mount namespace where ``path`` is a read-only bind mount of
    itself: the folder exists, and writing to it fails with EROFS, even for root."""
    return ["unshare", "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"',
            str(path)] + command


def _can_unshare_mounts() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", "mount --bind -o ro / /tmp 2>/dev/null; true"],
                           capture_output=True)
    if probe.returncode != 0:
        return False
    with tempfile.TemporaryDirectory() as d:
        check = subprocess.run(_read_only_bind(Path(d), ["touch", os.path.join(d, "x")]),
                               capture_output=True)
        return check.returncode != 0 and b"Read-only" in check.stderr


@pytest.mark.skipif(not _can_unshare_mounts(), reason="needs unshare --mount and bind mounts")
@pytest.mark.parametrize("daemon", [False, True], ids=["foreground", "daemon"])
def test_read_only_state_dir_is_one_line(tmp_path, daemon):
    path, data = write_config(tmp_path, free_port())
    state = Path(data["state_dir"])
    state.mkdir()
    twistd = TWISTD + (["-n", "--pidfile="] if not daemon else ["--pidfile", str(tmp_path / "twistd.pid")])
    proc = subprocess.run(_read_only_bind(state, twistd + ["reticulum", "--config", str(path)]),
                          cwd=str(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert one_line(proc) == "reticulum: state_dir %s is not writable: read-only file system" % state
    assert not (tmp_path / "twistd.pid").exists()


# Running as root ignores file modes: these run the server as nobody, the way a service
# user meets a folder or a key that root made.

def _as_nobody() -> list:
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def _can_run_as_nobody() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


@pytest.fixture
def shared_dir():
    """A folder nobody may enter (pytest's tmp_path is root's alone)."""
    d = tempfile.mkdtemp(prefix="reticulum-ops-")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(not _can_run_as_nobody(), reason="needs root and setpriv")
def test_state_dir_of_another_user_is_one_line(shared_dir):
    path, data = write_config(shared_dir, free_port())
    os.chmod(path, 0o644)
    state = Path(data["state_dir"])
    state.mkdir(mode=0o755)
    proc = subprocess.run(_as_nobody() + server_command(path), cwd=str(REPO_ROOT),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert one_line(proc) == "reticulum: state_dir %s is not writable: permission denied" % state


@pytest.mark.skipif(not _can_run_as_nobody(), reason="needs root and setpriv")
@pytest.mark.parametrize("unreadable", ["certificate", "private key"])
def test_unreadable_certificate_or_key_is_one_line(shared_dir, tmp_path, unreadable):
    made = subprocess.run(
        [sys.executable, "-c",
         "import sys; from reticulum.certs import make_self_signed; c, k = make_self_signed(['x.test']);"
         "open(sys.argv[1], 'wb').write(c); open(sys.argv[2], 'wb').write(k)",
         str(shared_dir / "cert.pem"), str(shared_dir / "key.pem")],
        cwd=str(REPO_ROOT), capture_output=True)
    assert made.returncode == 0, made.stderr
    secret = shared_dir / ("cert.pem" if unreadable == "certificate" else "key.pem")
    for f in ("cert.pem", "key.pem"):
        os.chmod(shared_dir / f, 0o600 if shared_dir / f == secret else 0o644)
    path, data = write_config(shared_dir, free_port(), transports=("udp", "tls"),
                              tls={"certificate": "cert.pem", "private_key": "key.pem"})
    os.chmod(path, 0o644)
    state = Path(data["state_dir"])
    state.mkdir()
    os.chmod(state, 0o777)
    proc = subprocess.run(_as_nobody() + server_command(path), cwd=str(REPO_ROOT),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert one_line(proc) == "reticulum: cannot read the TLS %s %s: Permission denied" % (unreadable, secret)


def test_state_dir_under_a_file_is_one_line(tmp_path):
    (tmp_path / "blocker").write_text("")
    path, _ = write_config(tmp_path, free_port(), state_dir=str(tmp_path / "blocker" / "state"))
    proc = run_server_once(path)
    assert proc.returncode != 0
    assert one_line(proc).startswith("reticulum: cannot create state_dir %s: " % (tmp_path / "blocker" / "state"))


# ---------------------------------------------------------------------------
# what start-up says, JSON lines


def test_startup_summary_in_json_lines(start_server):
    server = start_server(transports=("udp", "tls"), auth={"enabled": False}, log={"format": "json"})
    peer = UDPPeer()
    peer.send(build("REGISTER", "sip:" + DOMAIN, peer.address,
                            from_="<sip:carol@%s>;tag=r1" % DOMAIN, to="<sip:carol@%s>" % DOMAIN,
                            headers=["Contact: <sip:carol@127.0.0.1:%d>" % peer.address[1],
                                     "Expires: 3600"]), server)
    assert status(peer.final()) == 200
    peer.close()
    server.stop()
    server.start()
    server.stop()

    records = [json.loads(line) for line in server.read_log().splitlines() if line.strip()]
    messages = [r["message"] for r in records]
    assert all(set(r) >= {"time", "level", "namespace", "message"} for r in records)

    cert = server.state_dir / "tls" / "certificate.pem"
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    fingerprint = ":".join("%02X" % b for b in hashlib.sha256(der).digest())
    made = [m for m in messages if m.startswith("TLS certificate %s made" % cert)]
    loaded = [m for m in messages if m.startswith("TLS certificate %s loaded" % cert)]
    assert len(made) == 1 and len(loaded) == 1, messages
    assert "SHA-256 %s, expires 20" % fingerprint in made[0]
    assert "SHA-256 %s, expires 20" % fingerprint in loaded[0]

    summaries = [m for m in messages if m.startswith("accounts: ")]
    assert summaries == ["accounts: 2 (2 from [users]); bindings restored: 0",
                         "accounts: 2 (2 from [users]); bindings restored: 1"], messages
    assert "listening on udp %s" % server.address in messages
    assert "listening on tls %s" % server.address in messages
    summary = next(r for r in records if r["message"].startswith("accounts: "))
    assert summary["level"] == "info" and summary["namespace"] == "reticulum.service"
    assert summary["fields"]["accounts"] == 2


def test_admin_url_is_logged(start_server):
    admin = free_port()
    server = start_server(listen={"admin": ["127.0.0.1:%d" % admin]})
    server.stop()
    assert "admin API at http://127.0.0.1:%d/api/" % admin in server.read_log()


def test_level_warning_leaves_info_out(start_server):
    server = start_server(log={"level": "warning"})
    assert sip_ok(server)
    server.stop()
    log = server.read_log()
    assert "accounts: " not in log and "listening on" not in log, log


def sip_ok(server) -> bool:
    return sip_options(server.host, server.port) is not None


# ---------------------------------------------------------------------------
# --version, the sample configuration


def test_version():
    from reticulum import __version__

    proc = subprocess.run(TWISTD + ["reticulum", "--version"], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Reticulum %s" % __version__
    alias = subprocess.run([sys.executable, "-m", "reticulum", "--version"], cwd=str(REPO_ROOT),
                           capture_output=True, text=True, timeout=60)
    assert alias.stdout == proc.stdout


@pytest.mark.parametrize("how", ["init", "--init-config"])
def test_sample_config_is_written_and_loads(tmp_path, how):
    from reticulum.config import load_config

    target = tmp_path / "etc" / "reticulum.toml"
    if how == "init":
        command = [sys.executable, "-m", "reticulum", "init", str(target)]
    else:
        command = TWISTD + ["reticulum", "--init-config", str(target)]
    proc = subprocess.run(command, cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    config = load_config(str(target))
    assert config.state_dir == "/var/lib/reticulum"
    assert config.log.level == "info" and config.log.format == "text"
    again = subprocess.run(command, cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_python_m_reticulum_runs_the_server(tmp_path):
    port = free_port()
    path, _ = write_config(tmp_path, port)
    proc = subprocess.Popen([sys.executable, "-m", "reticulum", "--config", str(path)],
                            cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: sip_options("127.0.0.1", port, timeout=0.25) is not None or proc.poll() is not None)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()
    assert "accounts: 2 (2 from [users])" in out, out
