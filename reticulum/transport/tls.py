"""SIP over TLS (SIPS): the TCP stream protocol inside pyOpenSSL through Twisted.

Connections are ``StreamProtocol``s (framing, keep-alive pongs, idle
timeout) named ``tls``, wrapped in ``TLSMemoryBIOFactory``.  The
certificate and the option objects come from ``reticulum.certs``.

An outgoing connection whose TLS handshake fails (the peer's certificate is
refused with ``[tls] verify_peers``, or it does not speak TLS) is reported as
a failed flow, like a refused connect: the core answers at once instead of
waiting for a transaction timeout, and nothing is ever sent in clear text.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from reticulum.addresses import Flow
from reticulum.transport.connection import ConnectionTable, PendingConnection, failure_text
from reticulum.transport.tcp import StreamClientFactory, StreamProtocol, StreamServerFactory

__all__ = ["TLSStreamProtocol", "server_factory", "client_factory"]

log = Logger(namespace="reticulum.transport")


@implementer(IHandshakeListener)
class TLSStreamProtocol(StreamProtocol):
    """A ``StreamProtocol`` that knows when its TLS handshake is done."""

    def __init__(self, table: ConnectionTable, transport_name: str = "tls", flow: Optional[Flow] = None) -> None:
        StreamProtocol.__init__(self, table, transport_name, flow)
        self.handshake_done = False

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        flow = self.flow
        cert = None
        try:
            cert = self.transport.getPeerCertificate()
        except Exception:
            pass
        if cert is not None:
            log.info("{flow}: TLS peer certificate {subject}", flow=str(flow), subject=_subject(cert))

    def connectionLost(self, reason: Any = None) -> None:
        failed_handshake = self.outgoing and not self.handshake_done and not self.closed
        StreamProtocol.connectionLost(self, reason)
        flow = self.flow
        if failed_handshake and flow is not None:
            log.warn("{flow}: TLS handshake failed ({why})", flow=str(flow), why=failure_text(reason) or "?")
            self.table.delivery.failed(flow)


def _subject(cert: Any) -> str:
    try:
        subject = cert.get_subject()
        return "CN=%s" % (subject.CN,)
    except Exception:
        return "?"


class _TLSServerFactory(StreamServerFactory):
    def buildProtocol(self, addr: Any) -> StreamProtocol:
        p = TLSStreamProtocol(self.table, self.transport_name)
        p.factory = self
        return p


class _TLSClientFactory(StreamClientFactory):
    def buildProtocol(self, addr: Any) -> StreamProtocol:
        p = TLSStreamProtocol(self.table, self.pending.flow.transport, flow=self.pending.flow)
        p.factory = self
        return p


def server_factory(table: ConnectionTable, contexts: Any) -> TLSMemoryBIOFactory:
    """The factory for a TLS listening socket."""
    inner: Any = _TLSServerFactory(table, "tls")  # Any: mypy cannot see zope's IProtocolFactory
    factory = TLSMemoryBIOFactory(contexts.server_options(), False, inner)
    factory.noisy = False
    return factory


def client_factory(table: ConnectionTable, pending: PendingConnection, contexts: Any, host: str) -> TLSMemoryBIOFactory:
    """The factory for one outgoing TLS connection to ``host``."""
    inner: Any = _TLSClientFactory(table, pending)
    factory = TLSMemoryBIOFactory(contexts.client_creator(host), True, inner)
    factory.noisy = False
    return factory
