"""Calls per second: SIPp UAC -> server -> SIPp UAS, the callee found through the location
service, Record-Route on: INVITE, 100, 180, 200, ACK, BYE, 200.

Prints, for each rate tried, what SIPp counted and the server's CPU share, then the highest
rate sustained for the whole window with zero failed calls and under 0.5% retransmissions.

    python bench/calls.py [--transport udp|tcp] [--duration 20] [--rates 200,400,...]
                          [--workers 1,2] [--cluster]

--workers N runs N server processes sharing a Redis ([cluster]); a list (1,2) measures each
in turn and prints them side by side. The caller then sends each call from a socket of its
own (SIPp -t un) so that the kernel spreads them over the workers (for N = 1 too).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


_CALLEE_CALL_ID = "bench-callee-%d-%d" % (os.getpid(), time.time_ns())
_callee_cseq = [0]


def register_callee(server_port: int, callee_port: int, transport: str) -> None:
    """Bind the callee's address to sip:bench@reticulum.local (over UDP, from its own port),
    replacing the callee of the previous rate: that SIPp is gone, and calls forked to it
    too (retransmitting to a dead port, or failing to connect) would load the server with
    work no rate asked for."""
    params = "" if transport == "udp" else ";transport=tcp"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", callee_port))
        s.settimeout(5)
        for contact, expires in (("*", 0), ("<sip:bench@127.0.0.1:%d%s>" % (callee_port, params),
                                            7200)):
            _callee_cseq[0] += 1
            message = (
                "REGISTER sip:reticulum.local SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bKreg%d-%d\r\n"
                "From: <sip:bench@reticulum.local>;tag=r1\r\nTo: <sip:bench@reticulum.local>\r\n"
                "Call-ID: %s\r\nCSeq: %d REGISTER\r\n"
                "Contact: %s\r\nExpires: %d\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n" % (callee_port, os.getpid(), _callee_cseq[0],
                                                 _CALLEE_CALL_ID, _callee_cseq[0], contact,
                                                 expires)
            ).encode()
            s.sendto(message, ("127.0.0.1", server_port))
            reply = s.recv(65535)
            if not reply.startswith(b"SIP/2.0 200"):
                raise RuntimeError("callee registration failed: %r" % reply[:80])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--rates", default="200,400,600,800,1000,1200,1400,1600")
    parser.add_argument("--hold", type=int, default=0, help="ms between ACK and BYE")
    parser.add_argument("--warmup", type=int, default=None,
                        help="seconds of calls at 200/s before measuring, not counted "
                             "(default: 10 on PyPy, 0 on CPython)")
    common.add_workers_argument(parser)
    args = parser.parse_args()
    warmup = common.default_warmup(common.server_python()) if args.warmup is None \
        else args.warmup
    counts = common.worker_counts(args.workers)
    spread = max(counts) > 1 or args.cluster
    results = [(workers,) + measure(args, warmup, workers, spread) for workers in counts]
    print("\n%-8s %-10s %s" % ("workers", "calls/s", "server CPU per call (us)"))
    for workers, best, cpu in results:
        print("%-8d %-10d %s" % (workers, best, "%.0f" % cpu if cpu else "-"))
    return 0


def measure(args, warmup: int, workers: int, spread: bool) -> tuple:
    """(best rate, server CPU per call in microseconds at that rate) for `workers`."""
    work = common.tmpdir()
    port = common.free_port()
    with common.cluster_config(workers, args.cluster, work) as cluster:
        config = common.write_config(work, port, "[auth]\nenabled = false\n" + cluster)
        return _measure(args, warmup, workers, spread, work, port, config)


def _measure(args, warmup, workers, spread, work, port, config) -> tuple:
    sipp_t = "u1" if args.transport == "udp" else "t1"
    # one socket per call: the kernel spreads calls over the workers by source port
    caller_t = "un" if spread and args.transport == "udp" else sipp_t
    uac = os.path.join(common.SCENARIOS, "uac.xml")
    uas = os.path.join(common.SCENARIOS, "uas.xml")
    best = 0
    best_cpu = None

    def run(rate: int, seconds: int, proc):
        """One SIPp run at `rate` calls/s for `seconds`: (exit code, stats row, CPU share,
        CPU seconds of every server process)."""
        callee_port = common.free_port()
        register_callee(port, callee_port, args.transport)
        callee = subprocess.Popen(
            ["sipp", "-sf", uas, "-i", "127.0.0.1", "-p", str(callee_port), "-t", sipp_t,
             "-nostdin", "-trace_err", "-error_file",
             os.path.join(work, "uas-errors.log"), "-max_socket", "10000"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        time.sleep(0.5)
        cpu0 = common.group_cpu_seconds(proc.pid)
        wall0 = time.monotonic()
        try:
            code, row = common.sipp(
                ["-sf", uac, "-t", caller_t, "-p", str(common.free_port()), "-s", "bench",
                 "-key", "domain", "reticulum.local", "-key", "caller", "sipp@127.0.0.1",
                 "-d", str(args.hold), "-r", str(rate), "-m", str(rate * seconds),
                 "-l", str(max(rate * 4, 1000)), "-recv_timeout", "10000",
                 "-max_socket", "10000", "127.0.0.1:%d" % port],
                work, timeout=seconds * 4 + 60)
        finally:
            os.killpg(callee.pid, signal.SIGTERM)
            callee.wait()
        cpu = common.group_cpu_seconds(proc.pid) - cpu0
        return code, row, cpu / (time.monotonic() - wall0), cpu

    with common.server(config, workers=workers) as proc:
        if warmup:
            run(200, warmup, proc)
            print("warm-up: %d s at 200/s (not counted)" % warmup, flush=True)
        for rate in [int(r) for r in args.rates.split(",")]:
            total = rate * args.duration
            code, row, share, cpu = run(rate, args.duration, proc)
            ok = common.counter(row, "SuccessfulCall")
            failed = common.counter(row, "FailedCall")
            retrans = common.counter(row, "Retransmissions")
            elapsed = row.get("ElapsedTime(C)", "?")
            print("workers %d, rate %5d/s: %d ok, %d failed, %d retransmissions, elapsed %s, "
                  "server CPU %.2f, %.0f us per call"
                  % (workers, rate, ok, failed, retrans, elapsed, share, 1e6 * cpu / max(ok, 1)),
                  flush=True)
            if code != 0 or failed or ok < total or retrans > 0.005 * max(ok * 4, 1) \
                    or not common.kept_pace(row, args.duration):
                break
            best = rate
            best_cpu = 1e6 * cpu / max(ok, 1)
    print("calls/s sustained for %ds over %s with %d workers: %d"
          % (args.duration, args.transport, workers, best))
    return best, best_cpu


if __name__ == "__main__":
    sys.exit(main())
