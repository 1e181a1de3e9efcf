"""Ask a running server: ``python -m reticulum.control`` (``./run.sh status`` ...).

    status [--json]                 version, uptime, listening points, counters
    registrations [USER] [--json]   the bindings (what ``kamcmd ul.dump`` shows), or one user's
    calls [--json]                  the dialogs in progress

Every command takes ``--config PATH`` (default ``reticulum.toml``, relative to the current
folder). The server is reached at the first ``[listen] admin`` address of that file (a
wildcard address is asked on loopback), with the token of ``[admin] token`` or else of the
file ``<state_dir>/admin-token``, sent as ``Authorization: Bearer <token>``. Problems (no admin
address, nothing listening, a refused token) are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Optional, Sequence, Tuple

from reticulum.addresses import hostport
from reticulum.config import ConfigError, load_config

DEFAULT_CONFIG = "reticulum.toml"
TOKEN_FILE = "admin-token"
#: seconds to wait for the admin API; it answers from memory
TIMEOUT = 5.0

__all__ = ["ControlError", "AdminClient", "run", "main"]


class ControlError(Exception):
    """Why the server could not be asked; printed as one line."""


# ---------------------------------------------------------------------------
# where the server is, and the token


def _load(config_path: str) -> Any:
    try:
        return load_config(config_path)
    except ConfigError as e:
        raise ControlError(str(e)) from None


def admin_url(config: Any) -> str:
    """``http://host:port`` of the first ``[listen] admin`` address."""
    addresses = list(getattr(config.listen, "admin", None) or [])
    if not addresses:
        raise ControlError(
            "%s has no admin address: add admin = [\"127.0.0.1:8000\"] to its [listen] table "
            "and restart the server" % (config.path or "the configuration",)
        )
    host, port = addresses[0]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return "http://%s" % hostport(host, port)


def admin_token(config: Any) -> Tuple[Optional[str], str]:
    """(token or None, where it was looked for): ``[admin] token``, else the token file."""
    token = getattr(getattr(config, "admin", None), "token", None)
    if token:
        return str(token), "[admin] token in %s" % (config.path,)
    path = os.path.join(config.state_dir, TOKEN_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError:
        token = ""
    return (token or None), path


# ---------------------------------------------------------------------------
# the HTTP client


class AdminClient:
    """GETs JSON from the admin API with the bearer token."""

    def __init__(self, url: str, token: Optional[str], token_source: str, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.token_source = token_source
        self.timeout = timeout

    def get(self, path: str) -> Dict[str, Any]:
        request = urllib.request.Request(self.url + path, headers={"Accept": "application/json"})
        if self.token:
            request.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                if not self.token:
                    raise ControlError("the admin API at %s wants a token and none was found "
                                       "(looked in %s)" % (self.url, self.token_source)) from None
                raise ControlError("the admin API at %s refused the token from %s (%d %s)"
                                   % (self.url, self.token_source, e.code, e.reason)) from None
            raise ControlError("the admin API at %s answered %d %s for %s"
                               % (self.url, e.code, e.reason, path)) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, socket.timeout) or isinstance(e, socket.timeout):
                why = "no answer within %g s" % self.timeout
            elif isinstance(reason, OSError) and reason.strerror:
                why = reason.strerror.lower()
            else:
                why = str(reason)
            raise ControlError("the server's admin API at %s is not reachable (%s): is the server "
                               "running with this configuration?" % (self.url, why)) from None
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ControlError("the admin API at %s answered %s with something that is not JSON"
                               % (self.url, path)) from None
        if not isinstance(data, dict):
            raise ControlError("the admin API at %s answered %s with unexpected JSON" % (self.url, path))
        return data


# ---------------------------------------------------------------------------
# tables


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers)] + [list(r) for r in rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def duration(seconds: Any) -> str:
    """``59 s``, ``3 min 07 s``, ``2 h 05 min``, ``3 d 04 h``."""
    try:
        s = int(float(seconds))
    except (TypeError, ValueError):
        return "?"
    if s < 60:
        return "%d s" % s
    if s < 3600:
        return "%d min %02d s" % (s // 60, s % 60)
    if s < 86400:
        return "%d h %02d min" % (s // 3600, (s % 3600) // 60)
    return "%d d %02d h" % (s // 86400, (s % 86400) // 3600)


def _address(value: Any) -> str:
    """A flow end as ``host:port`` whether it came as a string or a [host, port] pair."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return hostport(str(value[0]), int(value[1]))
    return "-" if value is None else str(value)


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def format_status(data: Dict[str, Any]) -> str:
    lines = ["Reticulum %s, up %s" % (_text(data.get("version")), duration(data.get("uptime")))]
    listening = data.get("listening") or []
    lines.append("")
    lines.append(table(["LISTENING", "ADDRESS"],
                       [[_text(p.get("transport")), _address([p.get("host"), p.get("port")])
                         if p.get("host") is not None else "-"] for p in listening])
                 if listening else "not listening anywhere")
    counters = data.get("counters") or {}
    if counters:
        lines.append("")
        lines.append(table(["COUNTER", "VALUE"], [[name, str(counters[name])] for name in sorted(counters)]))
    return "\n".join(lines)


def format_registrations(data: Dict[str, Any], user: Optional[str]) -> str:
    items = data.get("registrations") or []
    if not items:
        return "no registrations" + (" for %s" % user if user else "")
    rows = []
    for r in sorted(items, key=lambda r: (str(r.get("aor")), str(r.get("contact")))):
        flow = r.get("flow")
        if isinstance(flow, dict):
            flow_text = "%s %s -> %s" % (_text(flow.get("transport")), _address(flow.get("remote")),
                                         _address(flow.get("local")))
        else:
            flow_text = "-"
        rows.append([_text(r.get("aor")), _text(r.get("contact")), duration(r.get("expires")),
                     flow_text, _text(r.get("user_agent"))])
    aors = len({row[0] for row in rows})
    return "%s\n\n%d binding%s of %d address%s of record" % (
        table(["AOR", "CONTACT", "EXPIRES IN", "FLOW", "USER AGENT"], rows),
        len(rows), "" if len(rows) == 1 else "s", aors, "" if aors == 1 else "es")


def format_calls(data: Dict[str, Any]) -> str:
    items = data.get("calls") or []
    if not items:
        return "no calls in progress"
    rows = []
    for c in sorted(items, key=lambda c: float(c.get("created") or 0)):
        try:
            started = datetime.datetime.fromtimestamp(float(c["created"])).strftime("%Y-%m-%d %H:%M:%S")
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            started = "-"
        rows.append([_text(c.get("from")), _text(c.get("to")), _text(c.get("state")), started,
                     duration(c.get("duration")), _text(c.get("call_id"))])
    return "%s\n\n%d call%s" % (table(["FROM", "TO", "STATE", "STARTED", "DURATION", "CALL-ID"], rows),
                                len(rows), "" if len(rows) == 1 else "s")


# ---------------------------------------------------------------------------
# the command line


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="configuration file (default: %s)" % DEFAULT_CONFIG)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the admin API's JSON as it came")
    parser = argparse.ArgumentParser(prog="reticulum.control", parents=[common],
                                     description="Ask a running Reticulum server.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    commands.add_parser("status", parents=[common], help="version, uptime, listening points, counters")
    sub = commands.add_parser("registrations", parents=[common], help="current registrations")
    sub.add_argument("user", metavar="USER", nargs="?", help="only this user's")
    commands.add_parser("calls", parents=[common], help="calls in progress")
    return parser


def run(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _load(getattr(args, "config", DEFAULT_CONFIG))
        token, source = admin_token(config)
        client = AdminClient(admin_url(config), token, source)
        if args.command == "status":
            data = client.get("/api/status")
            text = format_status(data)
        elif args.command == "registrations":
            path = "/api/registrations"
            if args.user:
                path += "?" + urllib.parse.urlencode({"user": args.user})
            data = client.get(path)
            text = format_registrations(data, args.user)
        else:
            data = client.get("/api/calls")
            text = format_calls(data)
    except ControlError as e:
        print("reticulum: %s" % (e,), file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(text)
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
