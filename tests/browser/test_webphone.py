"""Two JsSIP phones in headless Chromium call each other through the real server over
WebSocket (RFC 7118): registration, call confirmed on both sides, RTP both ways,
hang-up on both sides.

Chromium runs in a network namespace of its own and reaches the page/WebSocket port
through a Unix-socket relay: see tests/browser/driver.py.
"""
from __future__ import annotations

import json

from tests.browser.driver import BUNDLE, UnixRelay, requirements, run_script
from tests.integration.harness import Server, free_port


def test_two_browsers_call_each_other_over_websocket(tmp_path):
    requirements()
    ws_port = free_port()
    # the default challenges (MD5, SHA-256, MD5): JsSIP answers the last one and knows MD5
    server = Server(tmp_path / "server", listen={"ws": ["127.0.0.1:%d" % ws_port]})
    server.start()
    relay = UnixRelay(tmp_path / "relay.sock", ws_port)
    try:
        proc, result, detail = run_script(
            server, 115, "call.js", "--port", ws_port, "--unix", relay.path, "--bundle", BUNDLE,
            "--profile", tmp_path / "profile", "--timeout", 100)
        print(json.dumps(result))
        assert proc.returncode == 0 and result.get("ok"), detail
        assert result["alice_inbound_bytes"] > 0 and result["bob_inbound_bytes"] > 0
        assert "confirmed" in result["alice_events"] and "confirmed" in result["bob_events"]
        assert any(e.startswith("ended") for e in result["bob_events"])
        assert relay.connections >= 2  # the page loads and both WebSockets went through the relay
        log = server.read_log()
        assert "<- REGISTER" in log and "from ws" in log
        assert "<- BYE" in log
    finally:
        relay.close()
        server.stop()
