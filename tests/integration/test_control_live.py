"""``./run.sh status|registrations|calls`` against the real server's admin API, as an operator
types them: the token the server generated at first start, a relative ``--config``, a
registration made by SIPp and a SIPp call in progress."""
from __future__ import annotations

import json
import time

from tests.integration.harness import free_port
from tests.integration.sipclient import DOMAIN, register
from tests.integration.test_admin import sipp_call, wait_http
from tests.integration.test_commands import run_sh


def cli(*args, cwd):
    done = run_sh(*args, cwd=cwd)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert done.stderr == "", done.stderr
    return done.stdout


def test_the_cli_reads_the_real_admin_api(start_server, tmp_path):
    admin_port = free_port()
    # bundled shape: admin on loopback, no [admin] token (generated into a relative state_dir)
    server = start_server(state_dir="state", listen={"admin": ["127.0.0.1:%d" % admin_port]})
    wait_http(admin_port)
    folder = server.config_path.parent
    assert (folder / "state" / "admin-token").exists()
    # from the config's folder, and from its parent
    configs = [(folder, "reticulum.toml"), (folder.parent, "%s/reticulum.toml" % folder.name)]

    uac, uas, bob_port = sipp_call(server, tmp_path, pause_ms=20000)
    try:
        deadline = time.monotonic() + 20
        while True:
            calls = json.loads(cli("calls", "--json", "--config", configs[0][1], cwd=configs[0][0]))
            if calls["calls"] and calls["calls"][0]["state"] == "confirmed":
                break
            assert time.monotonic() < deadline, calls
            time.sleep(0.2)
        call = calls["calls"][0]
        assert call["from"] == "sip:alice@" + DOMAIN and call["to"] == "sip:bob@" + DOMAIN
        for cwd, config in configs:
            text = cli("calls", "--config", config, cwd=cwd)
            lines = text.splitlines()
            assert lines[0].split() == ["FROM", "TO", "STATE", "STARTED", "DURATION", "CALL-ID"]
            row = lines[1].split()
            assert row[:3] == ["sip:alice@" + DOMAIN, "sip:bob@" + DOMAIN, "confirmed"]
            assert row[-1] == call["call_id"]
            assert lines[-1] == "1 call"
    finally:
        assert uac.wait().ok and uas.wait().ok

    assert register(server, tmp_path, "alice", free_port()).ok
    bob_contact = "sip:bob@127.0.0.1:%d" % bob_port
    for cwd, config in configs:
        data = json.loads(cli("registrations", "--json", "--config", config, cwd=cwd))
        contacts = {(r["aor"], r["contact"].split(";")[0]) for r in data["registrations"]}
        assert ("sip:bob@" + DOMAIN, bob_contact) in contacts, data
        assert len(data["registrations"]) == 2
        text = cli("registrations", "--config", config, cwd=cwd)
        assert text.splitlines()[0].split()[:2] == ["AOR", "CONTACT"]
        assert bob_contact in text and "sip:alice@" + DOMAIN in text
        assert text.splitlines()[-1] == "2 bindings of 2 addresses of record"

        only = json.loads(cli("registrations", "bob", "--json", "--config", config, cwd=cwd))
        assert [r["aor"] for r in only["registrations"]] == ["sip:bob@" + DOMAIN]
        text = cli("registrations", "bob", "--config", config, cwd=cwd)
        assert bob_contact in text and "alice" not in text
        assert text.splitlines()[-1] == "1 binding of 1 address of record"

        assert json.loads(cli("calls", "--json", "--config", config, cwd=cwd)) == {"calls": []}
        assert cli("calls", "--config", config, cwd=cwd).strip() == "no calls in progress"

        status = json.loads(cli("status", "--json", "--config", config, cwd=cwd))
        points = {(p["transport"], p["host"], p["port"]) for p in status["listening"]}
        assert points >= {("udp", "127.0.0.1", server.port), ("tcp", "127.0.0.1", server.port),
                          ("admin", "127.0.0.1", admin_port)}
        assert status["counters"]["registrations"] == 2
        text = cli("status", "--config", config, cwd=cwd)
        assert text.startswith("Reticulum %s, up " % status["version"])
        for transport, port in (("udp", server.port), ("tcp", server.port), ("admin", admin_port)):
            assert any(line.split() == [transport, "127.0.0.1:%d" % port]
                       for line in text.splitlines()), text
        assert any(line.split() == ["registrations", "2"] for line in text.splitlines()), text
