"""The core's own cost, without sockets: registrations and whole calls fed straight into
`Core.message_received`, messages out collected in memory, the real reactor as the clock (never
run). Prints microseconds per registration and per call; `--profile` adds the top functions.

    python bench/core_profile.py [--registrations 20000] [--calls 3000] [--profile]

This isolates the Python cost of parsing, transactions, routing and the registrar from the
kernel and SIPp; `register.sh` and `calls.sh` measure the whole server.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import reactor  # noqa: E402

from reticulum.config import config_from_dict  # noqa: E402
from reticulum.service import build_core  # noqa: E402
from reticulum.location import Binding, MemoryLocation  # noqa: E402
from reticulum.service import tune_gc  # noqa: E402
from reticulum.sip import parse  # noqa: E402
from reticulum.addresses import Flow, ListeningPoint  # noqa: E402

PROXY = ("127.0.0.1", 5060)
CALLER = Flow("udp", PROXY, ("127.0.0.1", 6000))
CALLEE = Flow("udp", PROXY, ("127.0.0.1", 7000))
SDP = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
       "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class Collecting:
    """The flow table, keeping what is sent."""

    listening = [ListeningPoint("udp", "127.0.0.1", 5060)]

    def __init__(self):
        self.out: list[bytes] = []

    def send(self, data, flow):
        self.out.append(data)
        return True

    def send_to(self, data, transport, host, port):
        self.out.append(data)
        return Flow(transport, PROXY, (host, port))

    def alive(self, flow):
        return True


def make_core(store):
    state = tempfile.mkdtemp(prefix="reticulum-profile-")
    config = config_from_dict({
        "domains": ["reticulum.local"], "state_dir": state,
        "listen": {"udp": ["127.0.0.1:5060"]}, "auth": {"enabled": False},
        "log": {"messages": False}, "registrar": {"store": store},
    }, base_dir=state)
    net = Collecting()
    core = build_core(config, reactor, net)
    core.start()
    tune_gc()  # as the server does after start-up
    return core, net


def register_message(i: int) -> bytes:
    user = "u%05d" % (i % 10000)
    return ("REGISTER sip:reticulum.local SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-%d-1\r\n"
            "From: <sip:%s@reticulum.local>;tag=%d\r\nTo: <sip:%s@reticulum.local>\r\n"
            "Call-ID: %d-r@127.0.0.1\r\nCSeq: 1 REGISTER\r\n"
            "Contact: <sip:%s@127.0.0.1:6000>\r\nExpires: 3600\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n" % (i, user, i, user, i, user)).encode()


def invite(i: int) -> bytes:
    return ("INVITE sip:bob@reticulum.local SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-%d-0\r\n"
            "From: <sip:carol@127.0.0.1>;tag=%dc\r\nTo: <sip:bob@reticulum.local>\r\n"
            "Call-ID: %d-c@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
            "Contact: <sip:caller@127.0.0.1:6000>\r\nMax-Forwards: 70\r\n"
            "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s"
            % (i, i, i, len(SDP), SDP)).encode()


def in_dialog(method: str, cseq: int, i: int) -> bytes:
    return ("%s sip:bob@127.0.0.1:7000 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-%d-%s\r\n"
            "Route: <sip:127.0.0.1:5060;lr>\r\n"
            "From: <sip:carol@127.0.0.1>;tag=%dc\r\nTo: <sip:bob@reticulum.local>;tag=u1\r\n"
            "Call-ID: %d-c@127.0.0.1\r\nCSeq: %d %s\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n" % (method, i, method, i, i, cseq, method)).encode()


def answer(request: bytes, status: int, reason: str) -> bytes:
    """What the callee sends back for a request the proxy forwarded to it."""
    message = parse(request)
    lines = ["SIP/2.0 %d %s" % (status, reason)]
    lines += ["Via: " + v for v in message.get_all("Via")]
    lines += ["Record-Route: " + v for v in message.get_all("Record-Route")]
    to = message.get("To")
    if ";tag=" not in to:
        to += ";tag=u1"
    lines += ["From: " + message.get("From"), "To: " + to, "Call-ID: " + message.call_id,
              "CSeq: " + message.get("CSeq"), "Contact: <sip:bob@127.0.0.1:7000>",
              "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def forwarded(net: Collecting, method: bytes) -> bytes:
    return [d for d in net.out if d.startswith(method + b" ")][-1]


def run_registrations(count: int, store: str, profiler) -> float:
    core, net = make_core(store)
    messages = [register_message(i) for i in range(count)]
    profiler.enable()
    start = time.perf_counter()
    for data in messages:
        core.message_received(data, CALLER)
    elapsed = time.perf_counter() - start
    profiler.disable()
    core.stop()
    return elapsed / count * 1e6


def run_calls(count: int, profiler) -> float:
    """INVITE/180/200/ACK/BYE/200 through the proxy; the callee's answers are prepared
    outside the timed part."""
    core, net = make_core("memory")
    core.location.put(Binding(aor="sip:bob@reticulum.local", contact="sip:bob@127.0.0.1:7000",
                              expires_at=reactor.seconds() + 1e6, flow=CALLEE))
    spent = 0.0
    for i in range(count):
        net.out = []
        profiler.enable()
        start = time.perf_counter()
        core.message_received(invite(i), CALLER)
        spent += time.perf_counter() - start
        profiler.disable()
        out = forwarded(net, b"INVITE")
        ringing, ok = answer(out, 180, "Ringing"), answer(out, 200, "OK")
        ack, bye = in_dialog("ACK", 1, i), in_dialog("BYE", 2, i)
        profiler.enable()
        start = time.perf_counter()
        core.message_received(ringing, CALLEE)
        core.message_received(ok, CALLEE)
        core.message_received(ack, CALLER)
        core.message_received(bye, CALLER)
        spent += time.perf_counter() - start
        profiler.disable()
        bye_ok = answer(forwarded(net, b"BYE"), 200, "OK")
        profiler.enable()
        start = time.perf_counter()
        core.message_received(bye_ok, CALLEE)
        spent += time.perf_counter() - start
        profiler.disable()
    core.stop()
    return spent / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrations", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--store", choices=("memory", "sqlite"), default="sqlite")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    profiler = cProfile.Profile() if args.profile else _NoProfile()
    print("%s: %.1f us per registration (%s store), %.1f us per call (6 messages in, 7 out)"
          % (sys.implementation.name,
             run_registrations(args.registrations, args.store, profiler), args.store,
             run_calls(args.calls, profiler)))
    if args.profile:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return 0


class _NoProfile:
    def enable(self):
        pass

    def disable(self):
        pass


if __name__ == "__main__":
    sys.exit(main())
