"""WebSocket clients one server holds: connects, registers (RFC 7118) and keeps alive many
SIP-over-WebSocket clients, then reports how many the server holds, the server's memory
per connection (its RSS before and after), and how promptly calls to them are set up.

    python bench/ws_clients.py [--clients 10000] [--calls 20] [--hold 20] [--auth] [--memory]

Everything stays on loopback: the server listens on 127.0.0.1 and the clients connect from
127.0.0.1. Each client is a small WebSocket client on asyncio (handshake with the ``sip``
subprotocol, masked frames, answers the server's pings) that REGISTERs a ``.invalid``
contact, as a browser does, and answers INVITE with 200 and BYE with 200. Calls come from
a UDP socket: INVITE to a random registered user, the time to its 200 is measured, then
ACK and BYE.

The file descriptor limit is raised to the hard limit for this process (the server raises
its own). Two file descriptors are needed per client (one here, one in the server).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import random
import resource
import socket
import statistics
import struct
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

DOMAIN = "reticulum.local"
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------------------
# a minimal WebSocket client


def frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame (RFC 6455 §5.2)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class Client(asyncio.Protocol):
    def __init__(self, bench: "Bench", index: int) -> None:
        self.bench = bench
        self.index = index
        self.user = "u%05d" % index
        self.host = uuid.uuid4().hex[:10] + ".invalid"
        self.contact = "sip:%s@%s;transport=ws" % (self.user, self.host)
        self.transport = None
        self.buf = b""
        self.open = False
        self.registered = asyncio.get_event_loop().create_future()
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.closed = False

    # -- websocket

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write((
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
            % (self.bench.ws_port, self.key)).encode())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            if not head.startswith(b"HTTP/1.1 101"):
                self.fail("handshake refused: %r" % head[:60])
                return
            accept = base64.b64encode(hashlib.sha1(
                (self.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            if accept not in head:
                self.fail("bad Sec-WebSocket-Accept")
                return
            self.open = True
            self.register()
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n = struct.unpack("!H", self.buf[2:4])[0]
                pos = 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n = struct.unpack("!Q", self.buf[2:10])[0]
                pos = 10
            if len(self.buf) < pos + n:
                return
            payload, self.buf = self.buf[pos:pos + n], self.buf[pos + n:]
            opcode = b0 & 0x0F
            if opcode in (1, 2):
                self.sip(payload)
            elif opcode == 9:  # ping
                self.transport.write(frame(payload, 10))
                self.bench.pongs += 1
            elif opcode == 8:
                self.transport.write(frame(payload[:2], 8))
                self.transport.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.bench.lost += 1
        if not self.registered.done():
            self.registered.set_result(False)

    def fail(self, why: str) -> None:
        self.bench.errors.append(why)
        if not self.registered.done():
            self.registered.set_result(False)
        self.transport.close()

    def send(self, text: str) -> None:
        self.transport.write(frame(text.encode()))

    # -- SIP

    def register(self) -> None:
        self.send(
            "REGISTER sip:%s SIP/2.0\r\nVia: SIP/2.0/WS %s;branch=z9hG4bK%s\r\nMax-Forwards: 70\r\n"
            "From: <sip:%s@%s>;tag=%s\r\nTo: <sip:%s@%s>\r\nCall-ID: %s\r\nCSeq: 1 REGISTER\r\n"
            "Contact: <%s>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
            % (DOMAIN, self.host, uuid.uuid4().hex, self.user, DOMAIN, uuid.uuid4().hex[:8], self.user,
               DOMAIN, uuid.uuid4().hex, self.contact))

    def sip(self, payload: bytes) -> None:
        text = payload.decode("utf-8", "replace")
        first, _, rest = text.partition("\r\n")
        head = rest.split("\r\n\r\n", 1)[0]
        if first.startswith("SIP/2.0 "):
            if " REGISTER" in _header(head, "CSeq") and not self.registered.done():
                self.registered.set_result(first.startswith("SIP/2.0 200"))
            return
        method = first.split(" ", 1)[0]
        if method == "ACK":
            return
        lines = ["SIP/2.0 200 OK"]
        for line in head.split("\r\n"):
            name = line.split(":", 1)[0].strip().lower()
            if name in ("via", "v", "from", "f", "call-id", "i", "cseq", "record-route"):
                lines.append(line)
            elif name in ("to", "t"):
                lines.append(line if ";tag=" in line else line + ";tag=" + uuid.uuid4().hex[:8])
        body = SDP if method == "INVITE" else ""
        lines.append("Contact: <%s>" % self.contact)
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append("Content-Length: %d" % len(body))
        self.send("\r\n".join(lines) + "\r\n\r\n" + body)


def _header(head: str, name: str) -> str:
    for line in head.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return ""


# ---------------------------------------------------------------------------


class Bench:
    def __init__(self, ws_port: int, udp_port: int) -> None:
        self.ws_port = ws_port
        self.udp_port = udp_port
        self.clients: list[Client] = []
        self.errors: list[str] = []
        self.lost = 0
        self.pongs = 0

    async def connect_all(self, n: int, batch: int) -> int:
        loop = asyncio.get_running_loop()
        ok = 0
        for start in range(0, n, batch):
            group = []
            for i in range(start, min(n, start + batch)):
                client = Client(self, i)
                self.clients.append(client)
                group.append(loop.create_connection(lambda c=client: c, "127.0.0.1", self.ws_port))
            results = await asyncio.gather(*group, return_exceptions=True)
            for r in results:
                if isinstance(r, Exception):
                    self.errors.append("connect: %s" % r)
            done = await asyncio.gather(*(c.registered for c in self.clients[start:start + batch]))
            ok += sum(1 for d in done if d)
            if (start // batch) % 10 == 9:
                print("  %d connected and registered" % ok, flush=True)
        return ok

    async def call(self, client: Client) -> float:
        """INVITE from UDP to one client; seconds until its 200 arrives (ACK, BYE after)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        local = sock.getsockname()
        call_id = uuid.uuid4().hex
        tag = uuid.uuid4().hex[:8]

        def request(method: str, ruri: str, cseq: int, to: str, routes: list[str], body: str = "") -> bytes:
            lines = ["%s %s SIP/2.0" % (method, ruri),
                     "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%s;rport" % (local[1], uuid.uuid4().hex),
                     "Max-Forwards: 70", "From: <sip:caller@example.org>;tag=%s" % tag, "To: %s" % to,
                     "Call-ID: %s" % call_id, "CSeq: %d %s" % (cseq, method),
                     "Contact: <sip:caller@127.0.0.1:%d>" % local[1]]
            lines += ["Route: %s" % r for r in routes]
            if body:
                lines.append("Content-Type: application/sdp")
            lines.append("Content-Length: %d" % len(body))
            return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

        target = ("127.0.0.1", self.udp_port)
        to = "<sip:%s@%s>" % (client.user, DOMAIN)
        t0 = time.monotonic()
        sock.sendto(request("INVITE", "sip:%s@%s" % (client.user, DOMAIN), 1, to, [], SDP), target)
        try:
            while True:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 10)
                if data.startswith(b"SIP/2.0 1"):
                    continue
                elapsed = time.monotonic() - t0
                break
            text = data.decode()
            head = text.split("\r\n\r\n")[0]
            if not text.startswith("SIP/2.0 200"):
                raise RuntimeError(text.split("\r\n")[0])
            rr = [l.split(":", 1)[1].strip() for l in head.split("\r\n") if l.lower().startswith("record-route:")]
            routes = list(reversed(", ".join(rr).split(", "))) if rr else []
            contact = _header(head, "Contact").strip("<>").split(">")[0]
            to_tagged = _header(head, "To")
            sock.sendto(request("ACK", contact, 1, to_tagged, routes), target)
            sock.sendto(request("BYE", contact, 2, to_tagged, routes), target)
            while True:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 10)
                if b"CSeq: 2 BYE" in data and data.startswith(b"SIP/2.0 2"):
                    break
            return elapsed
        finally:
            sock.close()


async def run(args, server_pid: int, ws_port: int, udp_port: int) -> int:
    bench = Bench(ws_port, udp_port)
    await asyncio.sleep(1.0)
    rss0 = rss_kib(server_pid)
    print("server RSS before: %.1f MiB" % (rss0 / 1024), flush=True)
    t0 = time.monotonic()
    ok = await bench.connect_all(args.clients, args.batch)
    took = time.monotonic() - t0
    print("%d of %d clients connected and registered in %.1f s (%.0f/s); %d errors"
          % (ok, args.clients, took, ok / took if took else 0, len(bench.errors)), flush=True)
    for e in bench.errors[:5]:
        print("  error: %s" % e)
    print("holding them for %d s (server pings every 30 s, clients answer)..." % args.hold, flush=True)
    await asyncio.sleep(args.hold)
    alive = sum(1 for c in bench.clients if c.open and not c.closed)
    rss1 = rss_kib(server_pid)
    per = (rss1 - rss0) * 1024 / max(alive, 1)
    print("server RSS after: %.1f MiB" % (rss1 / 1024))
    print("clients held at once: %d (lost %d, pongs sent %d)" % (alive, bench.lost, bench.pongs))
    print("server memory per connection: %.1f KiB (%.0f bytes)" % (per / 1024, per), flush=True)
    latencies = []
    failures = 0
    live = [c for c in bench.clients if c.open and not c.closed]
    for client in random.sample(live, min(args.calls, len(live))):
        try:
            latencies.append(await bench.call(client))
        except Exception as e:  # noqa: BLE001 - reported
            failures += 1
            print("  call to %s failed: %s" % (client.user, e))
    if latencies:
        latencies.sort()
        print("calls while holding them: %d set up, %d failed; INVITE->200 median %.1f ms, max %.1f ms"
              % (len(latencies), failures, statistics.median(latencies) * 1000, latencies[-1] * 1000))
    alive_end = sum(1 for c in bench.clients if c.open and not c.closed)
    print("clients still connected at the end: %d" % alive_end, flush=True)
    for c in bench.clients:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.5)
    return 0 if ok == args.clients and failures == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=500, help="clients connecting at once")
    parser.add_argument("--calls", type=int, default=20, help="calls to random clients while held")
    parser.add_argument("--hold", type=int, default=20, help="seconds to hold them before measuring")
    parser.add_argument("--memory", action="store_true", help="in-memory location store")
    args = parser.parse_args()
    limit = raise_nofile()
    if limit < args.clients + 200:
        print("open files limit %d is too low for %d clients (ulimit -n)" % (limit, args.clients))
        return 2
    work = common.tmpdir()
    port, ws_port = common.free_port(), common.free_port()
    lines = [
        'domains = ["%s"]' % DOMAIN, 'state_dir = "state"',
        "[listen]", 'udp = ["127.0.0.1:%d"]' % port, 'ws = ["127.0.0.1:%d"]' % ws_port,
        "[log]", "messages = false",
        "[auth]", "enabled = false",
    ]
    if args.memory:
        lines += ["[registrar]", 'store = "memory"']
    config = os.path.join(work, "reticulum.toml")
    with open(config, "w") as f:
        f.write("\n".join(lines) + "\n")
    with common.server(config) as proc:
        return asyncio.run(run(args, proc.pid, ws_port, port))


if __name__ == "__main__":
    sys.exit(main())
