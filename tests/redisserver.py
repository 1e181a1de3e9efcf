"""A real Redis server for tests: Debian's redis-server on a free loopback port, its files in
a folder of the test's own, stopped after (run.sh installs redis-server when missing)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server`` with append-only persistence (``appendfsync always``), so that a
    restart keeps every write it acknowledged."""

    def __init__(self, directory, host: str = "127.0.0.1", port: int | None = None,
                 appendonly: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or _free_port(host)
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return "redis://%s:%d/0" % (self.host, self.port)

    def start(self, timeout: float = 20.0) -> "RedisServer":
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        args = [binary, "--bind", self.host, "--port", str(self.port), "--dir", str(self.directory),
                "--save", "", "--daemonize", "no", "--protected-mode", "no",
                "--logfile", str(self.directory / "redis.log")]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited: %s" % self.log())
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer: %s" % self.log())
            time.sleep(0.05)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: Redis writes what it must and exits
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def kill(self) -> None:
        """SIGKILL: no chance to write anything more."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def restart(self) -> "RedisServer":
        self.stop()
        return self.start()

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True)

    def log(self) -> str:
        try:
            return (self.directory / "redis.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""
