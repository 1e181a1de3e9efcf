"""What the admin service knows: the core's state as JSON, and events fanned out to clients.

`Hub` observes :mod:`reticulum.events`. For each event it counts (counters and Prometheus
metrics), turns the event into a JSON-ready dict once, and offers it to every WebSocket
client whose filter matches. A client is anything with ``offer(event_dict)`` (see
``reticulum.admin.server``): each keeps a bounded queue of its own, so a slow client loses
events, never the server its time.

The views (`registrations`, `calls`, `snapshot`, ...) read the core's own tables when asked.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any, Dict, List, Optional

from reticulum.addresses import hostport
from reticulum.admin.metrics import Metrics
from reticulum.sip import ParseError, Request, parse
from reticulum.wordlog import aor_user

__all__ = ["Hub", "RAW_LIMIT", "RECENT_MESSAGES"]

#: raw messages longer than this are cut in events (the rest is not shown anyway)
RAW_LIMIT = 8192
#: message events kept for clients that connect later (the page draws their ladders)
RECENT_MESSAGES = 500


def _hostport(address) -> Optional[str]:
    if not address:
        return None
    return hostport(address[0], address[1])


def _flow(flow) -> Optional[Dict[str, Any]]:
    if flow is None:
        return None
    return {"transport": flow.transport, "local": _hostport(flow.local),
            "remote": _hostport(flow.remote)}


def _cseq_method(message) -> str:
    """The method a response answers; "?" when its CSeq cannot be read (the answer to a
    malformed request copies what it was given)."""
    try:
        cseq = message.cseq
    except ParseError:
        return "?"
    return cseq.method if cseq is not None else "?"


def _address_user(address) -> Optional[str]:
    if address is None or address.uri is None:
        return None
    return address.uri.user or None


def _status_class(message) -> str:
    return "request" if isinstance(message, Request) else "%dxx" % (message.status // 100)


class Hub:
    """The admin service's view of one core; subscribe it to :mod:`reticulum.events`."""

    def __init__(self, core: Any, transports: Any = None, version: str = "",
                 clock=time.time, metrics: Optional[Metrics] = None):
        self.core = core
        self.transports = transports
        self.version = version
        self.clock = clock
        self.started = clock()
        self.clients: List[Any] = []
        self.recent: deque = deque(maxlen=RECENT_MESSAGES)
        self.counters: Dict[str, int] = {
            "messages_in": 0, "messages_out": 0, "transactions": 0, "dialogs": 0,
            "calls_confirmed": 0, "registrations_added": 0, "registrations_removed": 0,
            "registrations_expired": 0, "connections_opened": 0, "connections_closed": 0,
            "auth_failures": 0, "auth_lockouts": 0, "events_dropped": 0,
        }
        self.metrics = metrics if metrics is not None else Metrics(self)
        self._user_agents: Dict[tuple, Optional[str]] = {}  # (aor, contact) -> User-Agent
        self._register_ua: Optional[str] = None  # of the REGISTER being handled
        self._message_counters: Dict[tuple, Any] = {}  # labels -> prometheus child
        self._describe = {
            "message": self._message, "registration": self._registration,
            "dialog": self._dialog, "transaction": self._transaction,
            "connection": self._connection, "auth": self._auth,
        }

    # -- events in

    def __call__(self, event: Dict[str, Any]) -> None:
        describe = self._describe.get(event["type"])
        if describe is None:
            return
        out = describe(event)
        if out is None:
            return
        out["type"] = event["type"]
        out["time"] = event["time"]
        if out["type"] == "message":
            self.recent.append(out)
        for client in tuple(self.clients):
            client.offer(out)

    def recent_messages(self) -> List[Dict[str, Any]]:
        """The last messages as events (those kept undescribed are described now)."""
        out = []
        for item in self.recent:
            if isinstance(item, tuple):
                item = self._describe_later(*item)
                if item is None:
                    continue
            out.append(item)
        return out

    def dropped(self, count: int) -> None:
        """A client's queue overflowed by `count` events."""
        self.counters["events_dropped"] += count
        self.metrics.dropped.inc(count)

    def _message(self, event) -> Optional[Dict[str, Any]]:
        message = event["message"]
        flow = event["flow"]
        direction = event["direction"]
        self.counters["messages_" + direction] += 1
        is_request = isinstance(message, Request)
        method = message.method if is_request else _cseq_method(message)
        key = (direction, method, _status_class(message))
        counter = self._message_counters.get(key)
        if counter is None:
            counter = self.metrics.messages.labels(*key)
            if len(self._message_counters) < 1024:  # methods come from the wire
                self._message_counters[key] = counter
        counter.inc()
        if is_request and method == "REGISTER" and direction == "in":
            self._register_ua = message.get("User-Agent")
        raw = message.to_bytes()
        if not self.clients:
            # nobody watches now: keep the bytes, describe them if a client asks for them
            self.recent.append((event["time"], direction, flow, raw))
            return None
        return self._describe_message(message, direction, flow, raw)

    def _describe_later(self, time: float, direction: str, flow, raw: bytes):
        try:
            message = parse(raw, stream=True)
        except Exception:
            return None
        out = self._describe_message(message, direction, flow, raw)
        out["type"] = "message"
        out["time"] = time
        return out

    @staticmethod
    def _describe_message(message, direction: str, flow, raw: bytes) -> Dict[str, Any]:
        is_request = isinstance(message, Request)
        try:
            cseq = message.cseq
            from_, to = message.from_, message.to
            via = message.via
        except ParseError:
            # the answer to a request we could not read: its copied headers may not parse
            cseq = from_ = to = via = None
        method = message.method if is_request else _cseq_method(message)
        out = {
            "direction": direction,
            "transport": flow.transport,
            "local": _hostport(flow.local),
            "remote": _hostport(flow.remote),
            "method": method,
            "status": None if is_request else message.status,
            "reason": None if is_request else message.reason,
            "request_uri": str(message.uri) if is_request else None,
            "from": str(from_.uri) if from_ is not None else None,
            "to": str(to.uri) if to is not None else None,
            "from_user": _address_user(from_),
            "to_user": _address_user(to),
            "call_id": message.call_id,
            "cseq": "%d %s" % (cseq.number, cseq.method) if cseq is not None else None,
            "transaction": via.branch if via is not None else None,
            "dialog": [message.call_id, from_.tag if from_ is not None else None,
                       to.tag if to is not None else None],
            "raw": raw[:RAW_LIMIT].decode("utf-8", "replace"),
            "truncated": len(raw) > RAW_LIMIT,
        }
        return out

    def _registration(self, event) -> Dict[str, Any]:
        action = event["action"]
        binding = event["binding"]
        key = (binding.aor, binding.contact)
        if action in ("added", "refreshed"):
            if action == "added":
                self.counters["registrations_added"] += 1
            if len(self._user_agents) < 100000 or key in self._user_agents:
                self._user_agents[key] = self._register_ua
        else:
            self.counters["registrations_expired" if action == "expired"
                          else "registrations_removed"] += 1
            self._user_agents.pop(key, None)
        self.metrics.registration_changes.labels(action).inc()
        out = self.binding(binding)
        out["action"] = action
        out["user"] = aor_user(binding.aor)
        out["reason"] = event.get("reason")
        return out

    def _dialog(self, event) -> Dict[str, Any]:
        action = event["action"]
        if action == "created":
            self.counters["dialogs"] += 1
        elif action == "confirmed":
            self.counters["calls_confirmed"] += 1
        self.metrics.dialog_changes.labels(action).inc()
        out = self.dialog(event["dialog"])
        out["action"] = action
        return out

    def _transaction(self, event) -> Optional[Dict[str, Any]]:
        action = event["action"]
        if action == "created":
            self.counters["transactions"] += 1
            self.metrics.transactions.labels(event["side"]).inc()
        if not self.clients:
            return None
        out = self.transaction(event["transaction"], event["side"])
        out["action"] = action
        return out

    def _connection(self, event) -> Dict[str, Any]:
        action = event["action"]
        self.counters["connections_" + action] += 1
        flow = event["flow"]
        self.metrics.connection_changes.labels(flow.transport, action).inc()
        out = self.connection(flow)
        out["action"] = action
        return out

    def _auth(self, event) -> Dict[str, Any]:
        action = event["action"]
        self.counters["auth_failures" if action == "failure" else "auth_lockouts"] += 1
        self.metrics.auth.labels(action).inc()
        out = {"action": action, "user": event.get("user"), "address": event.get("address")}
        if action == "lockout":
            out["kind"] = event.get("kind")  # what is refused: a source, or a source for a user
            out["seconds"] = event.get("seconds")
        return out

    # -- views of the core's tables

    def binding(self, binding) -> Dict[str, Any]:
        return {
            "aor": binding.aor,
            "contact": binding.contact,
            "expires": binding.remaining(self.core.clock.seconds()),
            "flow": _flow(binding.flow),
            "user_agent": self._user_agents.get((binding.aor, binding.contact)),
        }

    def registrations(self, user: Optional[str] = None) -> List[Dict[str, Any]]:
        location = self.core.location
        now = self.core.clock.seconds()
        out = []
        for aor in sorted(location.aors()):
            if user is not None and aor_user(aor) != user:
                continue
            for binding in location.lookup(aor, now):
                out.append(self.binding(binding))
        return out

    def dialog(self, dialog) -> Dict[str, Any]:
        now = self.core.clock.seconds()
        if dialog.confirmed_at is None:
            duration = 0.0
        else:
            duration = (dialog.ended_at if dialog.ended_at is not None else now) \
                - dialog.confirmed_at
        return {
            "call_id": dialog.call_id,
            "from": dialog.caller,
            "to": dialog.callee,
            "state": dialog.state,
            "method": dialog.method,
            "created": dialog.created,
            "duration": round(duration, 3),
            "end_reason": dialog.end_reason,
        }

    def calls(self) -> List[Dict[str, Any]]:
        out = []
        for dialog in self.core.dialogs.active():
            view = self.dialog(dialog)
            del view["method"], view["end_reason"]
            out.append(view)
        out.sort(key=lambda d: d["created"])
        return out

    @staticmethod
    def transaction(tx, side: str) -> Dict[str, Any]:
        request = tx.request
        return {"side": side, "method": tx.method, "branch": tx.key if side == "client"
                else (request.via.branch if request is not None and request.via else None),
                "state": tx.state, "call_id": request.call_id if request is not None else None}

    def transactions(self) -> List[Dict[str, Any]]:
        layer = self.core.transactions
        return ([self.transaction(t, "server") for t in layer.servers()]
                + [self.transaction(t, "client") for t in layer.clients()])

    @staticmethod
    def connection(flow) -> Dict[str, Any]:
        return {"transport": flow.transport, "local": _hostport(flow.local),
                "remote": _hostport(flow.remote), "conn": flow.conn}

    def connections(self) -> List[Dict[str, Any]]:
        if self.transports is None:
            return []
        return [self.connection(flow) for flow in self.transports.connections()]

    def users(self) -> List[str]:
        try:
            return sorted(self.core.accounts.names())
        except Exception:
            return []

    def listening(self) -> List[Dict[str, Any]]:
        points = self.transports.listening if self.transports is not None else []
        out = [{"transport": p.transport, "host": p.host, "port": p.port} for p in points]
        listen = getattr(self.core.config, "listen", None)
        for host, port in getattr(listen, "admin", ()):
            out.append({"transport": "admin", "host": host, "port": port})
        return out

    def gauges(self) -> Dict[str, int]:
        """What is live now (counters of the core's tables)."""
        dialogs = self.core.dialogs
        return {
            "registrations": self.core.location.count(),
            "dialogs_early": dialogs.early_count,
            "dialogs_confirmed": dialogs.confirmed_count,
            "transactions_in_flight": len(self.core.transactions),
            "connections": len(self.transports.connections()) if self.transports else 0,
            "admin_clients": len(self.clients),
        }

    def all_counters(self) -> Dict[str, int]:
        out = dict(self.counters)
        out.update(self.gauges())
        return out

    def status(self) -> Dict[str, Any]:
        return {"version": self.version, "uptime": round(self.clock() - self.started, 3),
                "listening": self.listening(), "counters": self.all_counters()}

    def snapshot(self) -> Dict[str, Any]:
        return {
            "type": "snapshot",
            "time": self.clock(),
            "version": self.version,
            "registrations": self.registrations(),
            "dialogs": [self.dialog(d) for d in self.core.dialogs.active()],
            "transactions": self.transactions(),
            "connections": self.connections(),
            "users": self.users(),
            "counters": self.all_counters(),
            "messages": self.recent_messages(),
        }
