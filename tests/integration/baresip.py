"""A real hardphone, baresip, driven headlessly through its ctrl_tcp module (netstring JSON
commands and events on loopback) and bound to 127.0.0.1 (``net_interface``), so none of its
traffic uses another interface."""
from __future__ import annotations

import json
import math
import queue
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
import wave
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from tests.integration.harness import free_port, start_sipp
from tests.integration.sipclient import DOMAIN


def two_free_ports() -> int:
    """p with p and p+1 free (baresip listens for TLS next to its UDP/TCP port)."""
    for _ in range(50):
        p = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise AssertionError("no two adjacent free ports")


def tone(path: Path) -> Path:
    """A minute of a 440 Hz tone, 8 kHz mono: the phone's microphone (it hangs up when
    the file ends)."""
    period = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000))) for i in range(400))
    samples = period * (60 * 20)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples)
    return path


class Baresip:
    """One baresip phone for ``user``, registered through the server over ``transport``
    (the server is its outbound proxy: the domain has no DNS entry)."""

    def __init__(self, directory: Path, server: Any, user: str, password: Optional[str] = None,
                 transport: str = "tls") -> None:
        if shutil.which("baresip") is None:
            pytest.fail("baresip is not installed (apt-get install baresip-core; ./run.sh test does it)")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.sip_port = two_free_ports()
        self.ctrl_port = free_port()
        password = password or "%s-secret" % user
        (directory / "config").write_text(
            "poll_method epoll\n"
            "sip_listen 127.0.0.1:%d\n"
            "%s"
            "net_interface 127.0.0.1\n"
            "audio_source aufile,%s\n"
            "audio_alert aufile,%s\n"
            "rtp_ports 41000-41999\n"
            "module_path /usr/lib/baresip/modules\n"
            "module g711.so\n"
            "module aufile.so\n"
            "module ctrl_tcp.so\n"
            "module_app account.so\n"
            "module_app menu.so\n"
            "ctrl_tcp_listen 127.0.0.1:%d\n"
            % (self.sip_port, "sip_cafile %s\n" % server.certificate if transport == "tls" else "",
               tone(directory / "tone.wav"), tone(directory / "alert.wav"),
               self.ctrl_port)
        )
        port = server.tls_port if transport == "tls" else server.port
        (directory / "accounts").write_text(
            '<sip:%s@%s;transport=%s>;auth_pass=%s;outbound="sip:127.0.0.1:%d;transport=%s";'
            "regint=600;answermode=auto\n" % (user, DOMAIN, transport, password, port, transport)
        )
        (directory / "contacts").write_text("")
        self.out = open(directory / "baresip.log", "wb")
        self.proc = subprocess.Popen(["baresip", "-f", str(directory)], stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT)
        self.events: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.seen: list = []
        self.ctrl = self._connect()
        threading.Thread(target=self._read, daemon=True).start()

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 10
        while True:
            try:
                return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=2)
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("baresip did not start:\n%s" % self.log())
                time.sleep(0.1)

    def _read(self) -> None:
        buf = b""
        self.ctrl.settimeout(None)
        while True:
            try:
                chunk = self.ctrl.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while True:
                colon = buf.find(b":")
                if colon < 0:
                    break
                n = int(buf[:colon])
                if len(buf) < colon + 1 + n + 1:
                    break
                payload = buf[colon + 1 : colon + 1 + n]
                buf = buf[colon + 2 + n :]
                try:
                    self.events.put(json.loads(payload))
                except ValueError:
                    pass

    def command(self, command: str, params: str = "") -> None:
        body = json.dumps({"command": command, "params": params, "token": uuid.uuid4().hex[:8]}).encode()
        self.ctrl.sendall(b"%d:%s," % (len(body), body))

    def wait(self, event_type: str, timeout: float = 10.0) -> Dict[str, Any]:
        for e in self.seen:
            if e.get("type") == event_type:
                self.seen.remove(e)
                return e
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("baresip: no %s event; got %r\n%s" % (event_type, self.seen, self.log()))
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if e.get("type") == event_type:
                return e
            self.seen.append(e)

    def registered(self, timeout: float = 10.0) -> None:
        """Wait until the account is registered (asks, so an early event is not missed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            token = uuid.uuid4().hex[:8]
            body = json.dumps({"command": "reginfo", "params": "", "token": token}).encode()
            self.ctrl.sendall(b"%d:%s," % (len(body), body))
            end = time.monotonic() + 2
            while time.monotonic() < end:
                try:
                    e = self.events.get(timeout=0.2)
                except queue.Empty:
                    continue
                if e.get("token") == token:
                    if "OK" in (e.get("data") or "").replace("\x1b", ""):
                        return
                    break
                self.seen.append(e)
            time.sleep(0.2)
        raise AssertionError("baresip did not register\n%s" % self.log())

    def log(self) -> str:
        try:
            return (self.directory / "baresip.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            self.command("quit")
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.ctrl.close()
        self.out.close()


@pytest.fixture
def phones():
    started = []
    yield started
    for p in started:
        p.stop()


def called_by_sipp(server: Any, tmp_path: Path, phone: Baresip) -> None:
    """SIPp, as carol, calls the phone's user through the server; the phone answers by
    itself and SIPp hangs up after half a second."""
    uac = start_sipp("uac", server.address, "-s", "alice", "-key", "domain", DOMAIN,
                     "-key", "caller", "carol@example.org", "-d", "500",
                     cwd=tmp_path, timeout=30, name="uac-carol")
    phone.wait("CALL_ESTABLISHED", 15)
    phone.wait("CALL_CLOSED", 15)  # SIPp hung up
    result = uac.wait()
    assert result.ok, result.describe()
