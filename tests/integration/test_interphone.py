"""examples/interphone/button.py --headless: Enter is the button; the door account calls
``home`` through the real server (digest challenge answered with Reticulum's own digest code),
a SIPp UAS registered as ``home`` answers, the chime goes out as RTP (SIPp echoes it back),
and the door hangs up with BYE."""
from __future__ import annotations

import re
import subprocess
import time
import sys

from tests.integration.harness import REPO_ROOT, Server, free_port, start_sipp
from tests.integration.sipclient import register

BUTTON = REPO_ROOT / "examples" / "interphone" / "button.py"
USERS = {"home": "home-secret", "door": "door-secret"}


def test_the_button_rings_home_and_plays_the_chime(tmp_path):
    server = Server(tmp_path / "server", users=USERS)
    server.start()
    uas_port, media_port = free_port(), free_port()
    try:
        reg = register(server, tmp_path, "home", uas_port)
        assert reg.ok, reg.describe()
        uas = start_sipp("uas", None, "-rtp_echo", "-mp", str(media_port), local_port=uas_port, cwd=tmp_path,
                         timeout=40)
        button = subprocess.run(
            [sys.executable, str(BUTTON), "--headless", "--keyboard", "--server", server.address,
             "--user", "door", "--password", "door-secret", "--target", "home@reticulum.local",
             "--tone-seconds", "1.5", "--ring-seconds", "20"],
            input=b"\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, cwd=str(tmp_path),
        )
        out = button.stdout.decode(errors="replace")
        print(out)
        result = uas.wait(30)
        detail = "button:\n%s\n%s\nserver log:\n%s" % (out, result.describe(), server.read_log()[-6000:])
        assert button.returncode == 0, detail
        assert "answered: playing the chime" in out and "answered; hung up (200 OK)" in out, detail
        counts = re.search(r"sent (\d+) RTP packets, heard (\d+) back", out)
        assert counts, detail
        sent, heard = int(counts.group(1)), int(counts.group(2))
        assert sent >= 70, detail      # 1.5 s at 20 ms a packet
        assert heard > 0, detail       # the chime reached home's media port (SIPp echoed it)
        assert result.ok, detail       # INVITE answered, ACK and BYE received
        log = server.read_log()
        assert "-> 407" in log and "<- INVITE" in log and "<- BYE" in log
    finally:
        server.stop()


def test_a_wrong_door_password_is_reported_and_nothing_rings(tmp_path):
    server = Server(tmp_path / "server", users=USERS)
    server.start()
    try:
        button = subprocess.run(
            [sys.executable, str(BUTTON), "--headless", "--keyboard", "--server", server.address,
             "--user", "door", "--password", "wrong", "--target", "home@reticulum.local"],
            input=b"\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, cwd=str(tmp_path),
        )
        out = button.stdout.decode(errors="replace")
        assert button.returncode == 1, out
        assert "the server refused the door account" in out, out
    finally:
        server.stop()


def test_without_headless_a_press_opens_the_link_in_the_browser(tmp_path):
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text('#!/bin/sh\nprintf "%%s\\n" "$1" >> %s\n' % opened)
    browser.chmod(0o755)
    for extra, expected in (
        ([], "web+reticulum://call?home@reticulum.local"),
        (["--page", "http://127.0.0.1:8080/"],
         "http://127.0.0.1:8080/?kiosk=home%40reticulum.local&call=web%2Breticulum%3A%2F%2Fcall%3Fhome%40reticulum.local"),
    ):
        opened.write_text("")
        done = subprocess.run([sys.executable, str(BUTTON), "--keyboard", "--browser", str(browser)] + extra,
                              input=b"\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        assert done.returncode == 0, done.stdout
        for _ in range(200):  # the browser is started in the background
            if opened.read_text():
                break
            time.sleep(0.05)
        assert opened.read_text().strip() == expected
