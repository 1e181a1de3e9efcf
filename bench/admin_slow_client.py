"""Does a slow admin client slow SIP down? The same SIPp call burst three times against one
server with the admin port on: no admin client, a client that reads every event, and a
client that never reads (its socket's receive buffer is 4 KB, so the server's send buffer
fills within the first events and everything after is queued, then dropped).

Prints for each run SIPp's successful and failed calls, retransmissions,
the server's CPU share, and the events dropped so far (from /metrics).

    python bench/admin_slow_client.py [--rate 300] [--duration 10]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from calls import register_callee  # noqa: E402

TOKEN = "bench-admin-token-0123456789"


def handshake(port: int, rcvbuf: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.sendall(("GET /events?token=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (TOKEN, port)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError("admin handshake refused: %r" % head[:40])
    return s


def reader(s: socket.socket, stop: threading.Event, got: list) -> None:
    s.settimeout(0.5)
    while not stop.is_set():
        try:
            data = s.recv(1 << 16)
        except socket.timeout:
            continue
        except OSError:
            return
        if not data:
            return
        got[0] += len(data)


def dropped(admin_port: int) -> float:
    request = urllib.request.Request("http://127.0.0.1:%d/metrics" % admin_port,
                                     headers={"Authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(request, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("reticulum_admin_events_dropped_total"):
                return float(line.split()[-1])
    return -1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()

    work = common.tmpdir()
    port, admin_port = common.free_port(), common.free_port()
    config = common.write_config(
        work, port, "[auth]\nenabled = false\n[admin]\ntoken = \"%s\"" % TOKEN)
    with open(config) as f:
        text = f.read()
    with open(config, "w") as f:  # the admin address goes into [listen]
        f.write(text.replace("[listen]\n", "[listen]\nadmin = [\"127.0.0.1:%d\"]\n" % admin_port))
    uac = os.path.join(common.SCENARIOS, "uac.xml")
    uas = os.path.join(common.SCENARIOS, "uas.xml")

    def burst(proc) -> dict:
        callee_port = common.free_port()
        register_callee(port, callee_port, "udp")
        callee = common.subprocess.Popen(
            ["sipp", "-sf", uas, "-i", "127.0.0.1", "-p", str(callee_port), "-t", "u1",
             "-nostdin", "-max_socket", "10000"], cwd=work,
            stdout=common.subprocess.DEVNULL, stderr=common.subprocess.DEVNULL,
            start_new_session=True)
        time.sleep(0.5)
        cpu0, wall0 = common.cpu_seconds(proc.pid), time.monotonic()
        try:
            code, row = common.sipp(
                ["-sf", uac, "-t", "u1", "-p", str(common.free_port()), "-s", "bench",
                 "-key", "domain", "reticulum.local", "-key", "caller", "sipp@127.0.0.1",
                 "-d", "0", "-r", str(args.rate), "-m", str(args.rate * args.duration),
                 "-l", str(max(args.rate * 4, 1000)), "-recv_timeout", "10000",
                 "127.0.0.1:%d" % port], work, timeout=args.duration * 4 + 60)
        finally:
            common.os.killpg(callee.pid, common.signal.SIGTERM)
            callee.wait()
        share = (common.cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - wall0)
        return {"exit": code, "ok": common.counter(row, "SuccessfulCall"),
                "failed": common.counter(row, "FailedCall"),
                "retransmissions": common.counter(row, "Retransmissions"),
                "cpu": round(share, 2),
                "dropped": dropped(admin_port)}

    with common.server(config) as proc:
        results = {"no admin client": burst(proc)}
        stop = threading.Event()
        fast = handshake(admin_port)
        got = [0]
        thread = threading.Thread(target=reader, args=(fast, stop, got), daemon=True)
        thread.start()
        results["a client reading every event"] = burst(proc)
        stop.set()
        thread.join()
        fast.close()
        slow = handshake(admin_port, rcvbuf=4096)
        results["a client that never reads"] = burst(proc)
        slow.close()
    for name, result in results.items():
        print("%-30s %s" % (name, json.dumps(result)))
    print("events read by the reading client: %d bytes" % got[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
