"""Parser throughput: messages per second for a typical softphone INVITE with SDP.

    python bench/parse.py [--seconds 1.0] [--rounds 5]

Prints, for the same INVITE (10 headers and a 200-byte SDP body, as a softphone sends it):
parse, parse + serialize, parse + validate, parse + validate + serialize; and the same for a
200 OK to REGISTER. Each figure is the best of a few timed rounds.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reticulum.sip import parse  # noqa: E402

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@example.com>\r\n"
    b"From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.101:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY, REFER, UPDATE\r\n"
    b"User-Agent: Softphone/4.2.1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

REGISTER_OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bKnashds7;received=192.0.2.101;rport=5060\r\n"
    b"To: <sip:alice@example.com>;tag=2493k59kd\r\n"
    b"From: <sip:alice@example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.101:5060>;expires=3600\r\n"
    b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def _rate(fn, data: bytes, seconds: float, rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        n = 0
        batch = 200
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(batch):
                fn(data)
            n += batch
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def only_parse(data):
    return parse(data)


def parse_serialize(data):
    return parse(data).to_bytes()


def parse_validate(data):
    msg = parse(data)
    msg.validate()
    return msg


def parse_validate_serialize(data):
    msg = parse(data)
    msg.validate()
    return msg.to_bytes()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best counts")
    args = parser.parse_args(argv)
    impl = sys.implementation.name
    version = ".".join(str(v) for v in sys.version_info[:3])
    print("%s %s; INVITE %d bytes (%d-byte SDP), 200 OK to REGISTER %d bytes"
          % (impl, version, len(INVITE), len(SDP), len(REGISTER_OK)))
    for label, data in (("INVITE", INVITE), ("200 OK", REGISTER_OK)):
        for name, fn in (("parse", only_parse), ("parse+serialize", parse_serialize),
                         ("parse+validate", parse_validate),
                         ("parse+validate+serialize", parse_validate_serialize)):
            rate = _rate(fn, data, args.seconds, args.rounds)
            print("%-7s %-26s %10.0f msg/s  %6.2f us/msg" % (label, name, rate, 1e6 / rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
