"""`GET /metrics`: the admin hub's counters in the Prometheus text format (prometheus-client).

Counters move with events; gauges (registrations, dialogs, transactions in flight,
connections by transport) are read from the core's tables at scrape time. Each hub has a
registry of its own, so several servers in one process (tests) never share numbers.
"""
from __future__ import annotations

from typing import Any, Dict

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

disable_created_metrics()  # the *_created samples only add noise here


class _Live:
    """Gauges read from the core when scraped."""

    def __init__(self, hub: Any):
        self.hub = hub

    def describe(self):
        return []  # nothing to read before the first scrape

    def collect(self):
        hub = self.hub
        gauges = hub.gauges()
        yield GaugeMetricFamily("reticulum_registrations", "Live bindings in the location store",
                                value=gauges["registrations"])
        dialogs = GaugeMetricFamily("reticulum_dialogs", "Dialogs in progress", labels=["state"])
        dialogs.add_metric(["early"], gauges["dialogs_early"])
        dialogs.add_metric(["confirmed"], gauges["dialogs_confirmed"])
        yield dialogs
        yield GaugeMetricFamily("reticulum_transactions_in_flight",
                                "Server and client transactions alive",
                                value=gauges["transactions_in_flight"])
        by_transport: Dict[str, int] = {}
        for connection in hub.connections():
            name = connection["transport"]
            by_transport[name] = by_transport.get(name, 0) + 1
        connections = GaugeMetricFamily("reticulum_connections", "Open connections",
                                        labels=["transport"])
        for name in ("tcp", "tls", "ws", "wss"):
            connections.add_metric([name], by_transport.get(name, 0))
        yield connections
        yield GaugeMetricFamily("reticulum_admin_clients", "Admin WebSocket clients",
                                value=gauges["admin_clients"])
        yield GaugeMetricFamily("reticulum_uptime_seconds", "Seconds since the server started",
                                value=hub.clock() - hub.started)


class Metrics:
    def __init__(self, hub: Any):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "reticulum_messages", "SIP messages received (in) and sent (out)",
            ["direction", "method", "status_class"], registry=registry)
        self.transactions = Counter(
            "reticulum_transactions", "Transactions created", ["side"], registry=registry)
        self.dialog_changes = Counter(
            "reticulum_dialog_events", "Dialogs created, confirmed and terminated", ["action"],
            registry=registry)
        self.registration_changes = Counter(
            "reticulum_registration_events", "Bindings added, refreshed, removed and expired",
            ["action"], registry=registry)
        self.connection_changes = Counter(
            "reticulum_connection_events", "Connections opened and closed",
            ["transport", "action"], registry=registry)
        self.auth = Counter(
            "reticulum_auth_failures", "Failed digest authentications and lockouts",
            ["kind"], registry=registry)
        self.dropped = Counter(
            "reticulum_admin_events_dropped", "Events dropped for slow admin clients",
            registry=registry)
        registry.register(_Live(hub))

    def render(self) -> bytes:
        return generate_latest(self.registry)
