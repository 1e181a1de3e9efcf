"""The webphone page the server serves at ``/``, used in headless Chromium the way a person
would (tests/browser/webphone_page.js): sign-in and its errors, a call between two pages with
audio both ways, hang-up, history, a text message, a ``?call=`` link, the kiosk, and the page
over HTTPS signing in over WSS.

Screenshots land in tests/browser/artifacts/ (git-ignored) for a person to look at.
Chromium runs in a network namespace of its own; see tests/browser/driver.py.
"""
from __future__ import annotations

import json

from tests.browser.driver import ARTIFACTS, ROOT, UnixRelay, requirements, run_script
from tests.integration.harness import Server, free_port

WEBPHONE_BUNDLE = ROOT / "reticulum" / "webphone" / "static" / "jssip.min.js"

USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret", "door": "door-secret"}


def test_the_webphone_page_calls_messages_links_and_kiosk(tmp_path):
    requirements()
    assert WEBPHONE_BUNDLE.exists(), "the webphone bundle is missing: sh reticulum/webphone/build.sh"
    ARTIFACTS.mkdir(exist_ok=True)
    ws_port, wss_port = free_port(), free_port()
    server = Server(tmp_path / "server", users=USERS,
                    listen={"ws": ["127.0.0.1:%d" % ws_port], "wss": ["127.0.0.1:%d" % wss_port]})
    server.start()
    relay = UnixRelay(tmp_path / "relay.sock", ws_port)
    wss_relay = UnixRelay(tmp_path / "relay-wss.sock", wss_port)
    try:
        proc, result, detail = run_script(
            server, 170, "webphone_page.js", "--port", ws_port, "--unix", relay.path,
            "--wss-port", wss_port, "--wss-unix", wss_relay.path, "--shots", ARTIFACTS,
            "--timeout", 150, stdout_tail=4000)
        print(json.dumps(result, indent=1))
        assert proc.returncode == 0 and result.get("ok"), detail
        assert result["page_errors"] == [], detail
        assert "Wrong user name or password" in result["wrong_password_notice"]
        assert "Server unreachable" in result["unreachable_notice"]
        assert result["incoming_name"] == "alice"
        assert result["bob_sound"] == "ring:running"  # the chime plays (WebAudio)
        assert result["alice_inbound_bytes"] > 0 and result["bob_inbound_bytes"] > 0
        assert result["muted"] == "true"
        assert result["alice_history"][0]["result"] == "answered"
        assert result["alice_history"][0]["peer"] == "sip:bob@reticulum.local"
        assert result["link_incoming_name"] == "alice"
        assert "call=" not in result["link_url_after"]  # a reload must not dial again
        assert result["kiosk_incoming_name"] == "door"
        assert result["link_forms"] == ["sip:home@reticulum.local"] * 5
        assert result["wss"] == {"secure": True, "ws": "wss://127.0.0.1:%d/" % wss_port}
        for name in ("signed-in", "incoming-call", "kiosk"):
            assert (ARTIFACTS / (name + ".png")).stat().st_size > 5000
        log = server.read_log()
        assert "<- MESSAGE" in log and "<- BYE" in log
    finally:
        relay.close()
        wss_relay.close()
        server.stop()
