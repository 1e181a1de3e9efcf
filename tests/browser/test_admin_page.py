"""The admin page in headless Chromium (Playwright through playwright-core): it opens with
the token, shows a registration SIPp makes, draws the ladder of a SIPp call with one arrow
per message, and reconnects by itself when the server restarts. A screenshot is left in tests/browser/artifacts/ (git-ignored).

Chromium runs inside ``unshare --net`` and reaches the admin port through a Unix-socket
relay (tests/browser/driver.py).
"""
from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from queue import Empty, Queue

from tests.browser.driver import ARTIFACTS, ROOT, UnixRelay, in_namespace, requirements
from tests.integration.harness import Server, free_port
from tests.integration.sipclient import DOMAIN, register
from tests.integration.test_admin import TOKEN, Admin, sipp_call, wait_http


class Browser:
    """admin.js in its own network namespace, spoken to in JSON lines."""

    def __init__(self, port: int, relay: UnixRelay, profile: Path) -> None:
        self.proc = subprocess.Popen(
            in_namespace("admin.js", "--port", port, "--unix", relay.path, "--token", TOKEN,
                         "--profile", profile), cwd=str(ROOT),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: "Queue[dict]" = Queue()
        self.stderr = b""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_errors, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass

    def _read_errors(self) -> None:
        self.stderr = self.proc.stderr.read()

    def next(self, timeout: float = 60.0) -> dict:
        try:
            step = self.lines.get(timeout=timeout)
        except Empty:
            raise AssertionError("the browser said nothing for %d s; stderr: %s"
                                 % (timeout, self.stderr[-3000:].decode(errors="replace")))
        assert step.get("step") != "error", step
        return step

    def ask(self, **command) -> dict:
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()
        return self.next()

    def close(self) -> None:
        try:
            self.proc.stdin.write(b'{"quit": true}\n')
            self.proc.stdin.flush()
            self.proc.wait(20)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def test_admin_page_shows_a_registration_and_draws_a_call_ladder(tmp_path):
    requirements(bundle=False)
    admin_port = free_port()
    server = Server(tmp_path / "server", listen={"admin": ["127.0.0.1:%d" % admin_port]},
                    admin={"token": TOKEN})
    server.start()
    server.admin_port = admin_port
    wait_http(admin_port)
    relay = UnixRelay(tmp_path / "relay.sock", admin_port)
    browser = None
    try:
        browser = Browser(admin_port, relay, tmp_path / "profile")
        ready = browser.next()
        assert ready["step"] == "ready" and ready["title"] == "Reticulum admin", ready
        # a registration made now appears in the page's table
        assert register(server, tmp_path, "alice", free_port()).ok
        step = browser.ask(wait_registration="sip:alice@" + DOMAIN)
        assert step["rows"] == 1
        # a call: the page draws one arrow per message the server saw for its Call-ID
        watcher = Admin(server)
        watcher.subscribe(types=["message", "dialog"])
        uac, uas, _ = sipp_call(server, tmp_path, pause_ms=500)
        assert uac.wait().ok and uas.wait().ok
        watcher.until(lambda e: e["type"] == "dialog" and e["action"] == "terminated")
        time.sleep(0.5)  # the BYE's 200 on its way out
        while True:
            try:
                watcher.seen.append(watcher.recv(timeout=1))
            except AssertionError:
                break
        messages = [e for e in watcher.seen if e["type"] == "message" and e["method"] == "INVITE"
                    and e["direction"] == "in"]
        call_id = messages[0]["call_id"]
        count = len([e for e in watcher.seen if e["type"] == "message"
                     and e["call_id"] == call_id])
        # caller leg: INVITE 407 ACK (the challenge is stateless: no 100 before it) INVITE 100
        # 180 200 ACK BYE 200; callee leg: INVITE 180 200 ACK BYE 200
        assert count == 16, [(e.get("direction"), e.get("method"), e.get("status"))
                             for e in watcher.seen if e["type"] == "message"]
        watcher.close()
        step = browser.ask(ladder=call_id, arrows=count)
        assert step["arrows"] == count, step
        assert step["labels"][0] == "INVITE" and "407 Proxy Authentication Required (INVITE)" \
            in step["labels"] and step["labels"][-1] == "200 OK (BYE)", step["labels"]
        assert step["raw"].startswith("INVITE sip:bob@" + DOMAIN), step
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "admin-page.png"
        browser.ask(screenshot=str(shot))
        assert shot.stat().st_size > 10000
        # a restart: the page reconnects by itself and shows the restored bindings
        server.restart()
        wait_http(admin_port)
        step = browser.ask(wait_reconnect=True)
        assert step["rows"] == 2, step  # alice and bob, restored from SQLite
    finally:
        if browser is not None:
            browser.close()
        relay.close()
        server.stop()
