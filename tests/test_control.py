"""``python -m reticulum.control`` against a stand-in of the admin API (a real HTTP server on
loopback that checks the bearer token the way the admin API's contract says)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reticulum import control

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "s3cret-token"

STATUS = {
    "version": "0.1.0",
    "uptime": 93784.5,
    "listening": [{"transport": "udp", "host": "0.0.0.0", "port": 5060},
                  {"transport": "tls", "host": "::", "port": 5061}],
    "counters": {"requests": 120, "responses": 118},
}
REGISTRATIONS = [
    {"aor": "sip:alice@reticulum.local", "contact": "<sip:alice@192.0.2.7:5060>", "expires": 3541,
     "flow": {"transport": "udp", "local": ["192.0.2.1", 5060], "remote": ["192.0.2.7", 5060]},
     "user_agent": "baresip 3.10"},
    {"aor": "sip:bob@reticulum.local", "contact": "<sip:bob@df7jal23ls0d.invalid;transport=ws>",
     "expires": 59, "flow": {"transport": "wss", "local": "192.0.2.1:8443", "remote": "192.0.2.9:51000"},
     "user_agent": None},
    {"aor": "sip:bob@reticulum.local", "contact": "<sip:bob@192.0.2.10:5062>", "expires": 600,
     "flow": None, "user_agent": "SIPp"},
]
CALLS = [{"call_id": "c1@x", "from": "sip:alice@reticulum.local", "to": "sip:bob@reticulum.local",
          "state": "confirmed", "created": 1767268800.0, "duration": 62.4}]


class StandIn(BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        StandIn.seen.append(self.path)
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            return self._send(401, {"error": "unauthorized"})
        if url.path == "/api/status":
            return self._send(200, STATUS)
        if url.path == "/api/registrations":
            user = urllib.parse.parse_qs(url.query).get("user", [None])[0]
            items = [r for r in REGISTRATIONS if user is None or r["aor"].startswith("sip:%s@" % user)]
            return self._send(200, {"registrations": items})
        if url.path == "/api/calls":
            return self._send(200, {"calls": CALLS})
        return self._send(404, {"error": "not found"})

    def _send(self, code, data):
        body = json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def admin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    StandIn.seen = []
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def write_config(folder, port, token=TOKEN, host="127.0.0.1"):
    state = folder / "state"
    state.mkdir(parents=True, exist_ok=True)
    if token is not None:
        (state / "admin-token").write_text(token + "\n")
    listen = "[listen]\nadmin = [\"%s:%d\"]\n" % (host, port) if port else ""
    path = folder / "reticulum.toml"
    path.write_text('state_dir = "state"\n' + listen)
    return str(path)


def ask(capsys, *argv):
    code = control.run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_table(admin, tmp_path, capsys):
    code, out, err = ask(capsys, "status", "--config", write_config(tmp_path, admin))
    assert code == 0, err
    assert out.splitlines()[0] == "Reticulum 0.1.0, up 1 d 02 h"
    assert "udp        0.0.0.0:5060" in out and "tls        [::]:5061" in out
    assert "requests   120" in out


def test_registrations_table_and_one_user(admin, tmp_path, capsys):
    config = write_config(tmp_path, admin)
    code, out, err = ask(capsys, "--config", config, "registrations")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["AOR", "CONTACT", "EXPIRES", "IN", "FLOW", "USER", "AGENT"]
    assert "udp 192.0.2.7:5060 -> 192.0.2.1:5060" in lines[1] and "59 min 01 s" in lines[1]
    assert lines[1].endswith("baresip 3.10")
    assert "wss 192.0.2.9:51000 -> 192.0.2.1:8443" in out
    assert lines[-1] == "3 bindings of 2 addresses of record"

    code, out, _ = ask(capsys, "registrations", "bob", "--config", config)
    assert code == 0 and "sip:alice" not in out and out.splitlines()[-1] == "2 bindings of 1 address of record"
    assert StandIn.seen[-1] == "/api/registrations?user=bob"
    code, out, _ = ask(capsys, "registrations", "carol", "--config", config)
    assert code == 0 and out.strip() == "no registrations for carol"


def test_calls_table(admin, tmp_path, capsys):
    code, out, err = ask(capsys, "calls", "--config", write_config(tmp_path, admin))
    assert code == 0, err
    assert out.splitlines()[0].split() == ["FROM", "TO", "STATE", "STARTED", "DURATION", "CALL-ID"]
    row = out.splitlines()[1]
    assert row.startswith("sip:alice@reticulum.local  sip:bob@reticulum.local  confirmed")
    assert "1 min 02 s" in row and row.endswith("c1@x")


@pytest.mark.parametrize("command, key", [("status", "counters"), ("registrations", "registrations"),
                                          ("calls", "calls")])
def test_json(admin, tmp_path, capsys, command, key):
    code, out, _ = ask(capsys, command, "--json", "--config", write_config(tmp_path, admin))
    assert code == 0 and key in json.loads(out)


def test_wildcard_admin_address_is_asked_on_loopback(admin, tmp_path, capsys):
    code, _, err = ask(capsys, "status", "--config", write_config(tmp_path, admin, host="0.0.0.0"))
    assert code == 0, err


def test_refused_token_is_one_line(admin, tmp_path, capsys):
    config = write_config(tmp_path, admin, token="wrong")
    code, out, err = ask(capsys, "status", "--config", config)
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert "refused the token from %s" % (tmp_path / "state" / "admin-token") in err
    assert "401" in err


def test_missing_token_is_one_line(admin, tmp_path, capsys):
    code, _, err = ask(capsys, "calls", "--config", write_config(tmp_path, admin, token=None))
    assert code == 1 and err.count("\n") == 1
    assert "wants a token and none was found" in err


def test_no_admin_address_is_one_line(tmp_path, capsys):
    code, _, err = ask(capsys, "status", "--config", write_config(tmp_path, None))
    assert code == 1 and err.count("\n") == 1
    assert "has no admin address" in err and "[listen]" in err


def test_nothing_listening_is_one_line(tmp_path, capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    code, _, err = ask(capsys, "status", "--config", write_config(tmp_path, port))
    assert code == 1 and err.count("\n") == 1
    assert "http://127.0.0.1:%d is not reachable (connection refused)" % port in err


def test_admin_token_from_the_config_wins(tmp_path):
    class Admin:
        token = "from-config"

    class Config:
        admin = Admin()
        path = "x.toml"
        state_dir = str(tmp_path)

    (tmp_path / "admin-token").write_text("from-file")
    assert control.admin_token(Config())[0] == "from-config"
    Config.admin = None
    assert control.admin_token(Config())[0] == "from-file"


def test_relative_config_from_the_current_folder(admin, tmp_path):
    """As a command: --config is relative to the folder it runs in."""
    (tmp_path / "site").mkdir()
    write_config(tmp_path / "site", admin)
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "reticulum.control", "status", "--config",
                           os.path.join("site", "reticulum.toml")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Reticulum 0.1.0, up")
