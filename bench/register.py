"""Registrations per second: SIPp registers 10,000 distinct users over UDP through the server.

Prints, for each rate tried, what SIPp counted, then the highest rate sustained for the whole
window with zero failures and under 0.5% retransmissions.

    python bench/register.py [--auth] [--memory] [--duration 15] [--rates 1000,2000,...]
                             [--workers 1,2] [--cluster]

--workers N runs N server processes sharing a Redis ([cluster]); a list (1,2) measures each
in turn and prints them side by side. SIPp then sends each registration from a socket of its
own (-t un) so that the kernel spreads them over the workers (for N = 1 too).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

USERS = 10000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auth", action="store_true", help="digest authentication on")
    parser.add_argument("--memory", action="store_true", help="in-memory location store")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--rates", default="1000,2000,3000,4000,5000,6000,7000,8000")
    parser.add_argument("--warmup", type=int, default=None,
                        help="seconds of load at 1,000/s before measuring, not counted "
                             "(default: 10 on PyPy, 0 on CPython)")
    common.add_workers_argument(parser)
    args = parser.parse_args()
    warmup = common.default_warmup(common.server_python()) if args.warmup is None \
        else args.warmup
    counts = common.worker_counts(args.workers)
    spread = max(counts) > 1 or args.cluster
    results = [(workers,) + measure(args, warmup, workers, spread) for workers in counts]
    print("\n%-8s %-16s %s" % ("workers", "registrations/s", "server CPU per registration (us)"))
    for workers, best, cpu in results:
        print("%-8d %-16d %s" % (workers, best, "%.0f" % cpu if cpu else "-"))
    return 0


def measure(args, warmup: int, workers: int, spread: bool) -> tuple:
    """(best rate, server CPU per registration in microseconds) for `workers`."""
    work = common.tmpdir()
    with common.cluster_config(workers, args.cluster, work) as cluster:
        return _measure(args, warmup, workers, spread, work, cluster)


def _measure(args, warmup, workers, spread, work, cluster) -> tuple:
    port = common.free_port()
    users = {"u%05d" % i: "pw%05d" % i for i in range(USERS)}
    extra = ["[auth]", "enabled = %s" % ("true" if args.auth else "false")]
    if args.memory:
        extra += ["[registrar]", 'store = "memory"']
    extra.append(cluster)
    config = common.write_config(work, port, "\n".join(extra), users if args.auth else None)
    with open(os.path.join(work, "users.csv"), "w") as f:
        f.write("SEQUENTIAL\n")
        for name, password in users.items():
            f.write("%s;%s\n" % (name, password))
    scenario = os.path.join(common.BENCH_SCENARIOS,
                            "register_auth.xml" if args.auth else "register.xml")
    best = 0
    best_cpu = None

    def run(rate: int, seconds: int):
        return common.sipp(
            ["-sf", scenario, "-inf", os.path.join(work, "users.csv"),
             "-t", "un" if spread else "u1",  # one socket each: spread over the workers
             "-p", str(common.free_port()), "-r", str(rate), "-m", str(rate * seconds),
             "-l", str(max(rate * 2, 1000)), "-recv_timeout", "5000", "-max_socket", "10000",
             "127.0.0.1:%d" % port],
            work, timeout=seconds * 4 + 60)

    with common.server(config, workers=workers) as proc:
        if warmup:
            run(1000, warmup)
            print("warm-up: %d s at 1000/s (not counted)" % warmup, flush=True)
        for rate in [int(r) for r in args.rates.split(",")]:
            total = rate * args.duration
            cpu0 = common.group_cpu_seconds(proc.pid)
            wall0 = time.monotonic()
            code, row = run(rate, args.duration)
            cpu = common.group_cpu_seconds(proc.pid) - cpu0
            share = cpu / (time.monotonic() - wall0)
            ok = common.counter(row, "SuccessfulCall")
            failed = common.counter(row, "FailedCall")
            retrans = common.counter(row, "Retransmissions")
            elapsed = row.get("ElapsedTime(C)", "?")
            print("workers %d, rate %5d/s: %d ok, %d failed, %d retransmissions, elapsed %s, "
                  "server CPU %.2f, %.0f us per registration"
                  % (workers, rate, ok, failed, retrans, elapsed, share, 1e6 * cpu / max(ok, 1)),
                  flush=True)
            sent = ok * (2 if args.auth else 1)
            if code != 0 or failed or ok < total or retrans > 0.005 * max(sent, 1) \
                    or not common.kept_pace(row, args.duration):
                break
            best = rate
            best_cpu = 1e6 * cpu / max(ok, 1)
    print("registrations/s sustained for %ds (%s store, auth %s, %d workers): %d"
          % (args.duration, "redis" if cluster else "memory" if args.memory else "sqlite",
             "on" if args.auth else "off", workers, best))
    return best, best_cpu


if __name__ == "__main__":
    sys.exit(main())
