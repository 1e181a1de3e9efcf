"""What starts and stops the admin port (see server.py for what it serves).

`start_admin` binds every ``[listen] admin`` address with one `AdminSite` whose `Hub`
observes the core's events; `AdminService.stop` undoes it.
"""
from __future__ import annotations

from typing import Any, List

from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from reticulum import __version__, events
from reticulum.addresses import hostport
from reticulum.admin.hub import Hub
from reticulum.admin.server import AdminSite, load_or_create_token

__all__ = ["AdminService", "start_admin"]

log = Logger(namespace="reticulum.admin")


class AdminService:
    """What `start_admin` started: the hub, the site, the listening ports."""

    def __init__(self, hub: Hub, site: AdminSite, ports: List[Any], token: str):
        self.hub = hub
        self.site = site
        self.ports = ports
        self.token = token

    @property
    def addresses(self) -> List[tuple]:
        return [(p.getHost().host, p.getHost().port) for p in self.ports]

    def stop(self):
        from twisted.internet import defer

        events.unsubscribe(self.hub)
        for client in list(self.hub.clients):
            client.sendClose()
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])


def start_admin(config: Any, core: Any, transports: Any, reactor: Any) -> AdminService:
    """Bind the admin addresses; raises ValueError naming an address that cannot be bound."""
    token = config.admin.token
    created = False
    if token is None:
        token, created = load_or_create_token(config.state_dir)
    hub = Hub(core, transports, version=__version__)
    site = AdminSite(hub, token, reactor=reactor)
    ports = []
    try:
        for host, port in config.listen.admin:
            try:
                ports.append(reactor.listenTCP(port, site, interface=host))
            except CannotListenError as e:
                raise ValueError("cannot listen on admin %s: %s"
                                 % (hostport(host, port), e.socketError)) from None
    except ValueError:
        for p in ports:
            p.stopListening()
        raise
    events.subscribe(hub)
    for host, port in config.listen.admin:
        shown = "127.0.0.1" if host == "0.0.0.0" else ("::1" if host == "::" else host)
        if config.admin.token is None:
            log.info("Admin page: http://{address}/#token={token}",
                     address=hostport(shown, port), token=token)
        else:  # the operator wrote it down already: a journal need not keep a copy
            log.info("Admin page: http://{address}/#token=<[admin] token>",
                     address=hostport(shown, port))
    if created:
        log.info("Admin token made and stored in {path} (set [admin] token to choose one)",
                 path=config.state_dir + "/admin-token")
    return AdminService(hub, site, ports, token)
