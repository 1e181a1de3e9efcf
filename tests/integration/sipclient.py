"""Small helpers for integration tests: templated SIPp scenarios, SIPp registrations, and a
raw-socket SIP client for the cases SIPp cannot express (a connection closed on purpose, a
restart in the middle)."""
from __future__ import annotations

import socket
import uuid

from tests.integration.harness import SCENARIOS, run_sipp

DOMAIN = "reticulum.local"


def expecting(tmp_path, name: str, status: int):
    """A copy of scenario `name` whose `[status]` is `status` (SIPp takes no keyword there)."""
    path = tmp_path / ("%s_%d.xml" % (name, status))
    path.write_text((SCENARIOS / (name + ".xml")).read_text().replace("[status]", str(status)))
    return path


def register(server, tmp_path, user, port, transport="u1", contact_params=";line=1",
             expires=3600, password=None, scenario="register", auth_user=None, source_port=None,
             args=()):
    """user@reticulum.local registers 127.0.0.1:port with SIPp (digest authenticated, SIPp's
    own [authentication]), sent from `source_port` (another socket than the Contact's, as a
    helper registering on a phone's behalf) or else from `port` itself."""
    password = password or "%s-secret" % user
    auth_user = auth_user or user
    return run_sipp(scenario, server.address, "-s", user, "-au", auth_user, "-ap", password,
                    "-key", "domain", DOMAIN, "-key", "expires", str(expires),
                    "-key", "contact_params", contact_params, "-key", "contact_port", str(port),
                    *args, transport=transport, local_port=source_port or port, cwd=tmp_path,
                    name="%s-%s-%d-%s" % (scenario if isinstance(scenario, str) else "reg",
                                          user, port, uuid.uuid4().hex[:6]), timeout=15)


def build(method, ruri, local, transport="UDP", headers=(), body="", cseq=1, call_id=None,
          from_="<sip:carol@example.org>;tag=f1", to=None, branch=None):
    """A request as raw bytes, sent from `local` (host, port)."""
    lines = [
        "%s %s SIP/2.0" % (method, ruri),
        "Via: SIP/2.0/%s %s:%d;branch=%s;rport" % (transport, local[0], local[1],
                                                   branch or "z9hG4bK" + uuid.uuid4().hex),
        "From: %s" % from_,
        "To: %s" % (to or "<%s>" % ruri),
        "Call-ID: %s" % (call_id or uuid.uuid4().hex),
        "CSeq: %d %s" % (cseq, method),
        "Max-Forwards: 70",
    ]
    lines.extend(headers)
    lines.append("Content-Length: %d" % len(body.encode()))
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def read_message(sock, buffer=b""):
    """One message from a stream socket (Content-Length framing); returns (message, rest)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65535)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value.strip())
    while len(rest) < length:
        rest += sock.recv(65535)
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


class UDPPeer:
    """A SIP peer on a UDP socket of its own."""

    def __init__(self, port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(5)
        self.address = self.sock.getsockname()

    def send(self, data: bytes, server) -> None:
        self.sock.sendto(data, (server.host, server.port))

    def recv(self, timeout: float = 5) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(65535)

    def final(self, timeout: float = 5) -> bytes:
        """The first final response (provisional ones skipped)."""
        while True:
            data = self.recv(timeout)
            if data.startswith(b"SIP/2.0 1"):
                continue
            return data

    def close(self) -> None:
        self.sock.close()


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])
