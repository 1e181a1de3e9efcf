"""Helpers for tests that run the real server and real SIP peers (SIPp).

* ``free_port(host)`` / ``free_ports(n, host)``: loopback ports free for
  both UDP and TCP.
* ``write_config(directory, port, ...)``: a TOML config for one test server.
* ``Server``: the real server as a subprocess (``twistd -n reticulum``),
  ``start()`` waits until it answers SIP OPTIONS, ``stop()`` ends it.
* ``start_sipp(...)`` / ``run_sipp(...)``: SIPp in the background or to
  completion, returning a ``SippResult``.

Only loopback addresses are ever used.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"

#: the demo accounts every test server has unless overridden
DEFAULT_USERS = {"alice": "alice-secret", "bob": "bob-secret"}
DEFAULT_DOMAIN = "reticulum.local"

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

PathLike = Union[str, "os.PathLike[str]"]


class HarnessError(AssertionError):
    """A test server or SIPp misbehaved; the message carries their output."""


# ---------------------------------------------------------------------------
# addresses


def hostport(host: str, port: int) -> str:
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1", avoid: Iterable[int] = ()) -> int:
    """A port on ``host`` that is free for both TCP and UDP right now."""
    avoid = set(avoid)
    family = _family(host)
    for _ in range(200):
        t = socket.socket(family, socket.SOCK_STREAM)
        u = socket.socket(family, socket.SOCK_DGRAM)
        try:
            t.bind((host, 0))
            port = t.getsockname()[1]
            if port in avoid:
                continue
            try:
                u.bind((host, port))
            except OSError:
                continue
            return port
        finally:
            t.close()
            u.close()
    raise HarnessError("no free port found on %s" % host)


def free_ports(n: int, host: str = "127.0.0.1") -> List[int]:
    """``n`` distinct ports, each free for TCP and UDP."""
    ports: List[int] = []
    while len(ports) < n:
        ports.append(free_port(host, avoid=ports))
    return ports


# ---------------------------------------------------------------------------
# config files


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        out = ['"']
        for ch in value:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ord(ch) < 0x20 or ch == "\x7f":
                out.append("\\u%04x" % ord(ch))
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError("cannot write %r as TOML" % (value,))


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return _toml_value(key)


def toml_dumps(data: Mapping[str, Any]) -> str:
    """A small TOML writer: scalars, lists and nested tables."""
    lines: List[str] = []

    def table(prefix: str, d: Mapping[str, Any]) -> None:
        subtables = []
        for k, v in d.items():
            if v is None:
                continue
            if isinstance(v, Mapping):
                subtables.append((k, v))
            else:
                lines.append("%s = %s" % (_toml_key(k), _toml_value(v)))
        for k, v in subtables:
            name = (prefix + "." if prefix else "") + _toml_key(k)
            lines.append("")
            lines.append("[%s]" % name)
            table(name, v)

    table("", data)
    return "\n".join(lines).lstrip("\n") + "\n"


def merge(base: Dict[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``; a None value deletes."""
    out = dict(base)
    for k, v in overrides.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def base_config(
    directory: PathLike,
    port: int,
    host: str = "127.0.0.1",
    transports: Sequence[str] = ("udp", "tcp"),
) -> Dict[str, Any]:
    """The default test config: both transports on ``host:port``, demo users."""
    return {
        "domains": [DEFAULT_DOMAIN],
        "state_dir": str(Path(directory) / "state"),
        "listen": {t: [hostport(host, port)] for t in transports},
        "users": dict(DEFAULT_USERS),
    }


def write_config(
    directory: PathLike,
    port: int,
    host: str = "127.0.0.1",
    transports: Sequence[str] = ("udp", "tcp"),
    **overrides: Any,
) -> Tuple[Path, Dict[str, Any]]:
    """Write ``directory/reticulum.toml``; returns its path and the data written.

    ``overrides`` are deep-merged into ``base_config`` (a None value
    removes a key), e.g. ``registrar={"min_expires": 10}`` or
    ``listen={"udp": None}``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = merge(base_config(directory, port, host, transports), overrides)
    path = directory / "reticulum.toml"
    path.write_text(toml_dumps(data))
    return path, data


# ---------------------------------------------------------------------------
# the server


def _options_request(transport: str, local: Tuple[str, int], target: Tuple[str, int]) -> bytes:
    branch = "z9hG4bK-ready-" + uuid.uuid4().hex[:16]
    lhost = hostport(*local)
    thost = hostport(*target)
    return (
        "OPTIONS sip:%s SIP/2.0\r\n"
        "Via: SIP/2.0/%s %s;branch=%s;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:harness@%s>;tag=%s\r\n"
        "To: <sip:%s>\r\n"
        "Call-ID: %s@harness\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n"
        "\r\n" % (thost, transport.upper(), lhost, branch, lhost, uuid.uuid4().hex[:8], thost, uuid.uuid4().hex)
    ).encode()


def sip_options(host: str, port: int, transport: str = "udp", timeout: float = 0.5) -> Optional[bytes]:
    """Send one OPTIONS to host:port and return the first bytes answered, or None."""
    family = _family(host)
    if transport == "udp":
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.bind((host, 0))
            s.settimeout(timeout)
            s.sendto(_options_request("udp", s.getsockname()[:2], (host, port)), (host, port))
            data, _ = s.recvfrom(65535)
            return data
        except OSError:
            return None
        finally:
            s.close()
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((host, port))
        s.sendall(_options_request("tcp", s.getsockname()[:2], (host, port)))
        data = s.recv(65535)
        return data or None
    except OSError:
        return None
    finally:
        s.close()


def sip_exchange(
    host: str, port: int, data: bytes, transport: str = "udp", timeout: float = 2.0, until_close: bool = False
) -> Optional[bytes]:
    """Send raw bytes and return what comes back first (UDP: one datagram).

    With TCP and ``until_close``, read until the server closes the connection
    (or ``timeout`` passes) and return everything.  None when nothing came.
    """
    family = _family(host)
    if transport == "udp":
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.bind((host, 0))
            s.settimeout(timeout)
            s.sendto(data, (host, port))
            return s.recvfrom(65535)[0]
        except OSError:
            return None
        finally:
            s.close()
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((host, port))
        s.sendall(data)
        if not until_close:
            got = s.recv(65535)
            return got or None
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65535)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks) or None
    except OSError:
        return None
    finally:
        s.close()


def server_command(config_path: PathLike, python: Optional[str] = None) -> List[str]:
    """The command line that runs the server in the foreground for a config file."""
    return [
        python or sys.executable,
        "-c",
        "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
        "-n",
        "--pidfile=",
        "reticulum",
        "--config",
        str(config_path),
    ]


class Server:
    """One real server process for one config file."""

    def __init__(
        self,
        directory: PathLike,
        port: Optional[int] = None,
        host: str = "127.0.0.1",
        transports: Sequence[str] = ("udp", "tcp"),
        **overrides: Any,
    ) -> None:
        self.directory = Path(directory)
        self.host = host
        # a port picked here may be taken by another process before the server binds it:
        # start() then picks another one (a port the caller chose is kept as it is)
        self._port_is_ours = port is None
        self._overrides = overrides
        self.port = port if port is not None else free_port(host)
        self.transports = tuple(transports)
        self.config_path, self.config = write_config(self.directory, self.port, host, transports, **overrides)
        self.log_path = self.directory / "server.log"
        self.proc: Optional[subprocess.Popen] = None
        self._log_file = None
        self._log_mark = 0

    # -- addresses

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 in brackets)."""
        return hostport(self.host, self.port)

    @property
    def uri(self) -> str:
        return "sip:" + self.address

    @property
    def domain(self) -> str:
        return self.config["domains"][0]

    @property
    def state_dir(self) -> Path:
        return Path(self.config["state_dir"])

    # -- life

    def start(self, wait: bool = True, timeout: float = READY_TIMEOUT) -> "Server":
        for attempt in range(3):
            self._spawn()
            if not wait:
                return self
            try:
                self.wait_ready(timeout)
                return self
            except HarnessError:
                lost_race = (self._port_is_ours and attempt < 2 and not self.running
                             and "address already in use" in self.read_log()[self._log_mark:])
                if not lost_race:
                    raise
            self.stop()
            self.port = free_port(self.host)
            self.config_path, self.config = write_config(
                self.directory, self.port, self.host, self.transports, **self._overrides)
        return self

    def _spawn(self) -> None:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("RETICULUM_CONFIG", None)
        self._log_mark = len(self.read_log())
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            server_command(self.config_path),
            cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll with OPTIONS until any answer; fail fast if the process exits."""
        transport = "udp" if "udp" in self.transports else "tcp"
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll() if self.proc is not None else -1
            if code is not None:
                raise HarnessError(
                    "server exited with status %s before answering\n%s" % (code, self.read_log())
                )
            if sip_options(self.host, self.port, transport, timeout=0.25) is not None:
                return
            if time.monotonic() > deadline:
                raise HarnessError(
                    "server did not answer OPTIONS on %s %s within %.0f s\n%s"
                    % (transport, self.address, timeout, self.read_log())
                )
            time.sleep(0.1)

    def restart(self, timeout: float = READY_TIMEOUT) -> "Server":
        """Stop and start again with the same config (and state_dir)."""
        self.stop()
        return self.start(timeout=timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return proc.returncode

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        return "<Server %s %s>" % (self.address, self.directory)


def run_server_once(config_path: PathLike, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Run the server for a config that is expected to stop it at once."""
    return subprocess.run(
        server_command(config_path),
        cwd=str(REPO_ROOT),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=timeout,
    )


# ---------------------------------------------------------------------------
# SIPp


def sipp_path() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise HarnessError("sipp is not installed (apt-get install sip-tester; ./run.sh test does it)")
    return path


class SippResult:
    def __init__(self, returncode: int, output: str, errors: str, messages: str, command: List[str]) -> None:
        self.returncode = returncode
        #: what SIPp printed (screen, statistics)
        self.output = output
        #: the -trace_err log: unexpected messages
        self.errors = errors
        #: the -trace_msg log: every message sent and received
        self.messages = messages
        self.command = command

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self, limit: int = 8000) -> str:
        def tail(text: str) -> str:
            return text if len(text) <= limit else "...\n" + text[-limit:]

        return "sipp exited %s\ncommand: %s\n--- output\n%s\n--- errors\n%s\n--- messages\n%s" % (
            self.returncode,
            " ".join(self.command),
            tail(self.output),
            tail(self.errors),
            tail(self.messages),
        )

    def __repr__(self) -> str:
        return "<SippResult %s>" % self.returncode


class Sipp:
    """A running SIPp; ``wait()`` returns its SippResult."""

    def __init__(
        self, proc: subprocess.Popen, command: List[str], files: Dict[str, Path], timeout: float, out: Any = None
    ) -> None:
        self.proc = proc
        self._out = out
        self.command = command
        self.files = files
        self.timeout = timeout
        self.port: int = 0

    def wait(self, timeout: Optional[float] = None) -> SippResult:
        try:
            self.proc.wait(timeout if timeout is not None else self.timeout + 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._out is not None:
            self._out.close()
            self._out = None

        def read(name: str) -> str:
            try:
                return self.files[name].read_text(errors="replace")
            except OSError:
                return ""

        return SippResult(self.proc.returncode, read("output"), read("errors"), read("messages"), self.command)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


def start_sipp(
    scenario: PathLike,
    target: Optional[str] = None,
    *args: str,
    transport: str = "u1",
    calls: int = 1,
    timeout: float = 30.0,
    cwd: Optional[PathLike] = None,
    local_ip: str = "127.0.0.1",
    local_port: Optional[int] = None,
    name: Optional[str] = None,
) -> Sipp:
    """Start SIPp with scenario file ``scenario`` (a path, or a name in SCENARIOS).

    ``target`` is "host:port" of the peer (None for a scenario that only
    answers).  ``transport`` is SIPp's ``-t`` (``u1`` UDP, ``t1`` TCP);
    ``calls`` sets ``-m`` and ``-l``; ``args`` are passed on as they are.
    """
    scenario = Path(scenario)
    if not scenario.exists() and (SCENARIOS / scenario).exists():
        scenario = SCENARIOS / scenario
    if not scenario.exists() and (SCENARIOS / (str(scenario) + ".xml")).exists():
        scenario = SCENARIOS / (str(scenario) + ".xml")
    workdir = Path(cwd) if cwd is not None else Path.cwd()
    workdir.mkdir(parents=True, exist_ok=True)
    port = local_port if local_port is not None else free_port(local_ip)
    label = name or "%s-%s-%d" % (scenario.stem, transport, port)
    files = {
        "output": workdir / ("sipp-%s.out" % label),
        "errors": workdir / ("sipp-%s_errors.log" % label),
        "messages": workdir / ("sipp-%s_messages.log" % label),
    }
    command = [
        sipp_path(),
        "-sf",
        str(scenario),
        "-m",
        str(calls),
        "-l",
        str(calls),
        "-i",
        local_ip,
        "-p",
        str(port),
        "-t",
        transport,
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(files["errors"]),
        "-trace_msg",
        "-message_file",
        str(files["messages"]),
        "-timeout",
        "%ds" % max(1, int(timeout)),
        "-timeout_error",
    ]
    command.extend(args)
    if target is not None:
        command.append(target)
    out = open(files["output"], "wb")
    proc = subprocess.Popen(command, cwd=str(workdir), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    sipp = Sipp(proc, command, files, timeout, out)
    sipp.port = port
    return sipp


def run_sipp(
    scenario: PathLike,
    target: Optional[str] = None,
    *args: str,
    transport: str = "u1",
    calls: int = 1,
    timeout: float = 30.0,
    cwd: Optional[PathLike] = None,
    local_ip: str = "127.0.0.1",
    local_port: Optional[int] = None,
    name: Optional[str] = None,
) -> SippResult:
    """Run SIPp to the end; see ``start_sipp``."""
    return start_sipp(
        scenario,
        target,
        *args,
        transport=transport,
        calls=calls,
        timeout=timeout,
        cwd=cwd,
        local_ip=local_ip,
        local_port=local_port,
        name=name,
    ).wait()
