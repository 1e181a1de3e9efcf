"""Bad input against the real server: garbage and torture messages by the thousand, over UDP
and TCP. The server answers what it can (400 and friends), closes what it must, and keeps
serving: registrations made before are still there afterwards."""
from __future__ import annotations

import random
import re
import socket
from pathlib import Path

from tests.integration.harness import sip_options
from tests.integration.sipclient import DOMAIN, UDPPeer, build, status

TORTURE = Path(__file__).resolve().parents[3] / "shared" / "rfc4475"


def _messages(rng: random.Random) -> list[bytes]:
    torture = [p.read_bytes() for p in sorted(TORTURE.glob("*.dat"))]
    assert torture, "RFC 4475 messages not found at %s" % TORTURE
    out = list(torture)
    for _ in range(1500):
        base = bytearray(rng.choice(torture))
        for _ in range(rng.randint(1, 8)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        out.append(bytes(base))
        out.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))))
    return out


def _register(server, peer):
    peer.send(build("REGISTER", "sip:" + DOMAIN, peer.address,
                    from_="<sip:bob@%s>;tag=r" % DOMAIN, to="<sip:bob@%s>" % DOMAIN,
                    headers=["Contact: <sip:bob@127.0.0.1:%d>" % peer.address[1],
                             "Expires: 600"]), server)
    return peer.final()


def test_garbage_flood_over_udp_and_tcp(start_server):
    server = start_server(auth={"enabled": False})
    phone = UDPPeer()
    assert status(_register(server, phone)) == 200
    rng = random.Random(4475)
    messages = _messages(rng)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        for data in messages:
            udp.sendto(data[:60000], (server.host, server.port))
    for chunk in range(0, len(messages), 500):
        with socket.create_connection((server.host, server.port), timeout=5) as tcp:
            try:
                for data in messages[chunk:chunk + 500]:
                    tcp.sendall(data)
            except OSError:
                pass  # the server closed a connection it could not frame: allowed
    assert sip_options(server.host, server.port, "udp", timeout=5)
    assert sip_options(server.host, server.port, "tcp", timeout=5)
    # the registration made before the flood is intact
    query = UDPPeer()
    query.send(build("REGISTER", "sip:" + DOMAIN, query.address,
                     from_="<sip:bob@%s>;tag=q" % DOMAIN, to="<sip:bob@%s>" % DOMAIN), server)
    reply = query.final()
    assert re.search(rb"Contact: <sip:bob@127.0.0.1:%d>;expires=\d+" % phone.address[1], reply)
    log = server.read_log()
    assert log.count("Malformed message") > 1000  # the flood did arrive and was refused
    assert "Traceback" not in log and "Unhandled" not in log
    phone.close()
    query.close()
