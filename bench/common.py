"""Shared pieces of the benchmarks: a server on loopback and SIPp runs against it.

Every benchmark starts its own server from a temporary config (loopback only), drives it with
SIPp at increasing rates, and keeps the highest rate that ran for the whole window with no
failed call and under 0.5% retransmissions.
"""
from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = os.path.join(ROOT, "tests", "integration", "scenarios")
BENCH_SCENARIOS = os.path.join(ROOT, "bench", "scenarios")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def write_config(directory: str, port: int, extra: str = "", users: dict | None = None) -> str:
    path = os.path.join(directory, "reticulum.toml")
    lines = [
        'domains = ["reticulum.local"]',
        'state_dir = "state"',
        "[listen]",
        'udp = ["127.0.0.1:%d"]' % port,
        'tcp = ["127.0.0.1:%d"]' % port,
        "[log]",
        "messages = false",
        extra,
    ]
    if users:
        lines.append("[users]")
        lines.extend('"%s" = "%s"' % item for item in users.items())
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def options_ok(port: int, timeout: float = 0.5) -> bool:
    message = (
        "OPTIONS sip:127.0.0.1:%d SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbench%d;rport\r\n"
        "From: <sip:bench@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1:%d>\r\n"
        "Call-ID: bench-%f\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        % (port, os.getpid(), port, time.time())
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind(("127.0.0.1", 0))
        s.sendto(message, ("127.0.0.1", port))
        try:
            data = s.recv(65535)
        except socket.timeout:
            return False
    return data.startswith(b"SIP/2.0 200")


def server_python() -> str:
    """The interpreter the server runs on: RETICULUM_BENCH_PYTHON, else the harness's own."""
    return os.environ.get("RETICULUM_BENCH_PYTHON") or sys.executable


def implementation(python: str) -> str:
    """'cpython' or 'pypy' for an interpreter path."""
    out = subprocess.run([python, "-c", "import sys; print(sys.implementation.name)"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def default_warmup(python: str) -> int:
    """Seconds of load before measuring: a JIT (PyPy) compiles its hot paths during the first
    seconds and is slow meanwhile; CPython needs none."""
    return 10 if implementation(python) == "pypy" else 0


def server_env() -> dict:
    """The server's environment, as run.sh sets it: PyPy with a 32 MB nursery (by default it
    takes half the L2 cache, 1 MB here, and then spends a third of its time collecting)."""
    env = dict(os.environ)
    env.setdefault("PYPY_GC_NURSERY", "32MB")
    return env


def add_workers_argument(parser) -> None:
    parser.add_argument("--workers", default="1",
                        help="server processes, or a list run one after the other (1,2); "
                             "more than 1 starts a Redis for [cluster]")
    parser.add_argument("--cluster", action="store_true",
                        help="[cluster] with a Redis even for one worker")


def worker_counts(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n.strip()]


@contextlib.contextmanager
def cluster_config(workers: int, cluster: bool, directory: str):
    """The config lines for `workers` processes, with a Redis of their own when needed."""
    if workers <= 1 and not cluster:
        yield ""
        return
    sys.path.insert(0, ROOT)
    from tests.redisserver import RedisServer

    redis = RedisServer(os.path.join(directory, "redis-%d" % time.time_ns()),
                        appendonly=False).start()
    try:
        yield ('[cluster]\nredis = "%s"\nnode = "bench"\nprefix = "bench-%d:"\n'
               '[server]\nworkers = %d' % (redis.url, time.time_ns(), workers))
    finally:
        redis.stop()


def group_cpu_seconds(pgid: int) -> float:
    """CPU time of every process of a process group (the server and its workers)."""
    total = 0.0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@contextlib.contextmanager
def server(config_path: str, python: str | None = None, workers: int = 1):
    """Run the real server (twistd plugin) until the block ends."""
    python = python or server_python()
    log = open(os.path.join(os.path.dirname(config_path), "server.log"), "w")
    proc = subprocess.Popen(
        [python, "-c", "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
         "-n", "--pidfile=", "reticulum", "--config", config_path],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env=server_env(),
    )
    port = int(open(config_path).read().split('udp = ["127.0.0.1:')[1].split('"')[0])
    try:
        deadline = time.time() + 60
        while not options_ok(port) or workers_up(log.name) < workers:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("server did not start; see %s" % log.name)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def workers_up(log_path: str) -> int:
    with open(log_path, errors="replace") as f:
        return f.read().count("accounts: ")  # each process's start-up summary


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sipp(args: list[str], workdir: str, timeout: float) -> tuple[int, dict]:
    """Run SIPp in the background mode; returns its exit code and the last statistics row."""
    stat = os.path.join(workdir, "stat-%d.csv" % time.time_ns())
    cmd = ["sipp", "-i", "127.0.0.1", "-nostdin", "-trace_stat", "-stf", stat, "-fd", "1",
           "-trace_err", "-error_file", os.path.join(workdir, "errors.log")] + args
    proc = subprocess.run(cmd, cwd=workdir, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=timeout)
    row: dict = {}
    if os.path.exists(stat):
        with open(stat, newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";"))
        if rows:
            row = rows[-1]
    return proc.returncode, row


def counter(row: dict, name: str) -> int:
    try:
        return int(row.get(name + "(C)", 0) or 0)
    except ValueError:
        return 0


def elapsed_seconds(row: dict) -> float | None:
    """SIPp's ElapsedTime(C) ("HH:MM:SS" or "HH:MM:SS:mmm") in seconds."""
    text = row.get("ElapsedTime(C)") or ""
    parts = text.split(":")
    try:
        seconds = int(parts[0]) * 3600 + int(parts[1]) * 60 + int(parts[2])
    except (IndexError, ValueError):
        return None
    if len(parts) > 3:
        seconds += int(parts[3]) / 1000.0
    return seconds


def kept_pace(row: dict, duration: int) -> bool:
    """Did SIPp place its calls within the window (not a slower run that got there late)?"""
    elapsed = elapsed_seconds(row)
    return elapsed is not None and elapsed <= duration * 1.1 + 1


def tmpdir() -> str:
    return tempfile.mkdtemp(prefix="reticulum-bench-")
