"""SIP over TLS on loopback: certificates (reticulum.certs) and the tls listener
and outgoing connections in a reactor subprocess (tests/transport/echo_server.py)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import queue
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, List, Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reticulum.certs import certificate_files, make_self_signed
from reticulum.config import config_from_dict
from tests.transport.conftest import free_port

REPO = Path(__file__).resolve().parents[2]

MSG = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bK1\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)


# ---------------------------------------------------------------------------
# certificates


def _san(cert_pem: bytes):
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return cert, san.get_values_for_type(x509.DNSName), [str(a) for a in san.get_values_for_type(x509.IPAddress)]


def test_self_signed_certificate_names_domain_and_addresses():
    cert_pem, key_pem = make_self_signed(["sip.example.org", "host"], ["127.0.0.1", "::1"])
    cert, names, ips = _san(cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "sip.example.org"
    assert names == ["sip.example.org", "host"]
    assert ips == ["127.0.0.1", "::1"]
    assert b"PRIVATE KEY" in key_pem


def test_certificate_made_at_first_start_and_kept(tmp_path):
    config = config_from_dict(
        {"domains": ["voice.example.org"], "state_dir": "state", "listen": {"tls": ["127.0.0.1:5061"]}},
        base_dir=str(tmp_path),
    )
    cert_path, key_path = certificate_files(config)
    assert cert_path.startswith(str(tmp_path / "state"))
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    first = Path(cert_path).read_bytes()
    _, names, ips = _san(first)
    assert names[0] == "voice.example.org" and "localhost" in names
    assert "127.0.0.1" in ips
    assert certificate_files(config) == (cert_path, key_path)
    assert Path(cert_path).read_bytes() == first  # kept, not made again


def test_configured_certificate_is_used(tmp_path):
    cert_pem, key_pem = make_self_signed(["given.example.org"], ["127.0.0.1"])
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    config = config_from_dict(
        {"state_dir": "state", "tls": {"certificate": "c.pem", "private_key": "k.pem"}}, base_dir=str(tmp_path)
    )
    assert certificate_files(config) == (str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert not (tmp_path / "state" / "tls").exists()


# -- a small private CA for verify_peers


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_ca(name: str = "Test CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(ca, name: str, ips: List[str]):
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    return chain, _key_pem(key)


# ---------------------------------------------------------------------------
# the listener and outgoing connections (echo server in a subprocess)


class TLSEchoServer:
    def __init__(self, directory: Path, tls: Optional[dict] = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        lines = [
            'state_dir = "state"',
            "[listen]",
            'tls = ["127.0.0.1:%d"]' % self.port,
            "[transport]",
            "max_message_size = 4096",
            "[timers]",
            "t1 = 0.05",
        ]
        if tls:
            lines.append("[tls]")
            for k, v in tls.items():
                lines.append("%s = %s" % (k, json.dumps(v)))
        config = directory / "echo.toml"
        config.write_text("\n".join(lines) + "\n")
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.seen: List[dict] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.transport.echo_server", str(config)],
            cwd=str(REPO),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(lambda e: e["event"] in ("ready", "bind_error"), 20)

    @property
    def certificate(self) -> str:
        return str(self.directory / "state" / "tls" / "certificate.pem")

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                pass

    def wait_for(self, pred: Any, timeout: float = 5.0) -> dict:
        for e in self.seen:
            if pred(e):
                self.seen.remove(e)
                return e
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("event not seen; got %r" % (self.seen,))
            try:
                e = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError("echo server exited: %s" % self.proc.stderr.read().decode(errors="replace"))
                continue
            if pred(e):
                return e
            self.seen.append(e)

    def connect(self, cafile: Optional[str] = None, **ctx_options: Any) -> ssl.SSLSocket:
        ctx = ssl.create_default_context(cafile=cafile or self.certificate)
        for k, v in ctx_options.items():
            setattr(ctx, k, v)
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return ctx.wrap_socket(raw, server_hostname="127.0.0.1")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def recv_exactly(s, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    server = TLSEchoServer(tmp_path_factory.mktemp("tlsecho"))
    yield server
    server.stop()


def test_tls_echo_framing_and_pong(echo):
    with echo.connect() as s:  # the self-signed certificate names 127.0.0.1
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        s.sendall(MSG + MSG[:20])
        assert recv_exactly(s, len(MSG) + 5) == b"ECHO " + MSG
        s.sendall(MSG[20:])
        assert recv_exactly(s, len(MSG) + 5) == b"ECHO " + MSG
        s.sendall(b"\r\n\r\n")
        assert recv_exactly(s, 2) == b"\r\n"
        port = s.getsockname()[1]
    e = echo.wait_for(lambda e: e["event"] == "receive" and e["flow"]["remote"][1] == port)
    assert e["flow"]["transport"] == "tls"
    assert e["flow"]["local"] == ["127.0.0.1", echo.port]
    e = echo.wait_for(lambda e: e["event"] == "closed" and e["flow"]["remote"][1] == port)
    assert e["flow"]["transport"] == "tls"


def test_tls_1_2_is_accepted_and_older_versions_refused(echo):
    with echo.connect(maximum_version=ssl.TLSVersion.TLSv1_2) as s:
        assert s.version() == "TLSv1.2"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot offer TLS 1.1")
    with socket.create_connection(("127.0.0.1", echo.port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            with ctx.wrap_socket(raw) as s:
                s.sendall(MSG)
                s.recv(10)


def test_plain_text_on_the_tls_port_reaches_nobody(echo):
    with socket.create_connection(("127.0.0.1", echo.port), timeout=5) as s:
        port = s.getsockname()[1]
        s.sendall(MSG)
        s.settimeout(5)
        try:
            data = s.recv(100)
        except OSError:
            data = b""
        assert not data.startswith(b"ECHO")
    time.sleep(0.3)
    assert not any(e["event"] == "receive" and e["flow"]["remote"][1] == port for e in echo.seen)


class TLSPeer:
    """A TLS server on loopback (a thread) that records what it receives,
    and the first raw bytes of each connection."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, directory: Path, cafile: Optional[str] = None) -> None:
        (directory / "peer.pem").write_bytes(cert_pem)
        (directory / "peer.key").write_bytes(key_pem)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(directory / "peer.pem"), str(directory / "peer.key"))
        if cafile:
            self.ctx.load_verify_locations(cafile)
            self.ctx.verify_mode = ssl.CERT_OPTIONAL
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.received: "queue.Queue[bytes]" = queue.Queue()
        self.first_bytes: List[bytes] = []
        self.peer_certs: List[Any] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(5)
                self.first_bytes.append(conn.recv(1, socket.MSG_PEEK))
                with self.ctx.wrap_socket(conn, server_side=True) as s:
                    self.peer_certs.append(s.getpeercert())
                    data = s.recv(65535)
                    if data:
                        self.received.put(data)
            except (OSError, ssl.SSLError):
                continue

    def close(self) -> None:
        self.sock.close()


def test_outgoing_tls_connection(echo, tmp_path):
    peer = TLSPeer(*make_self_signed(["peer.example.org"], ["127.0.0.1"]), tmp_path)
    try:
        with echo.connect() as s:
            s.sendall(b"SENDTO tls 127.0.0.1 %d\n" % peer.port + MSG)
            assert peer.received.get(timeout=5) == MSG
        e = echo.wait_for(lambda e: e["event"] == "sent_to")
        assert e["flow"]["transport"] == "tls"
        assert e["flow"]["remote"] == ["127.0.0.1", peer.port]
        assert peer.first_bytes[0] == b"\x16"  # a TLS handshake record, never SIP text
    finally:
        peer.close()


def test_outgoing_tls_to_a_plain_tcp_peer_fails_without_clear_text(echo):
    got: List[bytes] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(5)
    port = srv.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = srv.accept()
            conn.settimeout(2)
            got.append(conn.recv(65535))
            conn.sendall(b"SIP/2.0 400 I speak no TLS\r\n\r\n")
            conn.close()
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with echo.connect() as s:
            s.sendall(b"SENDTO tls 127.0.0.1 %d\n" % port + MSG)
            e = echo.wait_for(lambda e: e["event"] == "failed" and e["flow"]["remote"] == ["127.0.0.1", port], 10)
            assert e["flow"]["transport"] == "tls"
        t.join(5)
        assert got and got[0][:1] == b"\x16" and b"OPTIONS" not in got[0]
    finally:
        srv.close()


@pytest.fixture(scope="module")
def ca():
    return make_ca()


@pytest.fixture(scope="module")
def verifying(tmp_path_factory, ca):
    """An echo server with verify_peers and a certificate from our private CA."""
    d = tmp_path_factory.mktemp("tlsverify")
    chain, key = issue(ca, "proxy.example.org", ["127.0.0.1"])
    (d / "cert.pem").write_bytes(chain)
    (d / "key.pem").write_bytes(key)
    server = TLSEchoServer(d, tls={"certificate": "cert.pem", "private_key": "key.pem", "verify_peers": True})
    server.chain = d / "cert.pem"
    yield server
    server.stop()


def test_verify_peers_accepts_a_peer_of_a_trusted_authority(verifying, ca, tmp_path):
    cert, key = issue(ca, "peer.example.org", ["127.0.0.1"])
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    peer = TLSPeer(cert, key, tmp_path, cafile=str(ca_file))
    try:
        with verifying.connect(cafile=str(ca_file)) as s:
            s.sendall(b"SENDTO tls 127.0.0.1 %d\n" % peer.port + MSG)
            assert peer.received.get(timeout=5) == MSG
        # we showed our certificate to the peer (server-to-server link)
        subject = dict(x[0] for x in peer.peer_certs[0]["subject"])
        assert subject["commonName"] == "proxy.example.org"
    finally:
        peer.close()


def test_verify_peers_refuses_an_untrusted_peer(verifying, ca, tmp_path):
    peer = TLSPeer(*make_self_signed(["rogue.example.org"], ["127.0.0.1"]), tmp_path)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    try:
        with verifying.connect(cafile=str(ca_file)) as s:
            s.sendall(b"SENDTO tls 127.0.0.1 %d\n" % peer.port + MSG)
            e = verifying.wait_for(lambda e: e["event"] == "failed" and e["flow"]["remote"] == ["127.0.0.1", peer.port], 10)
            assert e["flow"]["transport"] == "tls"
        assert peer.received.empty()
    finally:
        peer.close()


def test_verify_peers_checks_the_name(verifying, ca, tmp_path):
    """Signed by the trusted CA but issued for another address: refused."""
    cert, key = issue(ca, "elsewhere.example.org", ["192.0.2.55"])
    peer = TLSPeer(cert, key, tmp_path)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    try:
        with verifying.connect(cafile=str(ca_file)) as s:
            s.sendall(b"SENDTO tls 127.0.0.1 %d\n" % peer.port + MSG)
            verifying.wait_for(lambda e: e["event"] == "failed" and e["flow"]["remote"] == ["127.0.0.1", peer.port], 10)
        assert peer.received.empty()
    finally:
        peer.close()


def test_verify_peers_checks_client_certificates_when_sent(verifying, ca, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    # a phone without a certificate is still served
    with verifying.connect(cafile=str(ca_file)) as s:
        s.sendall(MSG)
        assert recv_exactly(s, len(MSG) + 5) == b"ECHO " + MSG
    # a client certificate from nobody we trust is refused
    rogue_cert, rogue_key = make_self_signed(["rogue.example.org"], ["127.0.0.1"])
    (tmp_path / "rogue.pem").write_bytes(rogue_cert)
    (tmp_path / "rogue.key").write_bytes(rogue_key)
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.load_cert_chain(str(tmp_path / "rogue.pem"), str(tmp_path / "rogue.key"))
    with socket.create_connection(("127.0.0.1", verifying.port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(MSG)
                if not s.recv(100):
                    raise OSError("closed")


def test_verify_peers_checks_the_sip_domain_not_the_address(verifying, ca, tmp_path):
    """RFC 5922: a peer found through DNS for b.test must prove it is b.test; its address
    need not be in its certificate. A connection proved for one domain is not reused for
    another one at the same address."""
    cert, key = issue(ca, "b.test", [])
    peer = TLSPeer(cert, key, tmp_path)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    try:
        with verifying.connect(cafile=str(ca_file)) as s:
            s.sendall(b"SENDTO tls 127.0.0.1 %d b.test\n" % peer.port + MSG)
            assert peer.received.get(timeout=5) == MSG
            s.sendall(b"SENDTO tls 127.0.0.1 %d c.test\n" % peer.port + MSG)
            verifying.wait_for(lambda e: e["event"] == "failed"
                               and e["flow"]["remote"] == ["127.0.0.1", peer.port], 10)
        assert peer.received.empty()  # nothing for c.test reached the b.test server
    finally:
        peer.close()
