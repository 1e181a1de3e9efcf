#!/usr/bin/env python3
"""Interphone: a door button that rings the house through Reticulum.

Waits for a press of the button (a GPIO pin through gpiozero when it is installed, on a
Raspberry Pi or a GrovePi; otherwise the Enter key) and on each press either

* opens ``web+reticulum://call?home@reticulum.local`` in the kiosk's browser, where the
  webphone (signed in as the door account) places the call; or, with ``--page``, opens the
  webphone page itself with ``?kiosk=...&call=...``; or
* with ``--headless``, places the call itself: an INVITE through the server as the door
  account (digest authentication), and once answered a doorbell chime over RTP (generated
  here, G.711 u-law), then BYE. A bell rings even without a browser.

    python3 examples/interphone/button.py                       # Enter or GPIO 5 -> browser link
    python3 examples/interphone/button.py --headless --server 192.168.1.10:5060 \\
        --user door --password door-secret --target home@reticulum.local

Uses Reticulum's own SIP message model and digest arithmetic (``reticulum.sip``), so run it
from a checkout (it finds the package next to it) or with Reticulum installed.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import select
import socket
import struct
import subprocess
import sys
import time
import uuid
import webbrowser
from typing import List, Optional, Tuple
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # a checkout: reticulum/ two levels up

from reticulum.sip import Request, Response, format_auth, parse, parse_auth  # noqa: E402
from reticulum.sip import digest  # noqa: E402

T1 = 0.5
SAMPLE_RATE = 8000
PACKET_SAMPLES = 160  # 20 ms


def say(text: str) -> None:
    print("button: " + text, flush=True)


# ---------------------------------------------------------------------------------------------
# the chime: generated, G.711 u-law


def ulaw(sample: int) -> int:
    """One 16-bit linear sample as a G.711 u-law byte."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, 32635) + 0x84
    exponent = min(7, max(0, (magnitude >> 7).bit_length() - 1))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def chime(seconds: float) -> bytes:
    """A two-note doorbell (E5, C5, with a little of each octave) repeated for ``seconds``."""
    notes = ((659.25, 0.0, 0.9), (523.25, 0.7, 1.3))
    period = 2.2
    total = int(seconds * SAMPLE_RATE)
    out = bytearray()
    for n in range(total):
        t = (n / SAMPLE_RATE) % period
        value = 0.0
        for freq, start, length in notes:
            dt = t - start
            if 0 <= dt < length:
                envelope = math.exp(-3.0 * dt) * min(1.0, dt * 200)
                value += envelope * (math.sin(2 * math.pi * freq * dt) + 0.3 * math.sin(4 * math.pi * freq * dt))
        out.append(ulaw(int(9000 * value)))
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# a small SIP user agent client, just enough for one call


class CallFailed(Exception):
    pass


class DoorCall:
    """One call from the door account to the target, over UDP or TCP to the server."""

    def __init__(self, server: Tuple[str, int], transport: str, user: str, password: str, domain: str,
                 target: str, display: str = "Door") -> None:
        self.server = server
        self.transport = transport
        self.user = user
        self.password = password
        self.domain = domain
        self.target = target if target.startswith("sip:") else "sip:" + (target if "@" in target else target + "@" + domain)
        self.display = display
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        if transport == "tcp":
            self.sock = socket.create_connection(server, timeout=5)
        else:
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
            self.sock.connect(server)
        self.local = self.sock.getsockname()[:2]
        self.rtp = socket.socket(family, socket.SOCK_DGRAM)
        self.rtp.bind((self.local[0], 0))
        self.call_id = uuid.uuid4().hex + "@door"
        self.tag = uuid.uuid4().hex[:10]
        self.cseq = 0
        self.buffer = b""
        self.rtp_sent = 0
        self.rtp_heard = 0

    # -- wire

    def _host(self, addr: Tuple[str, int]) -> str:
        return ("[%s]:%d" if ":" in addr[0] else "%s:%d") % addr

    def send(self, message) -> None:
        self.sock.send(message.to_bytes())

    def receive(self, timeout: float):
        """The next SIP message, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if self.transport == "tcp" and b"\r\n\r\n" in self.buffer:
                head, _, rest = self.buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() in (b"content-length", b"l"):
                        length = int(value.strip() or 0)
                if len(rest) >= length:
                    self.buffer = rest[length:]
                    return parse(head + b"\r\n\r\n" + rest[:length])
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.sock, self.rtp], [], [], left)
            if self.rtp in ready:
                self._drain_rtp()
            if self.sock in ready:
                data = self.sock.recv(65535)
                if self.transport == "tcp":
                    if not data:
                        raise CallFailed("the server closed the connection")
                    self.buffer += data
                    continue
                try:
                    return parse(data)
                except Exception:
                    continue

    def _drain_rtp(self) -> None:
        while True:
            try:
                self.rtp.recv(2048, socket.MSG_DONTWAIT)
                self.rtp_heard += 1
            except (BlockingIOError, InterruptedError):
                return

    # -- requests

    def request(self, method: str, uri: str, cseq: int, to_tag: Optional[str] = None, branch: Optional[str] = None,
                routes: List[str] = (), extra: List[Tuple[str, str]] = (), body: bytes = b"") -> Request:
        to = "<%s>" % self.target + (";tag=" + to_tag if to_tag else "")
        headers = [
            ("Via", "SIP/2.0/%s %s;branch=%s;rport" % (self.transport.upper(), self._host(self.local),
                                                        branch or "z9hG4bK" + uuid.uuid4().hex)),
            ("Max-Forwards", "70"),
            ("From", '"%s" <sip:%s@%s>;tag=%s' % (self.display, self.user, self.domain, self.tag)),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", "%d %s" % (cseq, method)),
            ("Contact", "<sip:%s@%s;transport=%s>" % (self.user, self._host(self.local), self.transport)),
            ("User-Agent", "Reticulum interphone"),
        ]
        headers += [("Route", r) for r in routes]
        headers += list(extra)
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return Request(method, uri, headers, body)

    def offer(self) -> bytes:
        host = self.local[0]
        ip = "IP6" if ":" in host else "IP4"
        session = random.randint(1, 2 ** 31)
        return ("v=0\r\no=door %d %d IN %s %s\r\ns=Doorbell\r\nc=IN %s %s\r\nt=0 0\r\n"
                "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendonly\r\n"
                % (session, session, ip, host, ip, host, self.rtp.getsockname()[1])).encode()

    def credentials(self, challenge: Response, method: str, uri: str) -> Tuple[str, str]:
        """Proxy-/Authorization for the first challenge whose algorithm we know."""
        name, header = (("WWW-Authenticate", "Authorization") if challenge.status == 401
                        else ("Proxy-Authenticate", "Proxy-Authorization"))
        for value in challenge.get_all(name):
            scheme, params = parse_auth(value)
            try:
                algorithm = digest.normalize_algorithm(params.get("algorithm"))
            except ValueError:
                continue
            if scheme != "Digest" or "nonce" not in params:
                continue
            qops = [q.strip() for q in (params.get("qop") or "").split(",") if q.strip()]
            qop = "auth" if "auth" in qops else None
            cnonce = uuid.uuid4().hex[:16]
            ha1 = digest.ha1(self.user, params.get("realm", ""), self.password, algorithm)
            answer = digest.response(ha1, method, uri, params["nonce"], "00000001", cnonce, qop, algorithm)
            out = {"username": self.user, "realm": params.get("realm", ""), "nonce": params["nonce"], "uri": uri,
                   "response": answer, "algorithm": params.get("algorithm") or "MD5"}
            if qop:
                out.update(qop="auth", nc="00000001", cnonce=cnonce)
            if "opaque" in params:
                out["opaque"] = params["opaque"]
            return header, format_auth("Digest", out, quoted={"username", "realm", "nonce", "uri", "response",
                                                               "cnonce", "opaque"})
        raise CallFailed("the server asked for a digest algorithm this script does not know")

    # -- the call

    def _transaction(self, request: Request, ring_seconds: float, on_provisional=None):
        """Sends ``request`` (retransmitted on UDP) and returns its final response, or None
        when nothing final came within ``ring_seconds``."""
        self.send(request)
        interval = T1
        next_send = time.monotonic() + interval
        deadline = time.monotonic() + ring_seconds
        provisional = False
        branch = request.via.params.get("branch")
        while time.monotonic() < deadline:
            wait = deadline - time.monotonic()
            if self.transport == "udp" and not provisional:
                wait = min(wait, max(0.0, next_send - time.monotonic()))
            m = self.receive(wait)
            if m is None:
                if self.transport == "udp" and not provisional and time.monotonic() >= next_send:
                    self.send(request)
                    interval = min(interval * 2, 4.0)
                    next_send = time.monotonic() + interval
                continue
            if isinstance(m, Request):
                self._answer_stray(m)
                continue
            if m.via is None or m.via.params.get("branch") != branch or m.cseq.method != request.method:
                continue
            if m.status < 200:
                provisional = True
                if on_provisional:
                    on_provisional(m)
                continue
            return m
        return None

    def _answer_stray(self, m: Request) -> None:
        if m.method != "ACK":
            reply = Response(200 if m.method in ("BYE", "OPTIONS") else 481, None, [
                (k, v) for k, _, v in m.headers._h if k in ("via", "from", "to", "call-id", "cseq")])
            self.send(reply)

    def ack_failure(self, invite: Request, response: Response) -> None:
        """ACK for a non-2xx final answer: same branch, hop by hop (RFC 3261 §17.1.1.3)."""
        ack = self.request("ACK", str(invite.uri), invite.cseq.number, to_tag=response.to.tag,
                           branch=invite.via.params.get("branch"),
                           extra=[(k, v) for k, _, v in invite.headers._h if k == "route"])
        self.send(ack)

    def ring(self, ring_seconds: float, tone_seconds: float) -> str:
        """Rings the target; returns what happened, in words. Raises CallFailed."""
        body = self.offer()
        self.cseq += 1
        invite = self.request("INVITE", self.target, self.cseq, body=body)
        say("calling %s" % self.target)
        answer = self._transaction(invite, 10.0, lambda r: say("%d %s" % (r.status, r.reason)))
        if answer is not None and answer.status in (401, 407):
            self.ack_failure(invite, answer)
            header, value = self.credentials(answer, "INVITE", self.target)
            self.cseq += 1
            invite = self.request("INVITE", self.target, self.cseq, extra=[(header, value)], body=body)
            answer = self._transaction(invite, ring_seconds, lambda r: say("%d %s" % (r.status, r.reason)))
        if answer is None:
            self._cancel(invite)
            return "no answer"
        if answer.status >= 300:
            self.ack_failure(invite, answer)
            if answer.status in (401, 403, 407):
                raise CallFailed("the server refused the door account: %d %s" % (answer.status, answer.reason))
            return "not answered: %d %s" % (answer.status, answer.reason)
        return self._talk(invite, answer, tone_seconds)

    def _cancel(self, invite: Request) -> None:
        cancel = Request("CANCEL", invite.uri, [(k, v) for k, _, v in invite.headers._h
                                                if k in ("via", "from", "to", "call-id", "route", "max-forwards")])
        cancel.add("CSeq", "%d CANCEL" % invite.cseq.number)
        self._transaction(cancel, 5.0)
        final = self.receive(5.0)  # the INVITE's 487
        if isinstance(final, Response) and final.cseq.method == "INVITE" and final.status >= 300:
            self.ack_failure(invite, final)

    def _talk(self, invite: Request, ok: Response, tone_seconds: float) -> str:
        contact = ok.contacts[0].uri if ok.contacts else invite.uri
        routes = [str(a) for a in reversed(ok.record_routes)]
        remote_tag = ok.to.tag
        ack = self.request("ACK", str(contact), invite.cseq.number, to_tag=remote_tag, routes=routes)
        self.send(ack)
        say("answered: playing the chime")
        media = sdp_audio(ok.body)
        hung_up = False
        if media is None:
            say("the answer has no audio address: no chime")
        else:
            hung_up = self._play(media, chime(tone_seconds), ack)
        if hung_up:
            return "answered; they hung up"
        self.cseq += 1
        bye = self.request("BYE", str(contact), self.cseq, to_tag=remote_tag, routes=routes)
        final = self._transaction(bye, 10.0)
        say("sent %d RTP packets, heard %d back" % (self.rtp_sent, self.rtp_heard))
        return "answered; hung up (%s)" % ("%d %s" % (final.status, final.reason) if final else "no answer to BYE")

    def _play(self, media: Tuple[str, int], audio: bytes, ack: Request) -> bool:
        """Sends ``audio`` as RTP at its own pace; True when the other side hung up first."""
        ssrc = random.getrandbits(32)
        seq = random.getrandbits(16)
        ts = random.getrandbits(32)
        start = time.monotonic()
        for i in range(0, len(audio), PACKET_SAMPLES):
            header = struct.pack("!BBHII", 0x80, (0x80 if i == 0 else 0) | 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
            self.rtp.sendto(header + audio[i:i + PACKET_SAMPLES], media)
            self.rtp_sent += 1
            seq += 1
            ts += PACKET_SAMPLES
            due = start + (i // PACKET_SAMPLES + 1) * 0.02
            while True:
                left = due - time.monotonic()
                if left <= 0:
                    break
                m = self.receive(left)
                if isinstance(m, Request):
                    self._answer_stray(m)
                    if m.method == "BYE":
                        return True
                elif isinstance(m, Response) and m.status == 200 and m.cseq.method == "INVITE":
                    self.send(ack)  # the 200 was retransmitted: our ACK was lost
        time.sleep(0.2)
        self._drain_rtp()
        return False

    def close(self) -> None:
        self.sock.close()
        self.rtp.close()


def sdp_audio(body: bytes) -> Optional[Tuple[str, int]]:
    """(address, port) of the first audio stream of an SDP body."""
    host = None
    port = None
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("c=") and (host is None or port is not None):
            parts = line[2:].split()
            if len(parts) >= 3:
                host = parts[2].split("/")[0]
        elif line.startswith("m=audio") and port is None:
            port = int(line.split()[1])
    if host is None or not port:
        return None
    return host, port


# ---------------------------------------------------------------------------------------------
# the button


def presses(pin: Optional[int], keyboard: bool):
    """Yields once per press: a gpiozero button on ``pin`` when gpiozero is installed, else Enter."""
    if not keyboard and pin is not None:
        try:
            from gpiozero import Button  # type: ignore
        except ImportError:
            say("gpiozero is not installed: press Enter to ring")
        else:
            button = Button(pin, bounce_time=0.05)
            say("waiting for the button on GPIO %d" % pin)
            while True:
                button.wait_for_press()
                yield
                button.wait_for_release()
    else:
        say("press Enter to ring (end of input quits)")
    for _ in sys.stdin:
        yield


def open_link(link: str, browser: Optional[str], page: Optional[str], target: str) -> None:
    if page:
        sep = "&" if "?" in page else "?"
        link = page + sep + "kiosk=" + quote(target) + "&call=" + quote(link, safe="")
    say("opening " + link)
    if browser:
        subprocess.Popen([browser, link], stdin=subprocess.DEVNULL)
    elif not webbrowser.open(link):
        say("no browser could open it")


def host_port(text: str, default_port: int = 5060) -> Tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, default_port


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="A door button that rings the house through Reticulum.")
    p.add_argument("--target", default="home@reticulum.local", help="who the button calls (default %(default)s)")
    p.add_argument("--pin", type=int, default=5, help="GPIO pin of the button, BCM numbering (default %(default)s; GrovePi/Grove HAT port D5)")
    p.add_argument("--keyboard", action="store_true", help="use the Enter key even when gpiozero is installed")
    p.add_argument("--browser", help="browser command to open the link with (default: the system's)")
    p.add_argument("--page", help="webphone address (e.g. http://localhost:8080/): open it in kiosk mode instead of the link")
    p.add_argument("--headless", action="store_true", help="place the call from here and play a chime over RTP")
    p.add_argument("--server", default="127.0.0.1:5060", help="--headless: the Reticulum server, host:port (default %(default)s)")
    p.add_argument("--transport", choices=("udp", "tcp"), default="udp", help="--headless: default %(default)s")
    p.add_argument("--user", default="door", help="--headless: the door's account (default %(default)s)")
    p.add_argument("--password", default=os.environ.get("INTERPHONE_PASSWORD", ""),
                   help="--headless: its password (or $INTERPHONE_PASSWORD)")
    p.add_argument("--domain", help="--headless: SIP domain (default: the target's)")
    p.add_argument("--ring-seconds", type=float, default=30.0, help="--headless: give up after (default %(default)s)")
    p.add_argument("--tone-seconds", type=float, default=4.4, help="--headless: chime length (default %(default)s)")
    args = p.parse_args(argv)

    target = args.target[4:] if args.target.startswith("sip:") else args.target
    link = "web+reticulum://call?" + target
    domain = args.domain or (target.partition("@")[2] or "reticulum.local")
    if args.headless and not args.password:
        p.error("--headless needs the door account's --password (or $INTERPHONE_PASSWORD)")
    failures = 0
    for _ in presses(None if args.keyboard else args.pin, args.keyboard):
        say("pressed")
        if not args.headless:
            open_link(link, args.browser, args.page, target)
            continue
        call = None
        try:
            call = DoorCall(host_port(args.server), args.transport, args.user, args.password, domain, target)
            say(call.ring(args.ring_seconds, args.tone_seconds))
        except (CallFailed, OSError) as e:
            failures += 1
            say("the call failed: %s" % e)
        finally:
            if call is not None:
                call.close()
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
