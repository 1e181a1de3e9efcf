"""Registrations per second: SIPp registers 10,000 distinct users over UDP through the server.

Prints, for each rate tried, what SIPp counted, then the highest rate sustained for the whole
window with zero failures and under 0.5% retransmissions.

    python bench/register.py [--auth] [--memory] [--duration 15] [--rates 1000,2000,...]
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
    args = parser.parse_args()
    warmup = common.default_warmup(common.server_python()) if args.warmup is None \
        else args.warmup

    work = common.tmpdir()
    port = common.free_port()
    users = {"u%05d" % i: "pw%05d" % i for i in range(USERS)}
    extra = ["[auth]", "enabled = %s" % ("true" if args.auth else "false")]
    if args.memory:
        extra += ["[registrar]", 'store = "memory"']
    config = common.write_config(work, port, "\n".join(extra), users if args.auth else None)
    with open(os.path.join(work, "users.csv"), "w") as f:
        f.write("SEQUENTIAL\n")
        for name, password in users.items():
            f.write("%s;%s\n" % (name, password))
    scenario = os.path.join(common.BENCH_SCENARIOS,
                            "register_auth.xml" if args.auth else "register.xml")
    best = 0

    def run(rate: int, seconds: int):
        return common.sipp(
            ["-sf", scenario, "-inf", os.path.join(work, "users.csv"), "-t", "u1",
             "-p", str(common.free_port()), "-r", str(rate), "-m", str(rate * seconds),
             "-l", str(max(rate * 2, 1000)), "-recv_timeout", "5000",
             "127.0.0.1:%d" % port],
            work, timeout=seconds * 4 + 60)

    with common.server(config) as proc:
        if warmup:
            run(1000, warmup)
            print("warm-up: %d s at 1000/s (not counted)" % warmup, flush=True)
        for rate in [int(r) for r in args.rates.split(",")]:
            total = rate * args.duration
            cpu0 = common.cpu_seconds(proc.pid)
            wall0 = time.monotonic()
            code, row = run(rate, args.duration)
            share = (common.cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - wall0)
            ok = common.counter(row, "SuccessfulCall")
            failed = common.counter(row, "FailedCall")
            retrans = common.counter(row, "Retransmissions")
            elapsed = row.get("ElapsedTime(C)", "?")
            print("rate %5d/s: %d ok, %d failed, %d retransmissions, elapsed %s, server CPU %.2f"
                  % (rate, ok, failed, retrans, elapsed, share), flush=True)
            sent = ok * (2 if args.auth else 1)
            if code != 0 or failed or ok < total or retrans > 0.005 * max(sent, 1) \
                    or not common.kept_pace(row, args.duration):
                break
            best = rate
    print("registrations/s sustained for %ds (%s store, auth %s): %d"
          % (args.duration, "memory" if args.memory else "sqlite",
             "on" if args.auth else "off", best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
